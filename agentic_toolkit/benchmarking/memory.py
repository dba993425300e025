"""Peak memory of one forward pass, beyond the weights and the input.

On CUDA the rise of ``max_memory_allocated``; on CPU the peak of live tensor bytes created
by the pass, tracked per operator with a ``TorchDispatchMode`` (process RSS is useless here:
the allocator keeps freed memory, so a long-lived process shows no rise at all). Scratch
buffers inside fused kernels are not tensors and are not counted.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MIB = 1024.0 * 1024.0


class _LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of live tensors created by aten operators while the mode is active.

    Each operator output's storage is counted once (views and in-place results share it)
    and released when the last Python tensor referring to it is freed. Parameters and the
    input existed before, so the peak is the activation/workspace memory of the forward
    pass, independent of what the process allocator keeps cached.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.refs: dict[int, list[int]] = {}

    def _release(self, ptr: int) -> None:
        entry = self.refs.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self.refs[ptr]
            self.live -= entry[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0:
                continue
            if ptr in self.refs:
                self.refs[ptr][1] += 1
            else:
                self.refs[ptr] = [nbytes, 1]
                self.live += nbytes
                self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._release, ptr)
        return out


def memory_method(device: torch.device) -> str:
    """How :func:`peak_memory_mb` measures on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return "cuda max_memory_allocated delta"
    return "peak live tensor bytes (dispatch tracking)"


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """Extra memory (MiB) that one call of ``fn`` needed at its peak (see :func:`memory_method`)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / MIB
    tracker = _LiveTensorBytes()
    with tracker:
        fn()
    return tracker.peak / MIB
