"""Timing pieces: a timer per device, interleaved pair timing, percentiles, torch threads,
and onnxruntime latencies.

GPU timings use CUDA events with synchronisation. Two models are timed interleaved (the
order alternates, A B, B A, A B, ...) so that drifts of a shared machine hit both alike;
:func:`time_round_robin` does the same for any number of models.
"""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ToolkitError
from .onnx_export import export_onnx, ort_session


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
    if run_base is None:
        return time_round_robin(timer, [run_model], x, repeats)[0], []
    t_model, t_base = time_round_robin(timer, [run_model, run_base], x, repeats)
    return t_model, t_base


def time_round_robin(
    timer: Callable[[Callable[[], Any]], float], models: list[Callable[[Any], Any]], x: Any, repeats: int,
) -> list[list[float]]:
    """``repeats`` timings (ms) of each of ``models`` on ``x`` (a tensor, or an array for
    onnxruntime sessions): every round times each once,
    in reverse order every other round, so that a drift of a shared machine hits all alike."""
    times: list[list[float]] = [[] for _ in models]
    for r in range(repeats):
        order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
        for i in order:
            times[i].append(timer(lambda m=models[i]: m(x)))
    return times


def onnx_sessions(models: list[nn.Module], example: torch.Tensor, threads: int | None) -> list[Any]:
    """Each model exported to ONNX (dynamic batch, :func:`.onnx_export.export_onnx`) and loaded
    into an onnxruntime CPU session with ``threads`` intra-op threads."""
    check = importlib.util.find_spec("onnx") is not None  # validate when the checker is there
    with tempfile.TemporaryDirectory() as tmp:
        return [ort_session(export_onnx(m, example, Path(tmp) / f"model{i}.onnx", check=check), threads)
                for i, m in enumerate(models)]


def onnx_times(sessions: list[Any], x: torch.Tensor, warmup: int, repeats: int) -> list[list[float]]:
    """``repeats`` onnxruntime timings (ms) of each session on ``x``, interleaved
    (:func:`time_round_robin`), after ``warmup`` untimed runs of each."""
    with torch.inference_mode(False):
        array = x.detach().cpu().numpy()
    names = [s.get_inputs()[0].name for s in sessions]
    runs = [lambda a, s=s, name=name: s.run(None, {name: a}) for s, name in zip(sessions, names, strict=True)]
    for run in runs:
        for _ in range(warmup):
            run(array)
    return time_round_robin(make_timer(torch.device("cpu")), runs, array, repeats)


def onnx_latencies(
    models: list[nn.Module], x: torch.Tensor, warmup: int, repeats: int, threads: int
) -> list[float]:
    """Median onnxruntime latency (ms) of each model, exported to ONNX, timed interleaved."""
    sessions = onnx_sessions(models, x, threads)
    return [statistics.median(t) for t in onnx_times(sessions, x, warmup, repeats)]
