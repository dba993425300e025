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
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn as nn
import torch_pruning as tp

ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
GRAPH_TIME_LIMIT_S = 300  # torch-pruning never finishes grouping some graphs (e.g. ReXNet)


class GraphTimeout(Exception):
    """Raised inside a :func:`time_limit` block that ran out of time."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the block after ``seconds`` with :class:`GraphTimeout` (main thread on
    POSIX only; elsewhere the block simply runs to the end)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def _alarm(signum, frame):
        raise GraphTimeout()

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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


def build_graph(model: nn.Module, example_inputs, ignored_params: list[nn.Parameter] | None = None) -> tp.DependencyGraph:
    """torch-pruning's dependency graph, built without changing the model.

    ``ignored_params`` are parameters no group may prune (e.g. per-head tables).
    Traps: tracing calls ``model(*example_inputs)`` first, which splits a bare tensor along
    the batch (a batch-1 image becomes an unbatched one), so a tensor is passed as a
    1-tuple; a failed trace leaves its forward hooks on the model, so we remove them. The
    graph is traced through autograd, so frozen parameters (``requires_grad=False``, e.g.
    a teacher after distillation or a frozen backbone) would drop out of it: they are
    unfrozen for the trace and frozen again afterwards.
    """
    was_training = model.training
    hooks_before = {id(m): set(m._forward_hooks) for m in model.modules()}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    try:
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad(), warnings.catch_warnings():
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


def _dim_size(graph: tp.DependencyGraph, target, is_out: bool) -> int | None:
    pruner = graph.get_pruner_of_module(target)
    if pruner is None:
        return None
    return pruner.get_out_channels(target) if is_out else pruner.get_in_channels(target)


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


def _reroot_attention(graph: tp.DependencyGraph, group, qkv_modules: set):
    """Use the output projection's input channels as the root of a qkv group (as
    torch-pruning does): there the index space is the plain head-major attention width."""
    for dep, idxs in group:
        m = dep.target.module
        if isinstance(m, ROOT_TYPES) and m not in qkv_modules and graph.is_in_channel_pruning_fn(dep.handler):
            return graph.get_pruning_group(m, dep.handler, list(idxs))
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
    names = graph._module2name
    raw = _raw_groups(graph, num_heads)
    groups: list[ChannelGroup] = []
    coverage: dict[tuple[str, bool], int] = defaultdict(int)
    sizes: dict[tuple[str, bool], int | None] = {}
    for group, qkv in raw:
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
        ch_groups = _channel_groups(graph, group, num_heads)
        if channels % ch_groups:
            unsupported = unsupported or f"{channels} channels do not split into {ch_groups} groups"
        attn_name, heads_ok = attention_names.get(qkv, (None, False)) if qkv is not None else (None, False)
        groups.append(
            ChannelGroup(
                index=len(groups),
                root_name=names[root_dep.target.module],
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
        )
    _mark_uncovered(groups, coverage, sizes)
    return groups, [group for group, _ in raw]


def _raw_groups(graph: tp.DependencyGraph, num_heads: dict[nn.Module, int]) -> list[tuple[object, nn.Module | None]]:
    """torch-pruning's groups, attention groups re-rooted at their qkv Linear: ``(group, qkv or None)``."""
    raw = []
    for group in graph.get_all_groups(root_module_types=ROOT_TYPES):
        qkv = [
            d.target.module
            for d, _ in group
            if d.target.module in num_heads and graph.is_out_channel_pruning_fn(d.handler)
        ]
        if qkv:
            group = _reroot_attention(graph, group, set(num_heads))
            if group is None:
                continue
        raw.append((group, qkv[0] if qkv else None))
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
        sizes[key] = _dim_size(graph, target, is_out)
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
