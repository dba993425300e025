"""A cheap proxy score for pruning candidates, on fixed held-out batches.

:func:`proxy_accuracy` builds the scorer the agent loop uses to rank pruned candidates without
fine-tuning them: BatchNorm statistics are re-estimated on a few batches of a copy of the
model (adaptive BN), then top-1 (or the loss) is measured on a few other batches.
:meth:`ProxyAccuracy.replaying` lets many copies of one model share the reference's
forward up to their first change (:mod:`.prefix_replay`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ToolkitError
from .evaluation import Batch, _unwrap, evaluate, model_device, recalibrate_bn
from .prefix_replay import PrefixReplay, ReplayMismatch

_log = logging.getLogger(__name__)


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
    replay: PrefixReplay | None = field(default=None, init=False, repr=False, compare=False)

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
        out = self._copy(model)
        if out is not model:
            self._recalibrate(out)
        return out

    def _copy(self, model: nn.Module) -> nn.Module:
        model = _unwrap(model)
        if not (self.bn_recalibration and any(isinstance(m, _BatchNorm) for m in model.modules())):
            return model
        return copy.deepcopy(model)

    def _recalibrate(self, out: nn.Module) -> None:
        modes = [(m, m.training) for m in out.modules()]
        momenta = [(m, m.momentum) for m in out.modules() if isinstance(m, _BatchNorm)]
        recalibrate_bn(out, self.bn_batches, self.device or model_device(out))
        for m, was_training in modes:
            m.training = was_training
        for m, momentum in momenta:
            m.momentum = momentum

    def scored(self, model: nn.Module) -> tuple[float, nn.Module]:
        """``(score, the model as scored)``: ``self(copy)`` gives the same score exactly."""
        self.calls += 1
        replay = self.replay
        if replay is None or replay.trusted is False:
            return self._scored(model, None)[:2]
        try:
            if not replay.recorded and _unwrap(model) is not replay.reference:
                self._scored(replay.reference, replay)  # e.g. a worker that received the replay without outputs
            score, prepared, mode = self._scored(model, replay)
        except ReplayMismatch as e:
            _log.warning("prefix replay off: %s", e)
            replay.trusted = False
            return self._scored(model, None)[:2]
        if mode == "replay" and replay.trusted is None:  # the first replayed score is checked once
            plain = self._scored(model, None)[:2]
            replay.trusted = plain[0] == score
            if not replay.trusted:
                _log.warning("prefix replay off: a replayed score %r differs from the plain one %r", score, plain[0])
                return plain
        return score, prepared

    def _scored(self, model: nn.Module, replay: PrefixReplay | None) -> tuple[float, nn.Module, str]:
        prepared = self._copy(model)
        images = sum(len(y) for _, y in (*self.bn_batches, *self.eval_batches))
        hooks = replay.attached(prepared, images) if replay is not None else contextlib.nullcontext("plain")
        with hooks as mode:
            if prepared is not _unwrap(model):
                self._recalibrate(prepared)
            out = evaluate(prepared, self.eval_batches, device=self.device or model_device(prepared))
        return (out["top1"] if self.metric == "top1" else -100.0 * out["loss"]), prepared, mode

    @contextlib.contextmanager
    def replaying(self, reference: nn.Module, changes: Sequence[Iterable[str]],
                  max_bytes: int | None = None) -> Iterator[PrefixReplay]:
        """Within it, scoring copies of ``reference`` that differ from it only in modules named
        in one of ``changes`` replays the reference's forward up to their first change (same
        scores, fewer computations; see :mod:`.prefix_replay`). The first score of
        ``reference`` inside records it."""
        first = (self.bn_batches or self.eval_batches)[0][0]
        self.replay = PrefixReplay(reference, changes, first[:1], max_bytes)
        try:
            yield self.replay
        finally:
            self.replay = None

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
