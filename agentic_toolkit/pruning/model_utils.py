"""Model helpers of the pruning plan: example inputs, the classifier's names, and copies.

- :func:`copy_sharing_tensors` / :func:`unshare_tensors`: a deep copy that first shares the
  source's tensors (pruning replaces most of them) and then clones only those left shared;
- :func:`meta_copy` / :func:`meta_forward_error`: a structural copy on the meta device and a
  forward pass on it, to check cheaply that a pruned structure still runs;
- :func:`time_limit` / :func:`check_time` / :func:`graph_time_limit`: the CPU-time limit of
  building a model's channel groups (cooperative: works in any thread, no signals).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time

import torch
import torch.nn as nn

from ..errors import ToolkitError

GRAPH_TIME_LIMIT_S = 300  # CPU seconds for any model (torch-pruning loops on some graphs) ...
GRAPH_TIME_PER_MODULE_S = 0.5  # ... plus this much per module, so large models get longer
_deadline = threading.local()


def as_inputs(example_inputs):
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


def copy_sharing_tensors(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` whose parameters and buffers are still the original tensors.
    Pruning replaces most of them anyway; :func:`unshare_tensors` clones the rest, so no
    tensor is copied twice."""
    memo = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def unshare_tensors(copy_: nn.Module, source: nn.Module) -> None:
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


def meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers live on the meta device
    (no memory, no compute; the source is not touched)."""
    memo = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def meta_forward_error(model: nn.Module, example_inputs) -> str | None:
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


def is_under(name: str, roots: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in roots for i in range(1, len(parts) + 1))


class GraphTimeout(Exception):
    """Raised by :func:`check_time` inside a :func:`time_limit` block that ran out of time."""


def graph_time_limit(model: nn.Module) -> float:
    """CPU seconds allowed for grouping ``model``'s channels: a base allowance plus a
    per-module one (graph size, not the machine's load, decides how long grouping takes)."""
    return GRAPH_TIME_LIMIT_S + GRAPH_TIME_PER_MODULE_S * sum(1 for _ in model.modules())


@contextlib.contextmanager
def time_limit(seconds: float):
    """Let the block use at most ``seconds`` of this thread's CPU time: :func:`check_time`
    (called while grouping) raises :class:`GraphTimeout` once it is spent.

    Cooperative, so it works in any thread (no signals); CPU time rather than wall time, so
    a busy machine slows the block down without making it time out.
    """
    previous = getattr(_deadline, "value", None)
    _deadline.value = time.thread_time() + seconds if seconds > 0 else None
    try:
        yield
    finally:
        _deadline.value = previous


def check_time() -> None:
    """Raise :class:`GraphTimeout` when the enclosing :func:`time_limit` is spent."""
    limit = getattr(_deadline, "value", None)
    if limit is not None and time.thread_time() > limit:
        raise GraphTimeout()
