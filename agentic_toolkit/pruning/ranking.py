"""Ranking and selection of a :class:`~agentic_toolkit.pruning.plan.PrunePlan`.

Importance scores are computed once per criterion; a strategy's *shape* (importance,
multipliers, ignored layers, ranking mode, ``max_layer_ratio``) turns them into ranking
scopes, cached; a ratio then only decides how many ranked units each scope loses
(:meth:`RankingMixin.select`), and the widths and MACs of that selection follow exactly.

Ranking scopes: with ``isomorphic`` the groups sharing a structure *and* an effective
multiplier are ranked together (torch-pruning's isomorphic pruning); with only
``global_pruning`` all groups sharing an effective multiplier; otherwise each group alone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..errors import ToolkitError
from . import scopes as _scopes
from .criteria import get_importance
from .groups import ChannelGroup
from .importance import compute_importance
from .mac_model import Key
from .strategy import Strategy


@dataclass
class Selection:
    """How many units (and heads) each group loses at one ratio."""

    ratio: float
    removed_units: dict[int, int] = field(default_factory=dict)
    removed_heads: dict[int, int] = field(default_factory=dict)


@dataclass
class _Scope:
    """Channels ranked together (see module docstring)."""

    multiplier: float
    total: int
    group_ids: list[int]
    order: np.ndarray  # local group id of each selectable unit, least important first
    heads: bool = False


class RankingMixin:
    """Importance, ranking scopes and selection (mixed into ``PrunePlan``)."""

    def importance(self, method: str) -> tuple[dict, list[str]]:
        """Scores per prunable group for the registered criterion ``method`` (computed
        once, then cached; again if the criterion was registered anew)."""
        criterion = get_importance(method)
        cached = self._importance.get(method)
        if cached is None or cached[0] is not criterion:
            if getattr(self, "_unpickled", False):
                raise ToolkitError(
                    f"this plan was unpickled (e.g. sent to a Ray worker) without {method!r} importance "
                    f"scores, and an unpickled plan cannot score: call plan.importance({method!r}) "
                    "before sending it"
                )
            tp_groups = {g.index: self._tp_groups[g.index] for g in self.groups if g.prunable}
            scores, notes = compute_importance(
                self.source, self.groups, tp_groups, method, self.example_inputs, self.calibration
            )
            self._importance[method] = (criterion, scores, notes)
        return self._importance[method][1:]

    def __setstate__(self, state: dict) -> None:
        """Unpickled (e.g. in a Ray worker), a plan keeps the importance scores computed before:
        each is tied again to the criterion registered here under the same name and settings
        (torch-pruning's groups cannot score again after unpickling, so a missing score is an
        error: compute the scores first, ``plan.importance(name)``; a user criterion must be
        registered in the worker too)."""
        self.__dict__.update(state)
        self._unpickled = True
        for cache in (state.get("_importance", {}), state.get("_scopes_cache", {})):
            for key, (crit, *rest) in list(cache.items()):
                here = _registered(crit.name)
                if here is not None and _criterion_settings(here) == _criterion_settings(crit):
                    cache[key] = (here, *rest)

    def forget_gradient_scores(self) -> None:
        """Drop the cached scores of criteria that need gradients (new calibration data)."""
        for name, (criterion, *_) in list(self._importance.items()):
            if criterion.needs_gradients:
                del self._importance[name]
        self._scopes_cache.clear()

    def _shape_key(self, s: Strategy) -> tuple:
        return (
            s.importance,
            tuple(sorted(s.multipliers.items())),
            tuple(s.ignored),
            s.isomorphic,
            s.global_pruning,
            s.max_layer_ratio,
        )

    def _ranking(self, strategy: Strategy) -> tuple[list[_Scope], list[_Scope]]:
        key = self._shape_key(strategy)
        cached = self._scopes_cache.get(key)
        if cached is not None and cached[0] is get_importance(strategy.importance):
            return cached[1], cached[2]  # (a criterion registered anew ranks anew)
        self._check_usable()
        self.check_strategy(strategy)
        scores, _ = self.importance(strategy.importance)
        mult = strategy.multipliers
        mlr = strategy.max_layer_ratio
        channel_sets: dict[tuple, list[ChannelGroup]] = defaultdict(list)
        head_sets: dict[tuple, list[ChannelGroup]] = defaultdict(list)
        for g in self._candidates(strategy):
            m = math.prod(mult.get(t, 1.0) for t in g.tags) * mult.get(_scopes.group_scope(g), 1.0)
            if strategy.isomorphic:
                k = (m, g.signature)
            elif strategy.global_pruning:
                k = (m,)
            else:
                k = (m, g.index)
            channel_sets[k].append(g)
            if g.attention and g.heads_prunable and _scopes.HEADS_SCOPE in mult:
                hm = mult[_scopes.HEADS_SCOPE] * math.prod(mult.get(t, 1.0) for t in g.tags if t.startswith("stage"))
                head_sets[(hm,) if strategy.global_pruning else (hm, g.index)].append(g)
        channel_scopes = [self._scope(k[0], gs, scores, mlr, heads=False) for k, gs in channel_sets.items()]
        head_scopes = [self._scope(k[0], gs, scores, mlr, heads=True) for k, gs in head_sets.items()]
        self._scopes_cache[key] = (get_importance(strategy.importance), channel_scopes, head_scopes)
        return channel_scopes, head_scopes

    @staticmethod
    def _scope(multiplier: float, groups: list[ChannelGroup], scores, mlr: float, heads: bool) -> _Scope:
        vals, gids, ranks, caps = [], [], [], []
        for local, g in enumerate(groups):
            s = scores[g.index][1 if heads else 0]
            n = len(s)
            vals.append(s.numpy())
            gids.append(np.full(n, local))
            order = np.argsort(s.numpy(), kind="stable")
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            ranks.append(rank)
            caps.append(max(0, min(int(math.floor(mlr * n + 1e-9)), n - 1)))
        v = np.concatenate(vals)
        gid = np.concatenate(gids)
        rank = np.concatenate(ranks)
        order = np.argsort(v, kind="stable")
        selectable = rank[order] < np.asarray(caps)[gid[order]]
        return _Scope(multiplier, len(v), [g.index for g in groups], gid[order][selectable], heads)

    # ------------------------------------------------------------------ selection
    def select(self, strategy: Strategy, ratio: float | None = None) -> Selection:
        """Per-group cut counts for ``strategy`` at ``ratio`` (default: its pruning_ratio)."""
        ratio = strategy.pruning_ratio if ratio is None else float(ratio)
        channel_scopes, head_scopes = self._ranking(strategy)
        mlr = strategy.max_layer_ratio
        sel = Selection(ratio)
        for scopes, out in ((channel_scopes, sel.removed_units), (head_scopes, sel.removed_heads)):
            for sc in scopes:
                r = min(ratio * sc.multiplier, mlr)
                n = int(math.floor(sc.total * r + 0.5))  # nearest whole number of units
                n = max(0, min(n, len(sc.order)))
                if n == 0:
                    continue
                counts = np.bincount(sc.order[:n], minlength=len(sc.group_ids))
                for local, c in enumerate(counts):
                    if c:
                        out[sc.group_ids[local]] = int(c)
        if strategy.round_to:
            self._round(sel, self._round_multiples(strategy.round_to), mlr)
        return sel

    def _round_multiples(self, rt: int | str) -> int | dict[int, int]:
        """``rt``, or for ``"auto"`` the per-group multiples set by ``fit_to_budget``."""
        if rt != "auto":
            return rt
        multiples = getattr(self, "auto_round_to", None)
        if multiples is None:
            raise ToolkitError('round_to="auto" needs per-layer multiples measured on the device: use '
                               "fit_to_budget(..., device=...) (it measures them), or set plan.auto_round_to = "
                               "build_latency_model(plan, auto_round=True).round_multiples(plan)")
        return multiples

    def _round(self, sel: Selection, multiples: int | dict[int, int], mlr: float) -> None:
        """Round kept units down to a multiple of ``rt`` (an int, or per group index: a dict,
        1 for groups it lacks), up when that would cut more than ``max_layer_ratio`` allows;
        groups smaller than ``rt`` are left as they are."""
        for i, removed in list(sel.removed_units.items()):
            rt = multiples if isinstance(multiples, int) else multiples.get(i, 1)
            n = self.groups[i].units
            if n < rt:
                continue
            kept = n - removed
            low = n - max(0, min(int(math.floor(mlr * n + 1e-9)), n - 1))
            k = kept - kept % rt
            if k < low:
                k += rt
            k = min(max(k, rt), n)
            if k == n:
                sel.removed_units.pop(i)
            else:
                sel.removed_units[i] = n - k

    def removed_channels(self, sel: Selection) -> dict[int, int]:
        """Root channels each group loses."""
        out = {}
        for i in set(sel.removed_units) | set(sel.removed_heads):
            g = self.groups[i]
            kept = (g.units - sel.removed_units.get(i, 0)) * (g.ch_groups - sel.removed_heads.get(i, 0))
            if kept < g.channels:
                out[i] = g.channels - kept
        return out

    def widths(self, sel: Selection) -> dict[Key, int]:
        """Size of every layer dimension a group touches, after ``sel``."""
        w = dict(self.sizes)
        for i, removed in self.removed_channels(sel).items():
            for m in self.groups[i].members:
                key = (m.name, m.is_out)
                if key in w:
                    w[key] -= m.per_channel * removed
        return w

    def predict_macs(self, sel: Selection, counter: str = "macs") -> int:
        """MACs after applying ``sel`` in ``counter``'s convention: exact for ``"macs"``; for
        ``"torch_pruning"`` see :class:`~agentic_toolkit.pruning.mac_model.TpMacModel`."""
        if counter == "macs":
            return self.mac_model.predict(self.widths(sel))
        return self.mac_model_for(counter).predict(self.widths(sel), self.kept_heads(sel))


def _registered(name: str):
    """The criterion registered under ``name`` in this process, or None."""
    try:
        return get_importance(name)
    except ToolkitError:
        return None


def _criterion_settings(c) -> tuple:
    """What must agree for scores of one process's criterion to stand for another's."""
    return (c.name, c.needs_gradients, c.normalizer, c.fallback, c.builtin)
