"""Fine-tuning (optionally distilled), evaluation, proxies and distributed helpers.

``recipe`` (:class:`Recipe`: the hyper-parameters, presets), ``finetune`` (the training loop),
``checkpoints`` (per-epoch files, resume), ``losses`` (CE + distillation), ``optim``
(optimizer, schedule), ``result`` (:class:`FinetuneResult`), ``evaluation`` (top-1, BatchNorm
re-estimation), ``proxy`` (the proxy evaluator), ``prefix_replay`` (probes that share a prefix), ``distributed`` (torchrun/DDP helpers).
"""

from .checkpoints import list_checkpoints
from .evaluation import evaluate
from .finetune import NonFiniteLossError, finetune
from .proxy import DEFAULT_PROXY, ProxyAccuracy, default_evaluator, proxy_accuracy
from .recipe import PRESETS, Recipe
from .result import FinetuneResult

__all__ = [
    "PRESETS",
    "FinetuneResult",
    "NonFiniteLossError",
    "ProxyAccuracy",
    "Recipe",
    "evaluate",
    "finetune",
    "list_checkpoints",
    "proxy_accuracy",
    "default_evaluator",
    "DEFAULT_PROXY",
]
