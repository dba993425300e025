"""Importance criteria, registered by name (``register_importance``, ``list_importances``).

A criterion is a callable ``fn(group) -> scores``. ``group`` is one channel group as
torch-pruning's ``Group``: a list of ``(dep, idxs)`` pairs, one per coupled layer dimension
(``dep.target.module`` the layer or parameter, ``dep.handler`` its pruning function,
``idxs`` the indices of that dimension); ``group[0]`` is the root layer and
``len(group[0].idxs)`` the group's channel count. ``fn`` returns one score per root channel
(a 1-D tensor, higher = more important), or None when the group has nothing to score
(every channel then counts as equally unimportant). torch-pruning's own importance
objects have exactly this signature, so ``register_importance("l1_sum",
tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum"))`` works as it is.

Scores are computed once per plan, under ``torch.no_grad()``. ``needs_gradients=True``
runs the loss backward over the calibration batches first (``.grad`` of every parameter
set, zero for frozen ones; restored afterwards), as first-order Taylor importance does.
``normalizer`` rescales each group's scores before the global ranking compares groups:
``"mean"`` (divide by the group mean), ``"lamp"`` (LAMP) or None. With ``fallback=True``
(the default) a group whose scores are all zero or NaN is ranked by ``magnitude_l2``
instead, with a warning, so that it is never skipped silently.

The built-in criteria (``taylor``, ``magnitude_l1``, ``magnitude_l2``, ``lamp``, ``random``)
are registered below through the same :func:`register_importance`. The magnitude ones use
:class:`ChunkedMagnitudeImportance`: torch-pruning's scores, bit for bit, without whole-weight
temporaries (they set the peak memory of pruning the largest models).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch_pruning as tp
from torch_pruning.pruner import function as tpf

from ..errors import ToolkitError

NORMALIZERS = ("mean", "lamp", None)
RANDOM_SEED = 0
Scorer = Callable[[Any], "torch.Tensor | None"]


class UnknownImportanceError(ToolkitError, ValueError):
    """No importance criterion is registered under this name."""


@dataclass(frozen=True)
class Criterion:
    """A registered importance criterion (see the module docstring)."""

    name: str
    fn: Scorer
    needs_gradients: bool = False
    normalizer: str | None = "mean"
    fallback: bool = True
    description: str = ""
    builtin: bool = False


_REGISTRY: dict[str, Criterion] = {}


def register_importance(
    name: str,
    fn: Scorer,
    *,
    needs_gradients: bool = False,
    normalizer: str | None = "mean",
    fallback: bool = True,
    description: str = "",
    overwrite: bool = False,
) -> Criterion:
    """Register ``fn(group) -> per-channel scores`` as importance criterion ``name``.

    After this, ``Strategy(importance=name)`` is valid and every pruning function ranks
    channels by ``fn``.

    Args:
        name: the criterion's name. A user criterion registered again under the same name
            replaces the old one.
        fn: ``fn(group)`` returns one score per root channel (higher = more important), or
            None (see the module docstring for ``group``).
        needs_gradients: loss gradients over the calibration batches are in ``.grad`` while
            ``fn`` runs (pass ``calibration=`` to the pruning call).
        normalizer: ``"mean"``, ``"lamp"`` or None (see the module docstring).
        fallback: rank a group whose scores are all zero or NaN by ``magnitude_l2``.
        description: one line for :func:`describe_importances`; default: ``fn``'s docstring.
        overwrite: allow replacing a built-in criterion.

    Returns:
        The registered :class:`Criterion`.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> def first_channels_first(group):
        ...     "Keeps the lowest channel indices (a toy criterion)."
        ...     return torch.arange(len(group[0].idxs), 0, -1, dtype=torch.float64)
        >>> _ = at.register_importance("first_channels_first", first_channels_first)
        >>> res = at.apply_isomorphic_prune(at.create_model("cifar_resnet20"),
        ...     at.Strategy(importance="first_channels_first", pruning_ratio=0.5), torch.randn(1, 3, 32, 32))
        >>> res.model.conv1.out_channels
        8
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ToolkitError(f"an importance name must be a non-empty string without outer spaces; got {name!r}")
    if not callable(fn):
        raise ToolkitError(f"importance {name!r}: fn must be callable as fn(group) -> scores; got {type(fn).__name__}")
    if normalizer not in NORMALIZERS:
        raise ToolkitError(f"importance {name!r}: normalizer must be one of {NORMALIZERS}; got {normalizer!r}")
    old = _REGISTRY.get(name)
    if old is not None and old.builtin and not overwrite:
        raise ToolkitError(f"{name!r} is a built-in importance criterion; pass overwrite=True to replace it")
    doc = description or (getattr(fn, "__doc__", None) or "").strip().split("\n")[0]
    crit = Criterion(name, fn, bool(needs_gradients), normalizer, bool(fallback), doc)
    _REGISTRY[name] = crit
    return crit


def list_importances() -> list[str]:
    """Names of the registered importance criteria (built-in ones first).

    Returns:
        The names ``Strategy(importance=...)`` accepts.

    Example:
        >>> import agentic_toolkit as at
        >>> at.list_importances()[:5]
        ['taylor', 'magnitude_l1', 'magnitude_l2', 'lamp', 'random']
    """
    return list(_REGISTRY)


def get_importance(name: str) -> Criterion:
    """The registered criterion ``name``; a clear error listing the registered names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownImportanceError(
            f"unknown importance {name!r}; registered: {', '.join(_REGISTRY)} "
            "(add your own with agentic_toolkit.register_importance)"
        ) from None


def describe_importances():
    """The registered criteria as a table.

    Returns:
        A DataFrame with ``name``, ``needs_gradients``, ``normalizer``, ``builtin`` and
        ``description``.

    Example:
        >>> import agentic_toolkit as at
        >>> table = at.describe_importances().set_index("name")
        >>> table.loc["lamp", "normalizer"]
        'lamp'
    """
    import pandas as pd

    return pd.DataFrame(
        [
            {"name": c.name, "needs_gradients": c.needs_gradients, "normalizer": c.normalizer,
             "builtin": c.builtin, "description": c.description}
            for c in _REGISTRY.values()
        ]
    )


# ----------------------------------------------------------------------------- built-ins


MAGNITUDE_CHUNK_ELEMENTS = 1 << 22  # weight elements per slice of ChunkedMagnitudeImportance (16 MB fp32)
# Rows per slice are a multiple of this: where the rows are strided columns of the weight
# (Linear and 1x1-conv inputs), torch's CPU sum reduces 4 SIMD vectors (<= 64 floats) of
# them at a time and the rest in another order, so slices must align to keep every sum.
_ROW_ALIGN = 64


def _row_norms(rows: Callable[[slice], torch.Tensor], n: int, width: int, p: int) -> torch.Tensor:
    """``rows(s).abs().pow(p).sum(1)`` of rows ``0..n`` of ``width`` elements each, a
    bounded, aligned slice of rows at a time."""
    step = max(_ROW_ALIGN, MAGNITUDE_CHUNK_ELEMENTS // max(width, 1) // _ROW_ALIGN * _ROW_ALIGN)
    parts = [rows(slice(i, i + step)).abs().pow(p).sum(1) for i in range(0, n, step)]
    return torch.cat(parts) if parts else torch.zeros(0)


class ChunkedMagnitudeImportance(tp.importance.GroupMagnitudeImportance):
    """torch-pruning's ``GroupMagnitudeImportance`` with each layer's per-channel norms
    computed over bounded slices of its weight.

    torch-pruning's ``__call__`` materialises ``w[idxs]`` (or ``w.transpose(0, 1)``),
    ``.abs()`` and ``.pow(p)`` of whole weight tensors: three transient copies of the
    largest weight of a group (~650 MB for RegNetY-128GF's 7392x7392 convolutions), which
    set the peak memory of pruning large models. Every row is reduced exactly as there (same
    row contents and layout), so the scores are bit-identical; the reduction and
    normalisation are torch-pruning's own.
    """

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        """One score per root channel of ``group`` (None when no layer has weights to score)."""
        group_imp, group_idxs = [], []
        for i, (dep, idxs) in enumerate(group):
            if isinstance(dep.layer, tuple(self.target_types)):
                for imp in self._layer_scores(dep.layer, dep.pruning_fn, list(idxs)):
                    group_imp.append(imp)
                    group_idxs.append(group[i].root_idxs)
        if not group_imp:
            return None
        return self._normalize(self._reduce(group_imp, group_idxs), self.normalizer)

    def _layer_scores(self, layer, prune_fn, idxs: list[int]) -> list[torch.Tensor]:
        """The scores torch-pruning's ``__call__`` appends for one group member."""
        out: list[torch.Tensor] = []
        if prune_fn in (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels):
            w = layer.weight.data
            w = w.transpose(1, 0) if getattr(layer, "transposed", False) else w
            index = torch.as_tensor(idxs, dtype=torch.long)
            out.append(_row_norms(lambda s: w[index[s]].flatten(1), len(idxs), w[0].numel(), self.p))
        elif prune_fn in (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels):
            out.append(self._in_channel_scores(layer, prune_fn, idxs))
            return out  # torch-pruning scores no bias of the consumer
        elif prune_fn in (tpf.prune_batchnorm_out_channels, tpf.prune_layernorm_out_channels):
            if not (getattr(layer, "affine", False) or getattr(layer, "elementwise_affine", False)):
                return out
            out.append(layer.weight.data[idxs].abs().pow(self.p))
        else:
            return out
        if self.bias and layer.bias is not None:
            out.append(layer.bias.data[idxs].abs().pow(self.p))
        return out

    def _in_channel_scores(self, layer, prune_fn, idxs: list[int]) -> torch.Tensor:
        """Norms of a consumer's input channels ``idxs`` (torch-pruning's input branch)."""
        w = layer.weight.data
        if getattr(layer, "transposed", False):
            imp = _row_norms(lambda s: w[s].flatten(1), w.shape[0], w[0].numel(), self.p)
        else:
            imp = _row_norms(lambda s: w[:, s].transpose(0, 1).flatten(1), w.shape[1], w[:, 0].numel(), self.p)
        if prune_fn == tpf.prune_conv_in_channels and layer.groups not in (1, layer.in_channels):
            imp = imp.repeat(layer.groups)  # grouped convolution: one weight slice per group
        return imp[idxs]


def magnitude_l1(group) -> torch.Tensor | None:
    """L1 norm of each channel's weights, averaged over the group's layers (Li et al. 2017)."""
    return ChunkedMagnitudeImportance(p=1, normalizer=None)(group)


def magnitude_l2(group) -> torch.Tensor | None:
    """L2 norm of each channel's weights, averaged over the group's layers."""
    return ChunkedMagnitudeImportance(p=2, normalizer=None)(group)


def taylor(group) -> torch.Tensor | None:
    """First-order Taylor importance |weight x gradient| on calibration batches (Molchanov et al. 2019)."""
    return tp.importance.GroupTaylorImportance(normalizer=None)(group)


def random_scores(group) -> torch.Tensor:
    """Uniform random scores, seeded by the root layer's name (reproducible baseline)."""
    root = group[0].dep.target.name.split(" ")[0]
    gen = torch.Generator().manual_seed(RANDOM_SEED * 1_000_003 + zlib.crc32(root.encode()))
    return torch.rand(len(group[0].idxs), generator=gen, dtype=torch.float64)


register_importance("taylor", taylor, needs_gradients=True)
register_importance("magnitude_l1", magnitude_l1, fallback=False)
register_importance("magnitude_l2", magnitude_l2, fallback=False)
register_importance(
    "lamp", magnitude_l2, normalizer="lamp", fallback=False,
    description="L2 magnitude with LAMP normalisation: each score over the sum of all scores not smaller (Lee et al. 2021)",
)
register_importance("random", random_scores)
BUILTIN_IMPORTANCES = tuple(_REGISTRY)
for _name in BUILTIN_IMPORTANCES:
    _REGISTRY[_name] = replace(_REGISTRY[_name], builtin=True)
