"""``benchmark``: latency, throughput and memory per batch size, optionally against a baseline.

With a ``baseline`` the two models are timed interleaved in the same run (see
:mod:`.latency`); the speedup is reported per pair as median, min and max, and the
"efficiency" is that speedup divided by the MAC ratio (1.0 = latency fell exactly as much
as the MACs did). Peak memory: :mod:`.memory`.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..errors import ToolkitError
from ..training.evaluation import eval_mode, model_device
from .latency import (
    make_timer,
    onnx_sessions,
    onnx_times,
    percentile,
    time_interleaved,
    time_round_robin,
    torch_threads,
)
from .memory import memory_method, peak_memory_mb
from .onnx_export import INSTALL_HINT
from .result import BenchmarkResult


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int | None:
    """MACs of one sample (``agentic_toolkit.profiling.profile``; torch-pruning's counter as fallback)."""
    shape = (1, *input_size[1:])
    try:
        from ..profiling.profile import profile_macs

        return int(profile_macs(model, input_size=shape).total_macs)
    except ImportError:
        pass
    except ToolkitError:
        return None
    try:
        import torch_pruning as tp

        dev = model_device(model)
        macs, _ = tp.utils.count_ops_and_params(model, torch.randn(shape, device=dev))
        return int(macs)
    except Exception:
        return None


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    try:
        size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ToolkitError(f"input_size must be a tuple of ints, got {input_size!r}") from None
    if len(size) == 3:
        size = (1, *size)
    if len(size) != 4 or min(size) < 1:
        raise ToolkitError(f"input_size must be (batch, channels, height, width), got {input_size!r}")
    return size


def _prepare(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    # Never move or re-layout the caller's model in place: benchmark a copy when needed.
    if model_device(model) != device or channels_last:
        model = copy.deepcopy(model).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model


def _check_args(model, baseline, batch_sizes, warmup: int, repeats: int, device) -> tuple[list[int], torch.device]:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ToolkitError("device='cuda' but CUDA is not available")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise ToolkitError(f"batch_sizes must be positive integers, got {batch_sizes!r}")
    if warmup < 0 or repeats < 1:
        raise ToolkitError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    if not isinstance(model, nn.Module) or (baseline is not None and not isinstance(baseline, nn.Module)):
        raise ToolkitError("model and baseline must be torch.nn.Module instances")
    return sizes, dev


def _onnx_setup(onnx: bool, models: list[nn.Module], size: tuple[int, ...], threads: int,
                dev: torch.device) -> tuple[list[Any] | None, str]:
    """onnxruntime sessions of ``models`` (exported once, dynamic batch) and the ONNX status
    line; ``None`` sessions when not requested, not installed or the export failed."""
    if not onnx:
        return None, "not requested"
    try:
        import onnxruntime as ort
    except ImportError:
        return None, f"skipped: onnxruntime is not installed ({INSTALL_HINT})"
    try:
        sessions = onnx_sessions(models, torch.randn((1, *size[1:])), threads)
    except Exception as exc:  # an op the exporter cannot convert, onnxruntime refusing the graph
        return None, f"failed: {str(exc).splitlines()[0][:300]}"
    where = "" if dev.type == "cpu" else f"; the PyTorch timings are on {dev}"
    return sessions, f"onnxruntime {ort.__version__} CPUExecutionProvider, {threads} threads{where}"


def _first_pass(models: dict[str, nn.Module | None], x: torch.Tensor, dev: torch.device,
                measure_memory: bool) -> dict[str, float]:
    """Run each model once on ``x`` (a clear error if it cannot take it), measuring peak
    memory on the way when asked: ``{"peak_memory_mb": ..., "baseline_peak_memory_mb": ...}``."""
    row = {}
    for which, m in models.items():
        if m is None:
            continue
        try:
            if measure_memory:
                key = "peak_memory_mb" if which == "model" else "baseline_peak_memory_mb"
                row[key] = peak_memory_mb(lambda m=m: m(x), dev)
            else:
                m(x)
        except Exception as exc:
            raise ToolkitError(f"{which} cannot run on input {tuple(x.shape)}: {exc}") from exc
    return row


def _timings(run_model, run_base, x, timer, warmup: int, repeats: int, macs, base_macs) -> dict[str, Any]:
    """Latency, throughput and (with a baseline) speedup figures of one batch size."""
    for _ in range(warmup):
        run_model(x)
        if run_base is not None:
            run_base(x)
    bs = x.shape[0]
    t_model, t_base = time_interleaved(timer, run_model, run_base, x, repeats)
    med = statistics.median(t_model)
    row: dict[str, Any] = dict(latency_ms=med, latency_p90_ms=percentile(t_model, 0.9), throughput=bs / (med / 1e3))
    if run_base is not None:
        bmed = statistics.median(t_base)
        speed = _speedups(t_model, t_base)
        row.update(
            baseline_latency_ms=bmed,
            baseline_latency_p90_ms=percentile(t_base, 0.9),
            baseline_throughput=bs / (bmed / 1e3),
            **speed,
            efficiency=(speed["speedup_median"] / (base_macs / macs)) if macs and base_macs else None,
        )
    return row


def _speedups(t_model: list[float], t_base: list[float]) -> dict[str, float]:
    """Median, min and max over the interleaved pairs of baseline time / model time."""
    ratios = [b / a for a, b in zip(t_model, t_base, strict=True)]
    return {"speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios)}


def _onnx_row(sessions: list[Any], x: torch.Tensor, warmup: int, repeats: int, mac_ratio) -> dict[str, Any]:
    """onnxruntime figures of one batch size: the model's latency and, with a baseline session,
    the baseline's and the speedup over interleaved pairs (as for the PyTorch timings)."""
    times = onnx_times(sessions, x, warmup, repeats)
    med, bs = statistics.median(times[0]), x.shape[0]
    row: dict[str, Any] = {"onnx_latency_ms": med, "onnx_latency_p90_ms": percentile(times[0], 0.9),
                           "onnx_throughput": bs / (med / 1e3)}
    if len(sessions) > 1:
        speed = _speedups(times[0], times[1])
        row.update(
            onnx_baseline_latency_ms=statistics.median(times[1]),
            onnx_baseline_latency_p90_ms=percentile(times[1], 0.9),
            onnx_speedup=speed["speedup_median"], onnx_speedup_min=speed["speedup_min"],
            onnx_speedup_max=speed["speedup_max"],
            onnx_efficiency=speed["speedup_median"] / mac_ratio if mac_ratio else None,
        )
    return row


def benchmark(
    model: nn.Module,
    input_size: Sequence[int] = (1, 3, 224, 224),
    *,
    baseline: nn.Module | None = None,
    device: str | torch.device = "cpu",
    batch_sizes: Sequence[int] = (1, 16),
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
    channels_last: bool = False,
    measure_memory: bool = True,
    onnx: bool = False,
    progress: bool = False,
) -> BenchmarkResult:
    """Time ``model`` (inference, no grad) for each batch size, optionally against ``baseline``.

    Models are not modified (a copy is used when they must move device or memory format).

    Args:
        model: the model to time.
        input_size: channels and spatial size; the batch dimension is replaced by each
            entry of ``batch_sizes``.
        baseline: time this model too, on the same input, interleaved (``repeats`` pairs),
            for speedups and efficiency.
        device: ``"cpu"`` or a CUDA device (timed with events and synchronisation).
        batch_sizes: the batch sizes to time.
        threads: CPU threads during the run (restored afterwards); None keeps torch's setting.
        warmup, repeats: untimed runs, then timed runs.
        channels_last: run in NHWC.
        measure_memory: record the peak activation memory of one forward.
        onnx: also export the model(s) to ONNX once (:func:`export_onnx`, dynamic batch) and
            time them with onnxruntime on CPU, interleaved like the PyTorch timings; if
            onnxruntime is missing or the export fails, the rest still runs, ``onnx_status``
            says why and a warning is issued.
        progress: a progress bar.

    Returns:
        A :class:`BenchmarkResult` with one row per batch size.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model, x = at.create_model("cifar_resnet20"), torch.randn(1, 3, 32, 32)
        >>> pruned = at.apply_isomorphic_prune(model, at.strategy_preset("uniform_l1", pruning_ratio=0.5), x).model
        >>> res = at.benchmark(pruned, (1, 3, 32, 32), baseline=model, batch_sizes=(1,), warmup=1,
        ...                    repeats=3, threads=1)
        >>> row = res.rows[0]
        >>> row["batch_size"], row["speedup_min"] <= row["speedup_median"] <= row["speedup_max"]
        (1, True)
        >>> round(res.mac_ratio, 1)
        4.0
    """
    size = _check_input_size(input_size)
    sizes, dev = _check_args(model, baseline, batch_sizes, warmup, repeats, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    run_model = _prepare(model, dev, channels_last)
    run_base = _prepare(baseline, dev, channels_last) if baseline is not None else None
    macs = count_macs(run_model, size)
    base_macs = count_macs(run_base, size) if run_base is not None else None
    timer = make_timer(dev)
    models = {"model": run_model, "baseline": run_base}
    mac_ratio = base_macs / macs if macs and base_macs else None
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sizes), desc="benchmark", unit="batch size")
    with contextlib.ExitStack() as stack:
        n_threads = stack.enter_context(torch_threads(threads))
        for m in (run_model, run_base):
            if m is not None:
                stack.enter_context(eval_mode(m))
        stack.enter_context(torch.inference_mode())
        # One small pass per model first: a model that cannot take the input fails here,
        # with a clear message, before any timing.
        _first_pass(models, torch.randn((1, *size[1:]), device=dev).contiguous(memory_format=fmt), dev, False)
        sessions, onnx_status = _onnx_setup(onnx, [m for m in models.values() if m is not None], size,
                                            n_threads, dev)
        for bs in sizes:
            x = torch.randn((bs, *size[1:]), device=dev).contiguous(memory_format=fmt)
            # the first pass at this batch size measures memory and shows that the input fits
            row: dict[str, Any] = {"batch_size": bs, **_first_pass(models, x, dev, measure_memory)}
            row.update(_timings(run_model, run_base, x, timer, warmup, repeats, macs, base_macs))
            if sessions is not None:
                try:
                    row.update(_onnx_row(sessions, x, warmup, repeats, mac_ratio))
                except Exception as exc:  # onnxruntime refusing a batch size: keep the rest
                    onnx_status, sessions = f"failed at batch {bs}: {str(exc).splitlines()[0][:300]}", None
            rows.append(row)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if onnx and sessions is None:
        warnings.warn(f"onnx=True but no onnxruntime timings: {onnx_status}", stacklevel=2)
    notes = []
    if baseline is not None and (not macs or not base_macs):
        notes.append("MACs could not be counted, so there is no efficiency figure")
    return BenchmarkResult(
        rows=rows, device=str(dev), threads=n_threads, input_size=size, warmup=warmup, repeats=repeats,
        memory_method=memory_method(dev) if measure_memory else "not measured", macs=macs,
        baseline_macs=base_macs, onnx_status=onnx_status, notes=notes,
    )


def compare_speedups(
    models: Sequence[nn.Module],
    input_size: Sequence[int],
    *,
    baseline: nn.Module,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
    channels_last: bool = False,
) -> list[dict[str, float]]:
    """Each of ``models`` against ``baseline`` on one batch of ``input_size``, all timed in one
    round-robin loop (:func:`~.latency.time_round_robin`), so that candidates are compared under
    the same conditions of a shared machine. Per model: ``latency_ms``, ``baseline_latency_ms``
    (medians) and ``speedup_median`` / ``_min`` / ``_max`` over the per-round ratios."""
    size = _check_input_size(input_size)
    if not models:
        raise ToolkitError("compare_speedups needs at least one model")
    for m in models:
        _, dev = _check_args(m, baseline, (size[0],), warmup, repeats, device)
    runs = [_prepare(m, dev, channels_last) for m in [*models, baseline]]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads(threads))
        for m in runs:
            stack.enter_context(eval_mode(m))
        stack.enter_context(torch.inference_mode())
        x = torch.randn(size, device=dev).contiguous(memory_format=fmt)
        _first_pass({f"model {i}": m for i, m in enumerate(runs)}, x, dev, False)
        for _ in range(warmup):
            for m in runs:
                m(x)
        times = time_round_robin(make_timer(dev), runs, x, repeats)
    base = times[-1]
    return [{"latency_ms": statistics.median(t), "baseline_latency_ms": statistics.median(base), **_speedups(t, base)}
            for t in times[:-1]]
