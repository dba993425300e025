"""Timing pieces: a timer per device, interleaved pair timing, percentiles, torch threads,
and onnxruntime latencies.

GPU timings use CUDA events with synchronisation. Two models are timed interleaved (the
order alternates, A B, B A, A B, ...) so that drifts of a shared machine hit both alike.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ToolkitError


def make_timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    if device.type == "cuda":
        def time_cuda(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return time_cuda

    def time_cpu(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return time_cpu


@contextlib.contextmanager
def torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ToolkitError(f"threads must be >= 1 or None, got {n}")
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_interleaved(
    timer: Callable[[Callable[[], Any]], float], run_model: nn.Module, run_base: nn.Module | None,
    x: torch.Tensor, repeats: int,
) -> tuple[list[float], list[float]]:
    """``repeats`` timings (ms) of ``run_model(x)`` and, when given, of ``run_base(x)``,
    alternating which of the two runs first."""
    t_model: list[float] = []
    t_base: list[float] = []
    for r in range(repeats):
        if run_base is None:
            t_model.append(timer(lambda: run_model(x)))
        elif r % 2 == 0:
            t_model.append(timer(lambda: run_model(x)))
            t_base.append(timer(lambda: run_base(x)))
        else:
            t_base.append(timer(lambda: run_base(x)))
            t_model.append(timer(lambda: run_model(x)))
    return t_model, t_base


def onnx_latencies(
    models: list[nn.Module], x: torch.Tensor, warmup: int, repeats: int, threads: int
) -> list[float]:
    """Median onnxruntime latency (ms) of each model, exported to ONNX, timed interleaved."""
    import onnxruntime as ort

    sessions = []
    # Export outside inference mode: tracing rejects inference tensors.
    with torch.inference_mode(False), torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        x = x.detach().cpu().clone()
        for i, m in enumerate(models):
            path = Path(tmp) / f"model{i}.onnx"
            cpu_model = copy.deepcopy(m).cpu().eval()
            try:  # the TorchScript exporter handles pruned convnets without onnxscript
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    torch.onnx.export(cpu_model, (x,), str(path), input_names=["input"],
                                      output_names=["output"], dynamo=False)
            except Exception:  # legacy exporter removed or failing: use the dynamo exporter
                torch.onnx.export(cpu_model, (x,), str(path), input_names=["input"],
                                  output_names=["output"], dynamo=True)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sessions.append(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]))
    feed = {"input": x.numpy()}
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    for r in range(repeats):
        order = range(len(sessions)) if r % 2 == 0 else reversed(range(len(sessions)))
        for i in order:
            t0 = time.perf_counter()
            sessions[i].run(None, feed)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]
