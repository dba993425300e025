"""Fine-tuning (optionally distilled), evaluation, proxies and distributed helpers.

``finetune`` (the training loop, checkpoints, resume), ``evaluation`` (top-1, BatchNorm
re-estimation, the proxy evaluator), ``distributed`` (torchrun/DDP helpers).
"""

from .evaluation import ProxyAccuracy, evaluate, proxy_accuracy
from .finetune import FinetuneResult, finetune

__all__ = ["FinetuneResult", "ProxyAccuracy", "evaluate", "finetune", "proxy_accuracy"]
