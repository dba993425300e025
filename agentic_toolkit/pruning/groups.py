"""Channel groups of a model, from torch-pruning's dependency graph, checked for safety.

A *channel group* is a set of coupled dimensions (a conv's output channels, the BN after
it, the next conv's input channels, ...) that must be pruned together. We enumerate them
once per model and record, for every layer dimension a group touches, how many of its
elements each root channel stands for (1 for plain coupling, 3 for a fused qkv, H*W after
a flatten). That is what lets the budget solver turn "remove k channels of this group"
into exact layer widths without touching the model.

Traps handled here (torch-pruning 1.6):
- ``build_dependency`` switches the model to eval mode and asserts that grad is enabled;
  we restore the mode and trace under ``torch.enable_grad()``.
- Some reshapes (e.g. Swin's patch merging, which folds a 2x2 neighbourhood into channels)
  are mapped to the wrong number of indices. Such a group would produce a broken model, so
  every group is checked: the indices that all groups assign to a layer dimension must
  cover it exactly. Groups failing the check are reported and never pruned.
- The group walk itself is torch-pruning's, guarded (:mod:`.traversal`): a group whose
  index lists grow without bound (torchvision Swin/MaxViT) or whose mapping fails
  (ShuffleNetV2, torchvision Swin-S/B) is reported and never pruned; mappings are
  refreshed once, not once per group.
- Grouping may take long (or forever): :func:`.model_utils.time_limit` bounds it in CPU
  seconds of the calling thread, checked cooperatively (:func:`check_time`), so it works
  in worker threads and on a busy machine; :func:`.model_utils.graph_time_limit` scales
  the allowance with the model's size.
- The trace's saved activations are never stored (shape placeholders), and the trace is
  released once grouped (:func:`.traversal.release_trace`).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn as nn
import torch_pruning as tp
from torch.autograd.graph import saved_tensors_hooks

from .model_utils import GraphTimeout, check_time, graph_time_limit, time_limit
from .traversal import (
    GroupDiverged,
    guarded_index_mapping,
    index_bound,
    pruning_group,
    refresh_index_mapping,
    release_trace,
)

__all__ = ["GraphTimeout", "check_time", "graph_time_limit", "time_limit"]  # re-exported (plan.py)

ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One layer dimension in a group: ``count`` of its elements go with each root channel."""

    name: str
    is_out: bool
    per_channel: int  # elements of this dimension removed per removed root channel


@dataclass
class ChannelGroup:
    """Coupled channels pruned as one unit (see module docstring)."""

    index: int
    root_name: str
    root_is_out: bool
    channels: int  # size of the root index space
    ch_groups: int  # channel groups (heads, grouped convs): pruning repeats in each
    members: list[Member]
    signature: str  # structural tag for isomorphic ranking
    attention: str | None = None  # name of the attention module for qkv groups
    num_heads: int = 0
    heads_prunable: bool = False
    tags: tuple[str, ...] = ()
    kind: str = ""
    protected_by: str = ""  # non-empty: never pruned (classifier, ignored pattern, ...)
    unsupported: str = ""  # non-empty: torch-pruning cannot prune it safely
    importance: torch.Tensor | None = field(default=None, repr=False)  # per unit (channels // ch_groups)
    head_importance: torch.Tensor | None = field(default=None, repr=False)

    @property
    def units(self) -> int:
        """Prunable units: channels per channel group (e.g. head dims of one head)."""
        return self.channels // self.ch_groups

    @property
    def prunable(self) -> bool:
        return not self.protected_by and not self.unsupported


def _placeholder(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype


def _unpack(saved: tuple) -> torch.Tensor:
    return torch.empty(saved[0], dtype=saved[1], device="meta")


def build_graph(model: nn.Module, example_inputs, ignored_params: list[nn.Parameter] | None = None) -> tp.DependencyGraph:
    """torch-pruning's dependency graph, built without changing the model.

    ``ignored_params`` are parameters no group may prune (e.g. per-head tables).
    Traps: tracing calls ``model(*example_inputs)`` first, which splits a bare tensor along
    the batch (a batch-1 image becomes an unbatched one), so a tensor is passed as a
    1-tuple; a failed trace leaves its forward hooks on the model, so we remove them. The
    graph is traced through autograd, so frozen parameters (``requires_grad=False``, e.g.
    a teacher after distillation or a frozen backbone) would drop out of it: they are
    unfrozen for the trace and frozen again afterwards. The graph keeps the trace's
    ``grad_fn`` chain (torch-pruning reads sizes and dims from it) but never runs backward,
    so the activations autograd would save for it are replaced by shape placeholders
    (otherwise they stay in memory as long as the plan; sizes in ``docs/pruning.md``).
    """
    was_training = model.training
    hooks_before = {id(m): set(m._forward_hooks) for m in model.modules()}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    try:
        for p in frozen:
            p.requires_grad_(True)
        with (
            torch.enable_grad(),
            warnings.catch_warnings(),
            saved_tensors_hooks(_placeholder, _unpack),
            guarded_index_mapping(),  # build_dependency updates the index mappings
        ):
            warnings.simplefilter("ignore")  # unwrapped-parameter notices: expected for ViT tokens
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, verbose=False, ignored_params=list(ignored_params or [])
            )
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
        for m in model.modules():
            for key in set(m._forward_hooks) - hooks_before.get(id(m), set()):
                del m._forward_hooks[key]


def _dim_size(graph: tp.DependencyGraph, node, is_out: bool) -> int | None:
    """Size of the dimension a node prunes. Pruners of parameters and norms read a shared
    ``pruning_dim`` that torch-pruning sets per call: set it to this node's first (else a
    ``pos_embed`` read after a 1-d bias reports its batch dimension)."""
    pruner = graph.get_pruner_of_module(node.module)
    if pruner is None:
        return None
    pruner.pruning_dim = node.pruning_dim
    return pruner.get_out_channels(node.module) if is_out else pruner.get_in_channels(node.module)


def _channel_groups(graph: tp.DependencyGraph, group, num_heads: dict[nn.Module, int]) -> int:
    """Like torch-pruning's ``_get_channel_groups``: the largest grouping of any member."""
    found = [1]
    for dep, _ in group:
        m = dep.target.module
        if not isinstance(m, nn.Module):
            continue
        is_out = graph.is_out_channel_pruning_fn(dep.handler)
        if is_out and m in num_heads:
            found.append(num_heads[m])
            continue
        if isinstance(m, ROOT_TYPES[:3]) and m.groups == m.out_channels:
            continue  # depthwise convs follow their input channels one to one
        pruner = graph.get_pruner_of_module(m)
        if pruner is None:
            continue
        found.append(pruner.get_out_channel_groups(m) if is_out else pruner.get_in_channel_groups(m))
    return max(found)


def _signature(graph: tp.DependencyGraph, group) -> str:
    """torch-pruning's isomorphic tag: types and directions along the group."""
    parts = []
    for dep, _ in group:
        d = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
        parts.append(f"{type(dep.source.module).__name__}_{d}_{type(dep.target.module).__name__}_{d}")
    return "|".join(parts)


def _reroot_attention(graph: tp.DependencyGraph, group, qkv_modules: set, bound: int):
    """Use the output projection's input channels as the root of a qkv group (as
    torch-pruning does): there the index space is the plain head-major attention width."""
    for dep, idxs in group:
        m = dep.target.module
        if isinstance(m, ROOT_TYPES) and m not in qkv_modules and graph.is_in_channel_pruning_fn(dep.handler):
            return pruning_group(graph, m, dep.handler, list(idxs), bound)
    return None


def collect_groups(
    model: nn.Module,
    graph: tp.DependencyGraph,
    num_heads: dict[nn.Module, int],
    attention_names: dict[nn.Module, tuple[str, bool]],
) -> tuple[list[ChannelGroup], list]:
    """Every channel group of ``model`` with members, channel grouping and safety checks,
    and the matching full torch-pruning groups (same order).

    ``num_heads`` maps fused qkv Linears to their head count; ``attention_names`` maps them
    to ``(attention module name, heads prunable)``.
    """
    raw = _raw_groups(graph, num_heads)
    groups: list[ChannelGroup] = []
    coverage: dict[tuple[str, bool], int] = defaultdict(int)
    sizes: dict[tuple[str, bool], int | None] = {}
    for group, qkv, root, diverged in raw:
        if group is None:
            groups.append(_diverged_group(graph, root, diverged, len(groups)))
            continue
        groups.append(_channel_group(graph, group, qkv, num_heads, attention_names, sizes, coverage, len(groups)))
    _mark_uncovered(groups, coverage, sizes)
    release_trace(graph)
    return groups, [group for group, *_ in raw]


def _channel_group(
    graph, group, qkv, num_heads: dict, attention_names: dict, sizes: dict, coverage: dict, index: int
) -> ChannelGroup:
    """The :class:`ChannelGroup` of one torch-pruning group (its dimensions' sizes and
    element counts are added to ``sizes`` and ``coverage``)."""
    root_dep, root_idxs = group[0]
    channels = len(root_idxs)
    unsupported = ""
    members = []
    for (name, is_out), count in _member_counts(graph, group, sizes).items():
        per = Fraction(count, channels)
        if per.denominator != 1:
            unsupported = f"{name} gets {count} elements for {channels} channels"
        members.append(Member(name, is_out, int(per)))
        coverage[(name, is_out)] += count
    unsupported = unsupported or _structural_problem(graph, group)
    ch_groups = _channel_groups(graph, group, num_heads)
    if channels % ch_groups:
        unsupported = unsupported or f"{channels} channels do not split into {ch_groups} groups"
    attn_name, heads_ok = attention_names.get(qkv, (None, False)) if qkv is not None else (None, False)
    return ChannelGroup(
        index=index,
        root_name=graph._module2name[root_dep.target.module],
        root_is_out=graph.is_out_channel_pruning_fn(root_dep.handler),
        channels=channels,
        ch_groups=ch_groups,
        members=members,
        signature=_signature(graph, group),
        attention=attn_name,
        num_heads=num_heads.get(qkv, 0) if qkv is not None else 0,
        heads_prunable=heads_ok,
        unsupported=unsupported,
    )


def _structural_problem(graph: tp.DependencyGraph, group) -> str:
    """Why torch-pruning cannot prune this group consistently, or "": a depthwise conv with
    a channel multiplier (PiT's pooling: neither scored nor cut right), or a node whose
    index mapping could not be computed (:func:`_guarded`)."""
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, ROOT_TYPES[:3]) and 1 < m.groups == m.in_channels != m.out_channels:
            return f"'{graph._module2name.get(m, '?')}' is a depthwise convolution with a channel multiplier"
    unmapped = getattr(graph, "_toolkit_unmapped", {})
    for dep, _ in group:
        for node in (dep.source, dep.target):
            if node in unmapped:
                return f"torch-pruning cannot map channels through {node.name} ({unmapped[node][:120]})"
    return ""


def _diverged_group(graph, root: nn.Module, reason: str, index: int) -> ChannelGroup:
    """Placeholder for a group torch-pruning cannot enumerate: never pruned."""
    channels = int(graph.get_pruner_of_module(root).get_out_channels(root))
    return ChannelGroup(
        index=index,
        root_name=graph._module2name[root],
        root_is_out=True,
        channels=channels,
        ch_groups=1,
        members=[Member(graph._module2name[root], True, 1)],
        signature="",
        unsupported=reason,
    )


def _raw_groups(graph: tp.DependencyGraph, num_heads: dict[nn.Module, int]) -> list[tuple]:
    """torch-pruning's groups (as ``get_all_groups`` enumerates them), attention groups
    re-rooted at their qkv Linear: ``(group, qkv or None, root module, reason)``; a group
    whose index mapping diverged has ``group=None`` and the reason."""
    refresh_index_mapping(graph)  # once: the model does not change here
    bound = index_bound(graph)
    roots = [m for m in graph.module2node if isinstance(m, ROOT_TYPES) and m not in graph.IGNORED_LAYERS_IN_TRACING]
    visited: set[int] = set()
    raw = []
    for i, m in enumerate(roots):
        check_time()
        if i and i % 50 == 0:
            _log.info("grouping channels: %d of %d root layers", i, len(roots))
        pruner = graph.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None or id(m) in visited:
            continue
        try:
            group = pruning_group(graph, m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))), bound)
        except GroupDiverged as exc:
            raw.append((None, None, m, str(exc)))
            continue
        visited.update(id(d.target.module) for d, _ in group if graph.is_out_channel_pruning_fn(d.handler))
        qkv = [
            d.target.module
            for d, _ in group
            if d.target.module in num_heads and graph.is_out_channel_pruning_fn(d.handler)
        ]
        if qkv:
            try:
                group = _reroot_attention(graph, group, set(num_heads), bound)
            except GroupDiverged as exc:
                raw.append((None, None, m, str(exc)))
                continue
            if group is None:
                continue
        raw.append((group, qkv[0] if qkv else None, m, ""))
    return raw


def _member_counts(graph: tp.DependencyGraph, group, sizes: dict) -> dict[tuple[str, bool], int]:
    """Elements of each named layer dimension ``(name, is_out)`` the group touches; records
    every dimension's size in ``sizes``."""
    names, param_names = graph._module2name, graph._param_to_name
    counts: dict[tuple[str, bool], int] = defaultdict(int)
    for dep, idxs in group:
        target = dep.target.module
        if isinstance(target, nn.Parameter):
            name = param_names.get(target)
        elif isinstance(target, nn.Module):
            name = names.get(target)
        else:
            name = None
        if name is None:
            continue  # functional op nodes
        is_out = graph.is_out_channel_pruning_fn(dep.handler)
        key = (name, is_out)
        counts[key] += len(idxs)
        sizes[key] = _dim_size(graph, dep.target, is_out)
    return counts


def _mark_uncovered(groups: list[ChannelGroup], coverage: dict, sizes: dict) -> None:
    """Every layer dimension must be covered exactly by the groups that touch it; groups
    touching one that is not are marked unsupported."""
    bad = {
        key: (coverage[key], size)
        for key, size in sizes.items()
        if size is not None and coverage[key] != size
    }
    for g in groups:
        for mem in g.members:
            key = (mem.name, mem.is_out)
            if key in bad and not g.unsupported:
                got, size = bad[key]
                side = "output" if mem.is_out else "input"
                g.unsupported = (
                    f"torch-pruning maps {got} of the {size} {side} elements of '{mem.name}' "
                    "(a reshape it cannot follow)"
                )

