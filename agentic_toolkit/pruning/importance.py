"""Channel importance per group, computed once and guarded against torch-pruning's traps.

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
import torch_pruning as tp

from .groups import ChannelGroup

RANDOM_SEED = 0


def _raw_scorer(method: str):
    if method == "taylor":
        return tp.importance.GroupTaylorImportance(normalizer=None)
    p = 1 if method == "magnitude_l1" else 2
    return tp.importance.GroupMagnitudeImportance(p=p, normalizer=None)


def _lamp(scores: torch.Tensor) -> torch.Tensor:
    """LAMP normalisation: a score over the sum of all scores not smaller than it."""
    sorted_scores, order = scores.sort()
    suffix = sorted_scores.flip(0).cumsum(0).flip(0)
    out = torch.zeros_like(scores)
    out[order] = sorted_scores / suffix.clamp_min(torch.finfo(scores.dtype).tiny)
    return out


def _normalise(scores: torch.Tensor, method: str) -> torch.Tensor:
    if method == "lamp":
        return _lamp(scores)
    mean = scores.mean()
    return scores / mean if mean > 0 else scores


class _TaylorGradients:
    """Accumulate loss gradients over calibration batches on ``model``; afterwards every
    parameter's previous ``.grad`` is restored (the model is otherwise unchanged)."""

    def __init__(self, model: nn.Module, batches, example_inputs):
        self.model = model
        self.batches = batches
        self.example_inputs = example_inputs

    def __enter__(self) -> _TaylorGradients:
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

    Unit scores have one entry per prunable unit (``channels // ch_groups``), head scores
    one per attention head (attention groups only). Returns the scores and the warnings
    issued (also raised as ``UserWarning``).
    """
    notes: list[str] = []
    by_index = {g.index: g for g in groups}
    raw: dict[int, torch.Tensor] = {}
    if method == "random":
        gen = torch.Generator().manual_seed(RANDOM_SEED)
        for i in sorted(tp_groups):
            raw[i] = torch.rand(by_index[i].channels, generator=gen, dtype=torch.float64)
    elif method == "taylor":
        if not calibration:
            notes.append(
                "taylor importance without calibration data: gradients come from the example "
                "inputs with the model's own predictions as labels; pass calibration=[(x, y), ...] "
                "(e.g. agentic_toolkit.calibration_batches()) for meaningful scores"
            )
        with _TaylorGradients(model, calibration, example_inputs):
            scorer = _raw_scorer("taylor")
            for i, grp in tp_groups.items():
                raw[i] = _scores(scorer, grp, by_index[i].channels)
        if all(float(s.abs().sum()) == 0.0 for s in raw.values()):
            notes.append("taylor gradients are all zero; falling back to magnitude_l2 importance")
            raw = {}
            method = "magnitude_l2"
    if not raw:
        scorer = _raw_scorer(method)
        for i, grp in tp_groups.items():
            raw[i] = _scores(scorer, grp, by_index[i].channels)
    # guard: NaN -> 0; an all-zero group falls back to magnitude so that it is ranked, not skipped
    fallback = []
    magnitude = _raw_scorer("magnitude_l2")
    for i, s in raw.items():
        s = torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
        if float(s.sum()) == 0.0 and method not in ("magnitude_l1", "magnitude_l2", "lamp"):
            s = torch.nan_to_num(_scores(magnitude, tp_groups[i], by_index[i].channels), nan=0.0)
            fallback.append(by_index[i].root_name)
        raw[i] = s
    if fallback:
        notes.append(
            f"{method} importance is zero or NaN for {len(fallback)} group(s) "
            f"({', '.join(fallback[:4])}{', ...' if len(fallback) > 4 else ''}); using magnitude_l2 there"
        )
    out = {}
    for i, s in raw.items():
        g = by_index[i]
        units = s.view(g.ch_groups, g.units).mean(0)
        heads = s.view(g.num_heads, -1).mean(1) if g.attention and g.heads_prunable else None
        out[i] = (
            _normalise(units, method),
            _normalise(heads, method) if heads is not None else None,
        )
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return out, notes


def _scores(scorer, group, channels: int) -> torch.Tensor:
    with torch.no_grad():
        s = scorer(group)
    if s is None:  # no parameterised layer in the group: every channel equally important
        return torch.zeros(channels, dtype=torch.float64)
    return s.detach().to(torch.float64).flatten()
