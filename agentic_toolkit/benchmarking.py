"""Latency, throughput and memory of a model, and honest speedups against a baseline.

With a ``baseline`` the two models are timed interleaved in the same run (the order
alternates, A B, B A, A B, ...), so drifts of a shared machine (other jobs, turbo, thermal)
hit both alike; the speedup is reported per pair as median, min and max, and the
"efficiency" is that speedup divided by the MAC ratio (1.0 = latency fell exactly as much as
the MACs did). GPU timings use CUDA events with synchronisation.

Peak memory of one forward pass, beyond the weights and the input: on CUDA the rise of
``max_memory_allocated``; on CPU the peak of live tensor bytes created by the pass, tracked
per operator with a ``TorchDispatchMode`` (process RSS is useless here: the allocator keeps
freed memory, so a long-lived process shows no rise at all). Scratch buffers inside fused
kernels are not tensors and are not counted. ``BenchmarkResult.memory_method`` says which
method was used.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import statistics
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .errors import ToolkitError
from .training.evaluation import eval_mode, model_device

MIB = 1024.0 * 1024.0


@dataclass
class BenchmarkResult:
    """Per-batch-size timings of ``model`` (and of ``baseline`` when one was given).

    ``rows`` holds one dict per batch size with ``batch_size``, ``latency_ms`` (median),
    ``latency_p90_ms``, ``throughput`` (images/s at the median), ``peak_memory_mb`` and,
    with a baseline, ``baseline_latency_ms``, ``baseline_latency_p90_ms``,
    ``baseline_throughput``, ``baseline_peak_memory_mb``, ``speedup_median``,
    ``speedup_min``, ``speedup_max`` (baseline time / model time over interleaved pairs)
    and ``efficiency`` (median speedup / MAC ratio). With ONNX: ``onnx_latency_ms`` (and
    ``onnx_baseline_latency_ms``, ``onnx_speedup``).
    """

    rows: list[dict[str, Any]]
    device: str
    threads: int
    input_size: tuple[int, ...]
    warmup: int
    repeats: int
    memory_method: str
    macs: int | None = None
    baseline_macs: int | None = None
    onnx_status: str = "not requested"
    notes: list[str] = field(default_factory=list)

    @property
    def mac_ratio(self) -> float | None:
        """Baseline MACs / model MACs (None without a baseline or MAC counts)."""
        if not self.macs or not self.baseline_macs:
            return None
        return self.baseline_macs / self.macs

    def to_frame(self):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``results`` has per batch size ``batch_size``, ``latency_ms`` and,
        with a baseline, ``speedup`` (``median``, ``min``, ``max``) and ``efficiency``."""
        results = []
        for r in self.rows:
            out = {k: v for k, v in r.items() if not k.startswith("speedup_")}
            if "speedup_median" in r:
                out["speedup"] = {"median": r["speedup_median"], "min": r["speedup_min"],
                                  "max": r["speedup_max"]}
            results.append(out)
        d = asdict(self)
        d.pop("rows")
        d["input_size"] = list(self.input_size)
        d["mac_ratio"] = self.mac_ratio
        d["results"] = results
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        head = f"device {self.device}, {self.threads} threads, {self.repeats} repeats"
        if self.mac_ratio:
            head += f", MAC ratio {self.mac_ratio:.2f}x"
        lines = [head]
        for r in self.rows:
            line = (f"  batch {r['batch_size']:>4}: {r['latency_ms']:.2f} ms (p90 {r['latency_p90_ms']:.2f}), "
                    f"{r['throughput']:.1f} img/s")
            if r.get("peak_memory_mb") is not None:
                line += f", peak +{r['peak_memory_mb']:.1f} MiB"
            if "speedup_median" in r:
                line += (f" | baseline {r['baseline_latency_ms']:.2f} ms, speedup {r['speedup_median']:.2f}x "
                         f"(min {r['speedup_min']:.2f}, max {r['speedup_max']:.2f})")
                if r.get("efficiency") is not None:
                    line += f", efficiency {r['efficiency']:.2f}"
            if r.get("onnx_latency_ms") is not None:
                line += f" | onnxruntime {r['onnx_latency_ms']:.2f} ms"
                if r.get("onnx_speedup") is not None:
                    line += f" (speedup {r['onnx_speedup']:.2f}x)"
            lines.append(line)
        if self.onnx_status != "not requested":
            lines.append(f"  onnx: {self.onnx_status}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# ----------------------------------------------------------------------------- pieces


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int | None:
    """MACs of one sample (``agentic_toolkit.profiling.profile``; torch-pruning's counter as fallback)."""
    shape = (1, *input_size[1:])
    try:
        from .profiling.profile import profile_macs

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


def _timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
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


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ToolkitError(f"threads must be >= 1 or None, got {n}")
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _onnx_latencies(
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


# ----------------------------------------------------------------------------- benchmark


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

    ``input_size`` gives channels and spatial size; its batch dimension is replaced by each
    entry of ``batch_sizes``. ``threads=None`` keeps torch's thread setting; any other value
    applies during the run and the previous setting is restored afterwards. With a
    ``baseline`` both models run on the same input, interleaved, ``repeats`` pairs each.
    ``onnx=True`` also exports the model(s) to ONNX and times them with onnxruntime on CPU
    (the ``onnx`` extra); if that is not installed the rest still runs and
    ``onnx_status`` says why it was skipped. Models are not modified (a copy is used when
    they must move device or memory format).
    """
    size = _check_input_size(input_size)
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

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    run_model = _prepare(model, dev, channels_last)
    run_base = _prepare(baseline, dev, channels_last) if baseline is not None else None
    macs = count_macs(run_model, size)
    base_macs = count_macs(run_base, size) if run_base is not None else None
    timer = _timer(dev)
    result_rows: list[dict[str, Any]] = []
    notes: list[str] = []
    onnx_status = "not requested"
    ort_ok = False
    if onnx:
        try:
            import onnxruntime  # noqa: F401

            ort_ok = True
            onnx_status = "onnxruntime CPUExecutionProvider"
        except ImportError:
            onnx_status = "skipped: onnxruntime is not installed (pip install 'agentic_toolkit[onnx]')"

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sizes), desc="benchmark", unit="batch size")
    with contextlib.ExitStack() as stack:
        n_threads = stack.enter_context(_threads(threads))
        stack.enter_context(eval_mode(run_model))
        if run_base is not None:
            stack.enter_context(eval_mode(run_base))
        stack.enter_context(torch.inference_mode())
        # One small pass per model first: a model that cannot take the input fails here,
        # with a clear message, before any timing.
        tiny = torch.randn((1, *size[1:]), device=dev).contiguous(memory_format=fmt)
        for m in (run_model, run_base):
            if m is not None:
                try:
                    m(tiny)
                except Exception as exc:
                    which = "baseline" if m is run_base else "model"
                    raise ToolkitError(f"{which} cannot run on input {tuple(tiny.shape)}: {exc}") from exc
        for bs in sizes:
            x = torch.randn((bs, *size[1:]), device=dev).contiguous(memory_format=fmt)
            row: dict[str, Any] = {"batch_size": bs}
            # The first pass at this batch size measures memory and shows that the input fits.
            for key, m in (("peak_memory_mb", run_model), ("baseline_peak_memory_mb", run_base)):
                if m is None:
                    continue
                try:
                    if measure_memory:
                        row[key] = peak_memory_mb(lambda x=x, m=m: m(x), dev)
                    else:
                        m(x)
                except Exception as exc:
                    which = "baseline" if m is run_base else "model"
                    raise ToolkitError(f"{which} cannot run on input {tuple(x.shape)}: {exc}") from exc
            for _ in range(warmup):
                run_model(x)
                if run_base is not None:
                    run_base(x)
            t_model: list[float] = []
            t_base: list[float] = []
            for r in range(repeats):
                if run_base is None:
                    t_model.append(timer(lambda x=x: run_model(x)))
                elif r % 2 == 0:
                    t_model.append(timer(lambda x=x: run_model(x)))
                    t_base.append(timer(lambda x=x: run_base(x)))
                else:
                    t_base.append(timer(lambda x=x: run_base(x)))
                    t_model.append(timer(lambda x=x: run_model(x)))
            med = statistics.median(t_model)
            row.update(latency_ms=med, latency_p90_ms=_percentile(t_model, 0.9),
                       throughput=bs / (med / 1e3))
            if run_base is not None:
                bmed = statistics.median(t_base)
                ratios = [b / a for a, b in zip(t_model, t_base, strict=True)]
                row.update(
                    baseline_latency_ms=bmed,
                    baseline_latency_p90_ms=_percentile(t_base, 0.9),
                    baseline_throughput=bs / (bmed / 1e3),
                    speedup_median=statistics.median(ratios),
                    speedup_min=min(ratios),
                    speedup_max=max(ratios),
                    efficiency=(statistics.median(ratios) / (base_macs / macs))
                    if macs and base_macs else None,
                )
            if ort_ok:
                try:
                    models = [run_model] + ([run_base] if run_base is not None else [])
                    lat = _onnx_latencies(models, x, warmup, repeats, n_threads)
                    row["onnx_latency_ms"] = lat[0]
                    if run_base is not None:
                        row["onnx_baseline_latency_ms"] = lat[1]
                        row["onnx_speedup"] = lat[1] / lat[0]
                except Exception as exc:  # export of an exotic op, ORT refusal: keep the rest
                    onnx_status = f"failed: {str(exc).splitlines()[0][:200]}"
                    ort_ok = False
            result_rows.append(row)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if baseline is not None and (not macs or not base_macs):
        notes.append("MACs could not be counted, so there is no efficiency figure")
    return BenchmarkResult(
        rows=result_rows,
        device=str(dev),
        threads=n_threads,
        input_size=size,
        warmup=warmup,
        repeats=repeats,
        memory_method=memory_method(dev) if measure_memory else "not measured",
        macs=macs,
        baseline_macs=base_macs,
        onnx_status=onnx_status,
        notes=notes,
    )
