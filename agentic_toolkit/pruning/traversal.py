"""torch-pruning's group traversal, guarded: bounded, interruptible, and safe on graphs
whose index mappings it cannot compute.

torch-pruning 1.6 finds a channel group by walking the dependency graph from a root layer
and mapping the root's indices through every reshape, concat and split on the way. Three
things go wrong on real models, and are handled here:

- Around a reshape cycle (torchvision's Swin/MaxViT attention: ``F.linear`` on the
  module's weights, a relative-position table gathered, viewed and added to the scores)
  the walk multiplies its index lists by the flatten stride on every turn and never
  stops: gigabytes within seconds (``docs/pruning.md``). Our copy of the
  walk (:func:`pruning_group`) stops a group whose index list outgrows any dimension of
  the model, or whose mapping fails, with :class:`GroupDiverged`.
- torch-pruning refreshes every index mapping of the graph before *each* group; on large
  graphs that dominated grouping (ReXNet "never finished"). We refresh once
  (:func:`refresh_index_mapping`) and check the cooperative time limit
  (:func:`.model_utils.check_time`) at every step.
- Its per-node mapping updates raise on some graphs (ShuffleNetV2's channel shuffle
  divides by a zero width; torchvision Swin-S/B sums a concat of unknown widths), which
  stopped the whole build: guarded (:func:`_guarded`), the node recorded, and groups
  through it never pruned. The guard is installed only while our code builds a graph or
  refreshes its mappings (:func:`guarded_index_mapping`), never at import.

:func:`release_trace` drops the traced autograd graph once the groups are known, so the
original weights can be freed as soon as pruning replaces them.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager

import torch.nn as nn
import torch_pruning as tp
from torch_pruning import _helpers as tp_helpers
from torch_pruning.dependency import Dependency, Group
from torch_pruning.dependency import index_mapping as tp_index_mapping
from torch_pruning.pruner import function as tp_function

from .model_utils import check_time

INDEX_BOUND_FACTOR = 4  # a dependency carrying more indices than this x the widest dimension diverged


class GroupDiverged(Exception):
    """torch-pruning cannot enumerate this group: its index lists grow without bound (a
    reshape cycle) or an index mapping fails."""


def _guarded(update):
    """torch-pruning's per-node index-mapping update, made safe: it raises on some graphs
    (ShuffleNetV2's channel shuffle divides by a zero width; torchvision Swin-S/B sums a
    concat of unknown widths), which would stop the whole build. The node then keeps no
    mapping and is recorded in ``graph._toolkit_unmapped``; groups through it are never
    pruned (``groups._channel_group``)."""
    if getattr(update, "_toolkit_guarded", False):
        return update

    def guarded(graph, node):
        try:
            update(graph, node)
        except Exception as exc:  # noqa: BLE001 - recorded, the group is reported
            if not hasattr(graph, "_toolkit_unmapped"):
                graph._toolkit_unmapped = {}
            graph._toolkit_unmapped[node] = f"{type(exc).__name__}: {exc}"

    guarded._toolkit_guarded = True
    return guarded


_GUARDED_UPDATES = (
    "update_concat_index_mapping",
    "update_split_index_mapping",
    "update_reshape_index_mapping",
    "update_unbind_index_mapping",
    "update_expand_index_mapping",
    "update_slice_index_mapping",
)
_guard_lock = threading.RLock()
_guard_depth = 0
_guard_originals: dict[str, object] = {}


@contextmanager
def guarded_index_mapping():
    """Install the guarded per-node updates (:func:`_guarded`) in torch-pruning's
    ``index_mapping`` module for the duration of the block, and restore its own functions
    afterwards.

    torch-pruning's ``update_index_mapping`` (called by ``build_dependency``,
    ``get_pruning_group`` and :func:`refresh_index_mapping`) looks the per-node updates up
    as globals of that module at call time, so replacing the module attributes takes
    effect there. Re-entrant and thread-safe: a counter under a ``threading.RLock``
    installs the guard on the first entry and restores the originals on the last exit, so
    nested use and worker threads (the budget panel) are safe. While any block is active
    the guard is still process-wide: other torch-pruning users in the process then see
    mapping errors recorded (``graph._toolkit_unmapped``) instead of raised. Outside it,
    importing this package leaves torch-pruning untouched.
    """
    global _guard_depth
    with _guard_lock:
        if _guard_depth == 0:
            for name in _GUARDED_UPDATES:
                original = getattr(tp_index_mapping, name)
                _guard_originals[name] = original
                setattr(tp_index_mapping, name, _guarded(original))
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                for name, original in _guard_originals.items():
                    setattr(tp_index_mapping, name, original)
                _guard_originals.clear()


def refresh_index_mapping(graph: tp.DependencyGraph) -> None:
    """torch-pruning's index-mapping update, guarded (:func:`guarded_index_mapping`; its
    "maximum recursive depth" notices are expected on deep graphs and silenced)."""
    with guarded_index_mapping(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Maximum recursive depth")
        tp_index_mapping.update_index_mapping(graph)


def index_bound(graph: tp.DependencyGraph) -> int:
    """Most indices one dependency may carry: a multiple of the widest dimension of any
    parameter (a flatten into a classifier is the widest map a real model makes)."""
    widest = max((max(p.shape) for p in graph.model.parameters() if p.ndim), default=1)
    return INDEX_BOUND_FACTOR * int(widest)


def pruning_group(graph: tp.DependencyGraph, module, pruning_fn, idxs, bound: int) -> Group:
    """torch-pruning's ``get_pruning_group``, guarded (see the module docstring).

    Unlike torch-pruning it does not refresh the index mappings on every call (call
    :func:`refresh_index_mapping` once after the graph or the model
    changed), checks :func:`check_time` at every step, and raises :class:`GroupDiverged`
    when one dependency would carry more than ``bound`` indices or the group more items
    than the graph could hold (torch-pruning would grow the index lists forever). It only
    applies the mappings already computed, never the per-node updates, so it needs no
    :func:`guarded_index_mapping`.
    """
    if isinstance(module, tp.ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
        pruning_fn = tp_function.prune_depthwise_conv_out_channels
    root = graph.module2node[module]
    group = Group()
    group.add_dep(
        Dependency(pruning_fn, pruning_fn, source=root, target=root),
        [tp_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs],
    )
    max_items = 8 * len(graph.module2node) + 64
    visited = set()
    stack = [(group[0].dep, group[0].idxs)]
    while stack:
        check_time()
        dep, idxs = stack.pop()
        visited.add(dep.target)
        for new_dep in dep.target.dependencies:
            if not new_dep.is_triggered_by(dep.handler):
                continue
            new_idxs = idxs
            for mapping in new_dep.index_mapping:
                if mapping is None:
                    continue
                stride = getattr(mapping, "_stride", 1) if not getattr(mapping, "reverse", True) else 1
                if len(new_idxs) * stride > bound:
                    raise GroupDiverged(
                        f"torch-pruning maps its indices without bound at {new_dep.target.name} "
                        "(a reshape cycle it cannot follow)"
                    )
                try:
                    new_idxs = mapping(new_idxs)
                except Exception as exc:  # e.g. a split whose widths it could not infer
                    raise GroupDiverged(
                        f"torch-pruning cannot map its indices at {new_dep.target.name} ({type(exc).__name__}: {exc})"
                    ) from None
            if not new_idxs or (new_dep.target in visited and group.has_pruning_op(new_dep, new_idxs)):
                continue
            group.add_dep(new_dep, new_idxs)
            stack.append((new_dep, new_idxs))
            if len(group) > max_items:
                raise GroupDiverged(f"torch-pruning's group keeps growing at {new_dep.target.name} (a reshape cycle)")
    return _merged(graph, group)


def _merged(graph: tp.DependencyGraph, group: Group) -> Group:
    """Merge a group's items per layer dimension (as torch-pruning does; ignored
    parameters dropped) and record the root indices of each item."""
    ignored = {id(p) for p in graph.ignored_params}
    merged = Group()
    for dep, idxs in group.items:
        if isinstance(dep.target.module, nn.Parameter) and id(dep.target.module) in ignored:
            continue
        merged.add_and_merge(dep, idxs)
    merged._DG = graph
    for i in range(len(merged)):
        hybrid = merged[i].idxs
        merged[i] = tp_helpers.GroupItem(merged[i].dep, tp_helpers.to_plain_idxs(hybrid))
        merged[i].root_idxs = tp_helpers.to_root_idxs(hybrid)
    return merged


def release_trace(graph: tp.DependencyGraph) -> None:
    """Drop the traced autograd nodes once the groups are known: they hold every original
    parameter (through ``AccumulateGrad``), so an in-place prune would otherwise free
    nothing while the plan lives. (Index mappings cannot be refreshed afterwards; nothing
    after grouping needs them.)"""
    for node in graph.module2node.values():
        node.grad_fn = None
        op = node.module
        if type(op).__module__ == tp.ops.__name__:
            for attr in ("grad_fn", "_grad_fn"):
                if hasattr(op, attr):
                    setattr(op, attr, None)
