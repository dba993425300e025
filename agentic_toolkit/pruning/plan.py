"""A reusable pruning plan: the model's channel groups, importance and MAC model, built once.

Building the dependency graph and scoring channels is the expensive part of pruning; the
ratio only decides how many of the (already ranked) channels each group loses. A
:class:`PrunePlan` therefore does the expensive work once and then

- :meth:`PrunePlan.select` turns a strategy and ratio into per-group cut counts
  (global ranking within each ranking scope, ``max_layer_ratio`` caps, ``round_to``),
- :meth:`PrunePlan.predict_macs` gives the exact MACs of that selection from the widths,
- :meth:`PrunePlan.apply` prunes a copy (or the model itself) to exactly that selection.

The plan never changes the model it was built from: the graph is traced in eval mode
(mode restored), Taylor gradients are restored afterwards, and :meth:`apply` works on a
deep copy unless ``inplace=True``. Channels are removed with torch-pruning's own layer
pruning functions, from index maps recorded when the plan was built, so the copy needs no
dependency graph of its own.

Ranking scopes: with ``isomorphic`` the groups sharing a structure *and* an effective
multiplier are ranked together (torch-pruning's isomorphic pruning); with only
``global_pruning`` all groups sharing an effective multiplier; otherwise each group alone.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import ToolkitError
from . import scopes as _scopes
from .attention import find_attention, num_heads_map, sync_attention_attributes
from .groups import (
    GRAPH_TIME_LIMIT_S,
    ChannelGroup,
    GraphTimeout,
    Member,
    build_graph,
    collect_groups,
    time_limit,
)
from .importance import compute_importance
from .mac_model import Key, MacModel
from .strategy import Strategy, StrategyError


class NothingToPruneError(ToolkitError, ValueError):
    """Every channel group of the model is protected or cannot be pruned."""


@dataclass
class Selection:
    """How many units (and heads) each group loses at one ratio."""

    ratio: float
    removed_units: dict[int, int] = field(default_factory=dict)
    removed_heads: dict[int, int] = field(default_factory=dict)


@dataclass
class _MemberMap:
    """Index map of one group member, recorded from the full group."""

    member: Member
    handler: object
    pruning_dim: int
    idxs: np.ndarray
    root_idxs: np.ndarray
    is_param: bool


@dataclass
class _Scope:
    """Channels ranked together (see module docstring)."""

    multiplier: float
    total: int
    group_ids: list[int]
    order: np.ndarray  # local group id of each selectable unit, least important first
    heads: bool = False


def _as_inputs(example_inputs):
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs
    if isinstance(example_inputs, (tuple, list)) and example_inputs:
        return tuple(example_inputs)
    if isinstance(example_inputs, dict) and example_inputs:
        return example_inputs
    raise ToolkitError(
        f"example_inputs must be a tensor (e.g. torch.randn(1, 3, 224, 224)), a tuple or a dict; "
        f"got {type(example_inputs).__name__}"
    )


def input_shape(example_inputs) -> tuple[int, ...]:
    """Shape of the first tensor in ``example_inputs``."""
    x = example_inputs
    while not isinstance(x, torch.Tensor):
        x = next(iter(x.values())) if isinstance(x, dict) else x[0]
    return tuple(x.shape)


def classifier_names(model: nn.Module) -> list[str]:
    """Module names of the classifier (always protected)."""
    names = {id(m): n for n, m in model.named_modules()}
    get = getattr(model, "get_classifier", None)
    found = []
    if callable(get):
        try:
            c = get()
        except Exception:
            c = None
        if isinstance(c, nn.Module) and id(c) in names and any(True for _ in c.parameters()):
            found.append(names[id(c)])
    if not found:
        for attr in ("fc", "classifier", "head", "linear"):
            c = getattr(model, attr, None)
            if isinstance(c, nn.Module) and any(True for _ in c.parameters()):
                found.append(names[id(c)])
                break
    if not found:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        found = linears[-1:]
    return found


def _copy_sharing_tensors(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` whose parameters and buffers are still the original tensors.
    Pruning replaces most of them anyway; :func:`_unshare_tensors` clones the rest, so no
    tensor is copied twice."""
    memo = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def _unshare_tensors(copy_: nn.Module, source: nn.Module) -> None:
    """Give ``copy_`` its own clone of every parameter/buffer it still shares with ``source``."""
    shared = {id(t) for t in source.parameters()} | {id(t) for t in source.buffers()}
    with torch.no_grad():
        for m in copy_.modules():
            for name, p in list(m._parameters.items()):
                if p is not None and id(p) in shared:
                    m._parameters[name] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
            for name, b in list(m._buffers.items()):
                if b is not None and id(b) in shared:
                    m._buffers[name] = b.clone()


def _meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers live on the meta device
    (no memory, no compute; the source is not touched)."""
    memo = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _meta_forward_error(model: nn.Module, example_inputs) -> str | None:
    """Run ``model`` (on the meta device) on meta copies of the inputs; the first line of
    the error it raises, or None."""

    def meta(x):
        if isinstance(x, torch.Tensor):
            return torch.empty_like(x, device="meta")
        if isinstance(x, (tuple, list)):
            return type(x)(meta(v) for v in x)
        if isinstance(x, dict):
            return {k: meta(v) for k, v in x.items()}
        return x

    inputs = meta(example_inputs)
    try:
        with torch.no_grad():
            if isinstance(inputs, dict):
                model(**inputs)
            elif isinstance(inputs, tuple):
                model(*inputs)
            else:
                model(inputs)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return None


def _under(name: str, roots: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in roots for i in range(1, len(parts) + 1))


class PrunePlan:
    """Channel groups, importance and MAC model of one model (see module docstring).

    Build with :meth:`PrunePlan.build`; reuse it across ratios and strategies of the same
    model (``fit_to_budget`` and ``apply_isomorphic_prune`` accept ``plan=``).
    """

    def __init__(self) -> None:  # use PrunePlan.build
        self.stale = False

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, model: nn.Module, example_inputs, calibration=None) -> PrunePlan:
        """Trace ``model`` once and record its channel groups and base MAC profile."""
        from ..profiling.profile import profile_macs

        if not isinstance(model, nn.Module):
            raise ToolkitError(f"expected a torch.nn.Module, got {type(model).__name__}")
        self = cls()
        self.source = model
        self.example_inputs = _as_inputs(example_inputs)
        self.input_shape = input_shape(self.example_inputs)
        self.calibration = list(calibration) if calibration is not None else None
        self.attention = find_attention(model)
        heads = num_heads_map(model, self.attention)
        modules = dict(model.named_modules())
        attn_of = {modules[a.name].qkv: (a.name, a.heads_prunable) for a in self.attention if not a.reason}
        params = dict(model.named_parameters())
        tables = [params[n] for a in self.attention for n in a.head_tables if n in params]
        try:
            with time_limit(GRAPH_TIME_LIMIT_S):
                self.graph = build_graph(model, self.example_inputs, tables)
                self.groups, full_groups = collect_groups(model, self.graph, heads, attn_of)
        except GraphTimeout:
            raise NothingToPruneError(
                f"torch-pruning did not finish grouping the channels of {type(model).__name__} within "
                f"{GRAPH_TIME_LIMIT_S} s (it loops on some graphs, e.g. ReXNet's sliced residual adds); "
                "this architecture cannot be pruned by agentic_toolkit"
            ) from None
        except Exception as exc:
            raise ToolkitError(
                f"torch-pruning cannot trace {type(model).__name__} on inputs of shape {self.input_shape}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
        self._tp_groups: dict[int, object] = {g.index: f for g, f in zip(self.groups, full_groups, strict=True)}
        self._maps: dict[int, list[_MemberMap]] = {}
        self._record_groups()
        _scopes.tag_groups(model, self.groups)
        self._protect_fixed(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            profile = profile_macs(model, example_inputs=self.example_inputs)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.base_macs = int(profile.total_macs)
        self.base_params = int(profile.params)
        self.sizes = self._sizes()
        prunable_keys = {(m.name, m.is_out) for g in self.groups if g.prunable for m in g.members}
        self.mac_model = MacModel(model, profile.layers, profile.total_macs, self.sizes, prunable_keys)
        self._validate()
        self._importance: dict[str, tuple[dict, list[str]]] = {}
        self._scopes_cache: dict[tuple, tuple[list[_Scope], list[_Scope]]] = {}
        self._ignored_cache: dict[tuple, set[str]] = {}
        return self

    def _record_groups(self) -> None:
        """Record the index map of every member of every group (for applying a selection
        to any structurally identical copy of the model)."""
        graph = self.graph
        names = graph._module2name
        for g in self.groups:
            full = self._tp_groups[g.index]
            maps: dict[Key, _MemberMap] = {}
            for item in full:
                dep, idxs = item.dep, item.idxs
                target = dep.target.module
                is_param = isinstance(target, nn.Parameter)
                name = graph._param_to_name.get(target) if is_param else names.get(target)
                if name is None:
                    continue
                is_out = graph.is_out_channel_pruning_fn(dep.handler)
                member = next(m for m in g.members if m.name == name and m.is_out == is_out)
                key = (name, is_out)
                new_idx = np.asarray(list(idxs), dtype=np.int64)
                new_root = np.asarray(list(item.root_idxs), dtype=np.int64)
                if key in maps:  # same dimension reached twice: merge
                    old = maps[key]
                    keep = ~np.isin(new_idx, old.idxs)
                    old.idxs = np.concatenate([old.idxs, new_idx[keep]])
                    old.root_idxs = np.concatenate([old.root_idxs, new_root[keep]])
                    continue
                maps[key] = _MemberMap(member, dep.handler, dep.target.pruning_dim, new_idx, new_root, is_param)
            self._maps[g.index] = list(maps.values())

    def _protect_fixed(self, model: nn.Module) -> None:
        """Classifier, model outputs and attention we cannot prune are never pruned."""
        classifier = set(classifier_names(model))
        self.classifier = sorted(classifier)
        bad_attn = {a.name: a.reason for a in self.attention if a.reason}
        for g in self.groups:
            if g.unsupported:
                continue
            full = self._tp_groups[g.index]
            outs = [m.name for m in g.members if m.is_out]
            if any(_under(n, classifier) for n in outs):
                g.protected_by = "classifier"
            elif any(d.target.type == tp.ops.OPTYPE.OUTPUT for d, _ in full):
                g.protected_by = "model output"
            else:
                for n in outs:
                    for a, reason in bad_attn.items():
                        if n.startswith(a + "."):
                            g.protected_by = f"attention {a}: {reason}"

    def _sizes(self) -> dict[Key, int]:
        sizes = {}
        modules = dict(self.source.named_modules())
        params = dict(self.source.named_parameters())
        for g in self.groups:
            for mm in self._maps[g.index]:
                name, is_out = mm.member.name, mm.member.is_out
                target = params[name] if mm.is_param else modules[name]
                pruner = self.graph.get_pruner_of_module(target)
                if pruner is None:
                    continue
                size = pruner.get_out_channels(target) if is_out else pruner.get_in_channels(target)
                if size is not None:
                    sizes[(name, is_out)] = int(size)
        return sizes

    # ------------------------------------------------------------------ scopes
    def scope_names(self) -> list[str]:
        """Scope names usable in ``Strategy.multipliers`` for this model."""
        names = {t for g in self.groups if g.prunable for t in g.tags}
        if any(g.prunable and g.attention and g.heads_prunable for g in self.groups):
            names.add(_scopes.HEADS_SCOPE)
        return sorted(names, key=_scopes._natural)

    def describe(self) -> pd.DataFrame:
        """Scope table (see :func:`agentic_toolkit.describe_scopes`)."""
        rows_of_group = {}
        for g in self.groups:
            keys = {(m.name, m.is_out) for m in g.members}
            rows_of_group[g.index] = {r.name for r in self.mac_model.rows if keys.intersection(r.keys)}
        row_macs = {r.name: r.macs for r in self.mac_model.rows}
        df = _scopes.scope_table(self.groups, rows_of_group, row_macs, self.base_macs)
        df.attrs["not_prunable"] = self.not_prunable()
        df.attrs["base_macs"] = self.base_macs
        return df

    def not_prunable(self) -> list[str]:
        """Groups that are kept, and why (classifier, model output, unsupported reshape...)."""
        out = []
        for g in self.groups:
            why = g.unsupported or g.protected_by
            if why:
                out.append(f"{g.root_name} ({g.channels} channels): {why}")
        return out

    # ------------------------------------------------------------------ strategy checks
    def check_strategy(self, strategy: Strategy) -> None:
        """Raise a clear error for multipliers naming unknown scopes or patterns that
        leave nothing to prune."""
        if not isinstance(strategy, Strategy):
            raise ToolkitError(f"strategy must be an agentic_toolkit.Strategy, got {type(strategy).__name__}")
        available = self.scope_names()
        unknown = [k for k in strategy.multipliers if k not in available]
        if unknown:
            raise StrategyError(
                [
                    f"unknown scope '{k}' in multipliers; this model's scopes are: {', '.join(available)}"
                    for k in unknown
                ]
            )
        if not self._candidates(strategy):
            if not any(g.prunable for g in self.groups):
                why = "; ".join(self.not_prunable()[:6])
                raise NothingToPruneError(
                    f"{type(self.source).__name__} has no channel group that can be pruned safely ({why})"
                )
            raise NothingToPruneError(
                f"the ignored patterns {strategy.ignored} protect every prunable layer; "
                "nothing would be pruned. Remove or narrow some patterns."
            )

    def _ignored_names(self, strategy: Strategy) -> set[str]:
        if not strategy.ignored:
            return set()
        key = tuple(strategy.ignored)
        if key in self._ignored_cache:
            return self._ignored_cache[key]
        names = [n for n, _ in self.source.named_modules() if n] + [n for n, _ in self.source.named_parameters()]
        hit = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in strategy.ignored)}
        unmatched = [p for p in strategy.ignored if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            warnings.warn(f"ignored patterns match no module: {unmatched}", stacklevel=4)
        self._ignored_cache[key] = hit
        return hit

    def _candidates(self, strategy: Strategy) -> list[ChannelGroup]:
        ignored = self._ignored_names(strategy)
        return [
            g
            for g in self.groups
            if g.prunable and not any(_under(m.name, ignored) for m in g.members if m.is_out)
        ]

    # ------------------------------------------------------------------ importance + ranking
    def importance(self, method: str) -> tuple[dict, list[str]]:
        """Scores per prunable group for ``method`` (computed once, then cached)."""
        if method not in self._importance:
            tp_groups = {g.index: self._tp_groups[g.index] for g in self.groups if g.prunable}
            scores, notes = compute_importance(
                self.source, self.groups, tp_groups, method, self.example_inputs, self.calibration
            )
            self._importance[method] = (scores, notes)
        return self._importance[method]

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
        if key in self._scopes_cache:
            return self._scopes_cache[key]
        self._check_usable()
        self.check_strategy(strategy)
        scores, _ = self.importance(strategy.importance)
        mult = strategy.multipliers
        mlr = strategy.max_layer_ratio
        channel_sets: dict[tuple, list[ChannelGroup]] = defaultdict(list)
        head_sets: dict[tuple, list[ChannelGroup]] = defaultdict(list)
        for g in self._candidates(strategy):
            m = math.prod(mult.get(t, 1.0) for t in g.tags)
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
        self._scopes_cache[key] = (channel_scopes, head_scopes)
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
            self._round(sel, strategy.round_to, mlr)
        return sel

    def _round(self, sel: Selection, rt: int, mlr: float) -> None:
        """Round kept units down to a multiple of ``rt`` (up when that would cut more than
        ``max_layer_ratio`` allows); groups smaller than ``rt`` are left as they are."""
        for i, removed in list(sel.removed_units.items()):
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

    def predict_macs(self, sel: Selection) -> int:
        """Exact MACs after applying ``sel``."""
        return self.mac_model.predict(self.widths(sel))

    # ------------------------------------------------------------------ applying
    def _check_usable(self) -> None:
        if self.stale:
            raise ToolkitError("this plan's model was pruned in place; build a new plan for it")

    def root_indices(self, sel: Selection, strategy: Strategy) -> dict[int, list[int]]:
        """Root indices each group loses: its least important units (in every channel
        group) plus every unit of its least important heads."""
        scores, _ = self.importance(strategy.importance)
        out = {}
        for i in sorted(set(sel.removed_units) | set(sel.removed_heads)):
            g = self.groups[i]
            unit_s, head_s = scores[i]
            idx: set[int] = set()
            ru = sel.removed_units.get(i, 0)
            if ru:
                units = np.argsort(unit_s.numpy(), kind="stable")[:ru]
                for c in range(g.ch_groups):
                    idx.update(int(u) + c * g.units for u in units)
            rh = sel.removed_heads.get(i, 0)
            if rh:
                for h in np.argsort(head_s.numpy(), kind="stable")[:rh]:
                    idx.update(range(int(h) * g.units, (int(h) + 1) * g.units))
            if idx:
                out[i] = sorted(idx)
        return out

    def apply(self, sel: Selection, strategy: Strategy, inplace: bool = False) -> tuple[nn.Module, list]:
        """Prune a deep copy of the model (or the model itself) to ``sel``.

        Returns the pruned model and its pruning history in torch-pruning's format
        (``[root layer name, is output pruning, root indices]`` per group).
        """
        self._check_usable()
        roots = self.root_indices(sel, strategy)
        model = self.source if inplace else _copy_sharing_tensors(self.source)
        requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self._cut(model, roots)
        if not inplace:
            _unshare_tensors(model, self.source)
        for n, p in model.named_parameters():
            p.requires_grad_(requires_grad.get(n, True))
        kept_heads = {
            self.groups[i].attention: self.groups[i].num_heads - rh for i, rh in sel.removed_heads.items() if rh
        }
        sync_attention_attributes(model, kept_heads, {a.name: a.head_dim for a in self.attention})
        history = [[self.groups[i].root_name, bool(self.groups[i].root_is_out), idx] for i, idx in roots.items()]
        if inplace:
            self.stale = True
        return model, history

    def _cut(self, model: nn.Module, roots: dict[int, list[int]]) -> None:
        """Remove the given root indices of each group from ``model`` (structurally equal to
        the source), one call per layer dimension with the union of its indices."""
        cut: dict[Key, tuple[_MemberMap, set[int]]] = {}
        for i, root_idx in roots.items():
            wanted = np.asarray(root_idx, dtype=np.int64)
            for mm in self._maps[i]:
                key = (mm.member.name, mm.member.is_out)
                sel_idx = mm.idxs[np.isin(mm.root_idxs, wanted)]
                entry = cut.setdefault(key, (mm, set()))
                entry[1].update(int(x) for x in sel_idx)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for (name, _), (mm, idxs) in cut.items():
                if not idxs:
                    continue
                idx_list = sorted(idxs)
                mm.handler.__self__.pruning_dim = mm.pruning_dim  # torch-pruning sets this per call
                if mm.is_param:
                    owner_name, _, attr = name.rpartition(".")
                    owner = modules[owner_name] if owner_name else model
                    setattr(owner, attr, mm.handler(getattr(owner, attr), idx_list))
                else:
                    mm.handler(modules[name], idx_list)

    # ------------------------------------------------------------------ validation
    def _probe_roots(self, groups: list[ChannelGroup]) -> tuple[dict[int, list[int]], dict[str, int]]:
        """Remove one unit (in every channel group) and one head from each group."""
        roots, heads = {}, {}
        for g in groups:
            idx = set()
            if g.units > 1:
                idx.update(c * g.units for c in range(g.ch_groups))
            if g.attention and g.heads_prunable and g.num_heads > 1:
                idx.update(range(g.units, 2 * g.units))  # all of head 1
                heads[g.attention] = g.num_heads - 1
            if idx:
                roots[g.index] = sorted(idx)
        return roots, heads

    def _forward_error(self, groups: list[ChannelGroup]) -> str | None:
        """Prune a meta-device copy by the probe selection of ``groups`` and run it; the
        error message if the forward pass breaks (or the MACs differ from the prediction)."""
        from ..profiling.profile import profile_macs

        roots, heads = self._probe_roots(groups)
        if not roots:
            return None
        model = _meta_copy(self.source)
        self._cut(model, roots)
        sync_attention_attributes(model, heads, {a.name: a.head_dim for a in self.attention})
        error = _meta_forward_error(model, self.example_inputs)
        if error:
            return error
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                profile = profile_macs(model, example_inputs=self.example_inputs)
        except ToolkitError:
            return None
        sel = Selection(0.0)
        for g in groups:
            if g.index in roots:
                if g.units > 1:
                    sel.removed_units[g.index] = 1
                if g.attention and g.heads_prunable and g.num_heads > 1:
                    sel.removed_heads[g.index] = 1
        if profile.total_macs != self.predict_macs(sel):
            self.mac_model.inexact = True
        return None

    def _validate(self) -> None:
        """Mark groups whose pruning breaks the forward pass as unsupported (bisection)."""
        if _meta_forward_error(_meta_copy(self.source), self.example_inputs):
            return  # the model cannot run on the meta device at all: nothing to learn here
        todo = [[g for g in self.groups if g.prunable]]
        while todo:
            part = todo.pop()
            if not part:
                continue
            error = self._forward_error(part)
            if error is None:
                continue
            if len(part) == 1:
                part[0].unsupported = f"pruning it breaks the forward pass ({error})"
                continue
            half = len(part) // 2
            todo += [part[:half], part[half:]]

    def kept_heads(self, sel: Selection) -> dict[str, int]:
        """Head count of every prunable attention module after ``sel``."""
        out = {}
        for g in self.groups:
            if g.attention:
                out[g.attention] = g.num_heads - sel.removed_heads.get(g.index, 0)
        return out
