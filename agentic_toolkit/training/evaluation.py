"""Accuracy of a model on a loader, and BatchNorm re-estimation.

:func:`evaluate` gives top-1 / top-5 (percent) and the mean cross-entropy; under
``torchrun`` with a sharded loader it sums over all ranks. :func:`recalibrate_bn` re-estimates
BatchNorm statistics (adaptive BN), the first step of the proxy scorer in :mod:`.proxy`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ToolkitError
from . import distributed as D

Batch = tuple[torch.Tensor, torch.Tensor]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def resolve_amp(amp: bool | str | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device``, or None for full precision.

    ``"auto"`` means bf16 on a CUDA GPU that supports it, fp16 on other CUDA GPUs, and off
    on CPU (CPU autocast is slower than fp32 for most convolution nets). ``"bf16"`` /
    ``"fp16"`` force a dtype; ``False``/``None``/``"off"`` disable it.
    """
    if amp in (False, None, "off", "none", "fp32"):
        return None
    if amp in ("auto", True):
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16", "half"):
        if device.type != "cuda":
            raise ToolkitError("amp='fp16' needs a CUDA device; use amp='bf16' or amp=False on CPU")
        return torch.float16
    raise ToolkitError(f"amp must be 'auto', 'bf16', 'fp16' or False, got {amp!r}")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    """Raise :class:`ToolkitError` unless ``y`` holds integer class indices in ``[0, num_classes)``."""
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim != 1:
        raise ToolkitError(
            f"{where}: labels must be a 1-D tensor of integer class indices, got dtype {y.dtype} "
            f"and shape {tuple(y.shape)}"
        )
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ToolkitError(
            f"{where}: label {bad} is outside the classifier's range 0..{num_classes - 1}. "
            "Check that the data set and the model's num_classes agree."
        )


def _unwrap(model: nn.Module) -> nn.Module:
    # A DistributedDataParallel forward broadcasts buffers (a collective); ranks with
    # unequal numbers of evaluation batches would then hang. Evaluate the bare module.
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put every submodule in eval mode and restore each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    device: str | torch.device | None = None,
    amp: bool | str | None = False,
    channels_last: bool = False,
    max_batches: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of ``model`` on ``loader``.

    Under ``torchrun`` with a sharded loader (see :mod:`agentic_toolkit.training.distributed`) the
    counts are summed over all ranks, so every rank returns the full-set numbers. The
    model's train/eval modes are restored afterwards.

    Args:
        model: a classifier.
        loader: ``(images, labels)`` batches.
        device: where to run; default: the model's.
        amp: autocast as in :func:`~agentic_toolkit.finetune` (default off).
        channels_last: run in NHWC.
        max_batches: stop after this many batches.
        progress: a progress bar.

    Returns:
        ``{"top1", "top5", "loss", "samples"}``.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        >>> out = at.evaluate(at.create_model("cifar_resnet20"), [(images[:4], labels[:4]), (images[4:], labels[4:])])
        >>> sorted(out), out["samples"], 0 <= out["top1"] <= out["top5"] <= 100
        (['loss', 'samples', 'top1', 'top5'], 8, True)
    """
    model = _unwrap(model)
    dev = torch.device(device) if device is not None else model_device(model)
    dtype = resolve_amp(amp, dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum = correct1 = correct5 = count = 0.0
    batches = loader if max_batches is None else itertools.islice(loader, max_batches)
    if progress and D.is_main_process():
        from tqdm.auto import tqdm

        total = len(loader) if hasattr(loader, "__len__") else None
        if max_batches is not None and total is not None:
            total = min(total, max_batches)
        batches = tqdm(batches, total=total, desc="eval", leave=False)
    with eval_mode(model), torch.inference_mode():
        for x, y in batches:
            x = x.to(dev, non_blocking=True, memory_format=fmt)
            y = y.to(dev, non_blocking=True)
            with autocast(dev, dtype):
                logits = model(x)
            logits = logits.float()
            check_labels(y, logits.shape[-1], "evaluate")
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            k = min(5, logits.shape[-1])
            top = logits.topk(k, dim=-1).indices
            hits = top.eq(y[:, None])
            correct1 += float(hits[:, 0].sum())
            correct5 += float(hits.any(dim=-1).sum())
            count += len(y)
    if D.is_sharded(loader):
        loss_sum, correct1, correct5, count = D.all_reduce_sum([loss_sum, correct1, correct5, count], dev)
    if count == 0:
        raise ToolkitError("evaluate: the loader yielded no samples (empty data set or max_batches=0)")
    return {
        "top1": 100.0 * correct1 / count,
        "top5": 100.0 * correct5 / count,
        "loss": loss_sum / count,
        "samples": int(count),
    }


def recalibrate_bn(model: nn.Module, batches: Sequence[Batch], device: torch.device | None = None) -> int:
    """Re-estimate BatchNorm running statistics of ``model`` in place (adaptive BN).

    Statistics are reset and replaced by the exact average over ``batches`` (momentum
    None); everything else stays in eval mode, no weights change. Returns the number of
    BatchNorm layers touched (0: nothing to do). The model is left in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    model.eval()
    if not bns:
        return 0
    dev = device or model_device(model)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = exact mean over the batches
        bn.train()
    with torch.no_grad():
        for x, _ in batches:
            model(x.to(dev))
    model.eval()
    return len(bns)
