"""Applying a selection: cutting channels out of a model, and checking that cuts run.

Channels are removed with torch-pruning's own layer pruning functions, from index maps
recorded when the plan was built (:meth:`CuttingMixin._record_groups`), so a copy of the
model needs no dependency graph of its own. :meth:`CuttingMixin._validate` prunes
meta-device copies by one unit per group and marks groups whose cut breaks the forward
pass as unsupported (bisection over the groups). :func:`replay_history` prunes a freshly
built model by a saved pruning history (``load_pruned``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import ToolkitError
from .attention import sync_attention_attributes
from .groups import ChannelGroup, Member
from .mac_model import Key
from .model_utils import copy_sharing_tensors, meta_copy, meta_forward_error, unshare_tensors
from .ranking import Selection
from .strategy import Strategy
from .traversal import index_bound, pruning_group, refresh_index_mapping, release_trace


@dataclass
class _MemberMap:
    """Index map of one group member, recorded from the full group."""

    member: Member
    handler: object
    pruning_dim: int
    idxs: np.ndarray
    root_idxs: np.ndarray
    is_param: bool


class CuttingMixin:
    """Index maps, cutting and validation (mixed into ``PrunePlan``)."""

    def _record_groups(self) -> None:
        """Record the index map of every member of every group (for applying a selection
        to any structurally identical copy of the model)."""
        graph = self.graph
        names = graph._module2name
        for g in self.groups:
            full = self._tp_groups[g.index]
            maps: dict[Key, _MemberMap] = {}
            for item in full or ():  # None: a group torch-pruning could not enumerate
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
        model = self.source if inplace else copy_sharing_tensors(self.source)
        requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self._cut(model, roots)
        if not inplace:
            unshare_tensors(model, self.source)
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
        model = meta_copy(self.source)
        self._cut(model, roots)
        sync_attention_attributes(model, heads, {a.name: a.head_dim for a in self.attention})
        error = meta_forward_error(model, self.example_inputs)
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
        if meta_forward_error(meta_copy(self.source), self.example_inputs):
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


def replay_history(graph: tp.DependencyGraph, history: list) -> None:
    """Prune the graph's model by a pruning history (``[root layer, is output, root
    indices]`` per group), with the guarded traversal of :func:`.traversal.pruning_group`.

    All groups are resolved on the unpruned graph first and every layer dimension is then
    cut once with the union of its indices, as :meth:`CuttingMixin.apply` does (so the
    result is the same), after the trace is released: the original weights are freed as
    they are replaced instead of all staying alive until the end.
    """
    modules = dict(graph.model.named_modules())
    refresh_index_mapping(graph)
    bound = index_bound(graph)
    cuts: dict[tuple[int, bool], tuple[object, set[int]]] = {}
    for name, is_out, idxs in history:
        if name not in modules:
            raise KeyError(f"no layer '{name}' in the model")
        module = modules[name]
        pruner = graph.get_pruner_of_module(module)
        fn = pruner.prune_out_channels if is_out else pruner.prune_in_channels
        for dep, item_idxs in pruning_group(graph, module, fn, list(idxs), bound):
            key = (id(dep.target.module), graph.is_out_channel_pruning_fn(dep.handler))
            cuts.setdefault(key, (dep, set()))[1].update(int(i) for i in item_idxs)
    release_trace(graph)
    with torch.no_grad():
        for dep, idxs in cuts.values():
            target = dep.target.module
            dep.handler.__self__.pruning_dim = dep.target.pruning_dim  # torch-pruning sets this per call
            if isinstance(target, nn.Parameter):
                owner_name, _, attr = graph._param_to_name[target].rpartition(".")
                owner = modules[owner_name] if owner_name else graph.model
                setattr(owner, attr, dep.handler(target, sorted(idxs)))
            else:
                dep.handler(target, sorted(idxs))
