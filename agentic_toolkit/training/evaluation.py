"""Accuracy of a model on a loader, and a cheap proxy score for pruning candidates.

:func:`evaluate` gives top-1 / top-5 (percent) and the mean cross-entropy; under
``torchrun`` with a sharded loader it sums over all ranks. :func:`proxy_accuracy` builds a
scorer the agent loop uses to rank pruned candidates without fine-tuning them: BatchNorm
statistics are re-estimated on a few batches of a copy of the model (adaptive BN), then
top-1 is measured on a few other batches.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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


def batches_sha256(batches: Iterable) -> str:
    """sha256 of a list of batches: every tensor's dtype, shape and bytes, in order.

    A batch may be a tensor or a (nested) tuple/list of tensors; other items count by their
    ``repr``. Two lists of batches hash the same iff they hold the same data.
    """
    digest = hashlib.sha256()

    def feed(item) -> None:
        if isinstance(item, torch.Tensor):
            t = item.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(item, (tuple, list)):
            digest.update(f"[{len(item)}".encode())
            for x in item:
                feed(x)
            digest.update(b"]")
        else:
            digest.update(f"R{item!r}".encode())

    for batch in batches:
        feed(batch)
    return digest.hexdigest()


@dataclass
class ProxyAccuracy:
    """Callable scorer: ``scorer(model) -> top-1 percent`` on fixed held-out batches.

    The model passed in is never modified: with ``bn_recalibration`` a deep copy gets its
    BatchNorm statistics re-estimated on ``bn_batches`` first. :meth:`scored` returns that
    copy with the score, so ``scorer(copy) == score`` exactly (re-estimating statistics that
    were estimated on the same batches gives the same statistics). :meth:`fingerprint`
    identifies the batches, :meth:`settings` the rest of the configuration. ``metric="neg_loss"``
    scores minus 100 times the mean cross-entropy instead of top-1: a continuous score that
    ranks small damage (one pruned group) on few images far less noisily than top-1.
    """

    bn_batches: list[Batch]
    eval_batches: list[Batch]
    bn_recalibration: bool = True
    device: torch.device | None = None
    metric: str = "top1"
    calls: int = field(default=0, init=False)

    def __post_init__(self):
        if self.metric not in ("top1", "neg_loss"):
            raise ToolkitError(f"metric must be 'top1' or 'neg_loss', got {self.metric!r}")

    @property
    def eval_images(self) -> int:
        """Number of images the top-1 is measured on."""
        return sum(len(y) for _, y in self.eval_batches)

    def __call__(self, model: nn.Module) -> float:
        return self.scored(model)[0]

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model as it is scored: a copy with re-estimated BatchNorm statistics, or ``model``.

        The copy keeps each module's train/eval mode and each BatchNorm layer's momentum of
        ``model`` (only the running statistics change), so it fine-tunes like the original.
        """
        model = _unwrap(model)
        if not (self.bn_recalibration and any(isinstance(m, _BatchNorm) for m in model.modules())):
            return model
        out = copy.deepcopy(model)
        modes = [(m, m.training) for m in out.modules()]
        momenta = [(m, m.momentum) for m in out.modules() if isinstance(m, _BatchNorm)]
        recalibrate_bn(out, self.bn_batches, self.device or model_device(out))
        for m, was_training in modes:
            m.training = was_training
        for m, momentum in momenta:
            m.momentum = momentum
        return out

    def scored(self, model: nn.Module) -> tuple[float, nn.Module]:
        """``(score, the model as scored)``: ``self(copy)`` gives the same score exactly."""
        self.calls += 1
        prepared = self.prepare(model)
        dev = self.device or model_device(prepared)
        out = evaluate(prepared, self.eval_batches, device=dev)
        return (out["top1"] if self.metric == "top1" else -100.0 * out["loss"]), prepared

    def subset(self, eval_images: int | None = None, bn_images: int | None = None,
               metric: str | None = None) -> ProxyAccuracy:
        """A cheaper scorer on the first batches of the same held-out data: at least
        ``bn_images`` BatchNorm images and ``eval_images`` scored images (whole batches; all
        of them when None or fewer are held), scoring ``metric`` (default: this one's). Used
        for probes that only need to rank, e.g. a sensitivity table."""
        return ProxyAccuracy(_first_images(self.bn_batches, bn_images), _first_images(self.eval_batches, eval_images),
                             self.bn_recalibration, self.device, metric or self.metric)

    def settings(self) -> dict:
        """The configuration that decides scores, besides the data (for a search history)."""
        return {
            "bn_recalibration": self.bn_recalibration,
            "bn_batches": len(self.bn_batches),
            "eval_batches": len(self.eval_batches),
            "eval_images": self.eval_images,
        } | ({} if self.metric == "top1" else {"metric": self.metric})

    def fingerprint(self) -> str:
        """sha256 of the BatchNorm and scoring batches (see :func:`batches_sha256`)."""
        return batches_sha256([("bn", *self.bn_batches), ("eval", *self.eval_batches)])


def _first_images(batches: list[Batch], images: int | None) -> list[Batch]:
    """The shortest prefix of ``batches`` holding at least ``images`` images (all when fewer)."""
    out, n = [], 0
    for b in batches:
        if images is not None and n >= images:
            break
        out.append(b)
        n += len(b[1])
    return out


def proxy_accuracy(
    loader: Iterable[Batch],
    batches: int = 8,
    bn_recalibration: bool = True,
    bn_batches: int | None = None,
    device: str | torch.device | None = None,
) -> ProxyAccuracy:
    """A scorer ``f(model) -> top-1 %`` that ranks pruning candidates without fine-tuning.

    BatchNorm statistics are re-estimated on a copy of each model (pruning shifts them, and
    the stale statistics otherwise dominate the score). Batches are drawn once here, so every
    candidate sees exactly the same images.

    Args:
        loader: ``(images, labels)`` batches without augmentation, e.g.
            ``cifar10("val")`` or a list from :func:`agentic_toolkit.calibration_batches`.
        batches: batches to score on (after the BatchNorm batches).
        bn_recalibration: re-estimate BatchNorm statistics first.
        bn_batches: the first batches, for BatchNorm; default: ``batches``.
        device: where to score; default: each model's.

    Returns:
        A ``ProxyAccuracy``: call it on a model for its top-1 percent.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(4)]
        >>> score = at.proxy_accuracy(data, batches=2)  # BN on the first 2 batches, top-1 on the next 2
        >>> model = at.create_model("cifar_resnet20")
        >>> score.eval_images, 0 <= score(model) <= 100, score(model) == score(model)
        (8, True, True)
    """
    if batches < 1:
        raise ToolkitError(f"batches must be >= 1, got {batches}")
    n_bn = (batches if bn_batches is None else bn_batches) if bn_recalibration else 0
    if n_bn < 0 or (bn_recalibration and n_bn == 0):
        raise ToolkitError("bn_batches must be >= 1 when bn_recalibration is on")
    drawn = list(itertools.islice(iter(loader), n_bn + batches))
    if len(drawn) < n_bn + batches:
        raise ToolkitError(
            f"proxy_accuracy needs {n_bn} batch(es) for BN re-estimation plus {batches} to score, "
            f"but the loader yielded only {len(drawn)}. Pass fewer batches or a larger loader."
        )
    for x, y in drawn:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ToolkitError("proxy_accuracy: the loader must yield (images, labels) tensor pairs")
    return ProxyAccuracy(
        bn_batches=drawn[:n_bn],
        eval_batches=drawn[n_bn:],
        bn_recalibration=bn_recalibration,
        device=torch.device(device) if device is not None else None,
    )


#: The toolkit's default search evaluator: the cheapest proxy that ranks candidates like
#: fine-tuning does (the proxy fidelity study in ``docs/results.md``), i.e. BatchNorm
#: re-estimated on ``bn_images`` and top-1 on ``eval_images`` held-out images. To tell close
#: candidates apart, score more images (``eval_images=2048``) or re-rank the best few
#: (:func:`agentic_toolkit.agents.rerank.rerank_candidates`; see ``docs/agent_loop.md``).
DEFAULT_PROXY = {"name": "bn_top1_512", "eval_images": 512, "bn_images": 512}


def default_evaluator(
    split: str = "val",
    eval_images: int = DEFAULT_PROXY["eval_images"],
    bn_images: int = DEFAULT_PROXY["bn_images"],
    seed: int = 0,
    batch_size: int = 128,
) -> ProxyAccuracy:
    """The default proxy (:data:`DEFAULT_PROXY`) on held-out CIFAR-10 ``val`` images.

    Args:
        split: ``"val"`` (or ``"train"``); search candidates are never scored on the test
            split, so ``"test"`` is an error.
        eval_images: images scored.
        bn_images: images that re-estimate BatchNorm statistics first.
        seed: shuffles the split (it is stored sorted by class).
        batch_size: images per batch.

    Returns:
        A ``ProxyAccuracy`` (see :func:`proxy_accuracy`).

    Example:
        >>> import agentic_toolkit as at
        >>> # reads the offline CIFAR-10 archive (not part of the package):
        >>> score = at.default_evaluator(eval_images=64, bn_images=64)  # doctest: +SKIP
        >>> score.eval_images  # doctest: +SKIP
        64
        >>> at.default_evaluator(split="test")
        Traceback (most recent call last):
        ...
        agentic_toolkit.errors.ToolkitError: search candidates are scored on held-out data, never on the test split; use 'val'
    """
    from ..data import cifar10

    if split == "test":
        raise ToolkitError("search candidates are scored on held-out data, never on the test split; use 'val'")
    if eval_images < 1 or bn_images < 1 or batch_size < 1:
        raise ToolkitError("eval_images, bn_images and batch_size must be >= 1")
    b = min(batch_size, eval_images, bn_images)
    loader = cifar10(split, batch_size=b, shuffle=True, seed=seed)
    return proxy_accuracy(loader, batches=max(1, eval_images // b), bn_batches=max(1, bn_images // b))
