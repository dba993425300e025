"""Channel importance per group, computed once and guarded against torch-pruning's traps.

The criteria themselves are registered callables (:mod:`.criteria`); this module runs one
over every group, with gradients when the criterion needs them, and guards the result.

Traps (torch-pruning 1.6):
- ``GroupTaylorImportance`` reads ``weight.grad`` of every layer in a group and crashes
  when it is ``None`` (e.g. the CIFAR ResNets' frozen ``PadShortcut`` convs). We give such
  parameters zero gradients for the duration of the computation.
- Its default ``normalizer="mean"`` divides by the group mean, which turns an all-zero
  group (e.g. a zero-initialised last BN in a random-init timm ResNet) into NaN, and the
  pruner then silently never prunes that group. We take raw scores, replace NaN by 0 and
  use magnitude for any group whose scores are all zero, with a warning, before
  normalising ourselves.
- Scores are computed once per group; the ratio only changes how many of them are cut.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ToolkitError
from .criteria import Criterion, get_importance
from .groups import ChannelGroup


def _lamp(scores: torch.Tensor) -> torch.Tensor:
    """LAMP normalisation: a score over the sum of all scores not smaller than it."""
    sorted_scores, order = scores.sort()
    suffix = sorted_scores.flip(0).cumsum(0).flip(0)
    out = torch.zeros_like(scores)
    out[order] = sorted_scores / suffix.clamp_min(torch.finfo(scores.dtype).tiny)
    return out


def _normalise(scores: torch.Tensor, normalizer: str | None) -> torch.Tensor:
    if normalizer == "lamp":
        return _lamp(scores)
    if normalizer is None:
        return scores
    mean = scores.mean()
    return scores / mean if mean > 0 else scores


class _CalibrationGradients:
    """Accumulate loss gradients over calibration batches on ``model``; afterwards every
    parameter's previous ``.grad`` is restored (the model is otherwise unchanged)."""

    def __init__(self, model: nn.Module, batches, example_inputs):
        self.model = model
        self.batches = batches
        self.example_inputs = example_inputs

    def __enter__(self) -> _CalibrationGradients:
        self.saved = {id(p): p.grad for p in self.model.parameters()}
        was_training = self.model.training
        for p in self.model.parameters():
            p.grad = None
        self.model.eval()  # batch-norm statistics must not move
        try:
            with torch.enable_grad():
                if self.batches:
                    for x, y in self.batches:
                        F.cross_entropy(self.model(x), y).backward()
                else:
                    with torch.no_grad():
                        y = _call(self.model, self.example_inputs).argmax(-1)
                    F.cross_entropy(_call(self.model, self.example_inputs), y).backward()
        finally:
            self.model.train(was_training)
        for p in self.model.parameters():
            if p.grad is None:  # frozen or unused parameters: zero gradient, not a crash
                p.grad = torch.zeros_like(p)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.model.parameters():
            p.grad = self.saved.get(id(p))


def _call(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def compute_importance(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    tp_groups: dict[int, object],
    method: str,
    example_inputs,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor | None]], list[str]]:
    """Importance of every group in ``tp_groups``: ``{index: (unit scores, head scores)}``.

    ``method`` names a registered criterion (:func:`~.criteria.register_importance`).
    Unit scores have one entry per prunable unit (``channels // ch_groups``), head scores
    one per attention head (attention groups only). Returns the scores and the warnings
    issued (also raised as ``UserWarning``).
    """
    criterion = get_importance(method)
    notes: list[str] = []
    by_index = {g.index: g for g in groups}
    raw: dict[int, torch.Tensor] = {}
    if criterion.needs_gradients:
        if not calibration:
            notes.append(
                f"{method} importance without calibration data: gradients come from the example "
                "inputs with the model's own predictions as labels; pass calibration=[(x, y), ...] "
                "(e.g. agentic_toolkit.calibration_batches()) for meaningful scores"
            )
        with _CalibrationGradients(model, calibration, example_inputs):
            raw = _score_all(criterion, tp_groups, by_index)
        if all(float(s.abs().sum()) == 0.0 for s in raw.values()):
            notes.append(f"{method} gradients are all zero; falling back to magnitude_l2 importance")
            raw = {}
            criterion = get_importance("magnitude_l2")
    if not raw:
        raw = _score_all(criterion, tp_groups, by_index)
    fallback = _guard(raw, criterion, tp_groups, by_index)
    if fallback:
        notes.append(
            f"{criterion.name} importance is zero or NaN for {len(fallback)} group(s) "
            f"({', '.join(fallback[:4])}{', ...' if len(fallback) > 4 else ''}); using magnitude_l2 there"
        )
    out = {}
    for i, s in raw.items():
        g = by_index[i]
        units = s.view(g.ch_groups, g.units).mean(0)
        heads = s.view(g.num_heads, -1).mean(1) if g.attention and g.heads_prunable else None
        out[i] = (
            _normalise(units, criterion.normalizer),
            _normalise(heads, criterion.normalizer) if heads is not None else None,
        )
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return out, notes


def _score_all(criterion: Criterion, tp_groups: dict[int, object], by_index: dict[int, ChannelGroup]):
    return {i: _scores(criterion, grp, by_index[i]) for i, grp in tp_groups.items()}


def _guard(raw: dict[int, torch.Tensor], criterion: Criterion, tp_groups, by_index) -> list[str]:
    """NaN -> 0 and negatives -> 0 in place; a group whose scores are then all zero is scored
    by magnitude_l2 (when the criterion allows the fallback), so it is ranked, not skipped.
    Returns the root names of the groups that fell back."""
    fallback = []
    magnitude = get_importance("magnitude_l2")
    for i, s in raw.items():
        s = torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
        if float(s.sum()) == 0.0 and criterion.fallback:
            s = torch.nan_to_num(_scores(magnitude, tp_groups[i], by_index[i]), nan=0.0)
            fallback.append(by_index[i].root_name)
        raw[i] = s
    return fallback


def _scores(criterion: Criterion, group, info: ChannelGroup) -> torch.Tensor:
    """One float64 score per root channel of ``group`` from ``criterion``."""
    with torch.no_grad():
        s = criterion.fn(group)
    if s is None:  # no parameterised layer in the group: every channel equally important
        return torch.zeros(info.channels, dtype=torch.float64)
    s = torch.as_tensor(s).detach().to(device="cpu", dtype=torch.float64).flatten()
    if s.numel() != info.channels:
        raise ToolkitError(
            f"importance {criterion.name!r} returned {s.numel()} scores for group {info.root_name} "
            f"with {info.channels} channels; a criterion must return one score per root channel"
        )
    return s
