"""The result of :func:`~agentic_toolkit.benchmarking.benchmark`: timings per batch size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BenchmarkResult:
    """Per-batch-size timings of ``model`` (and of ``baseline`` when one was given).

    ``rows`` holds one dict per batch size with ``batch_size``, ``latency_ms`` (median),
    ``latency_p90_ms``, ``throughput`` (images/s at the median), ``peak_memory_mb`` and,
    with a baseline, ``baseline_latency_ms``, ``baseline_latency_p90_ms``,
    ``baseline_throughput``, ``baseline_peak_memory_mb``, ``speedup_median``,
    ``speedup_min``, ``speedup_max`` (baseline time / model time over interleaved pairs)
    and ``efficiency`` (median speedup / MAC ratio). With ONNX (onnxruntime on CPU, the
    same figures with an ``onnx_`` prefix): ``onnx_latency_ms``, ``onnx_latency_p90_ms``,
    ``onnx_throughput`` and, with a baseline, ``onnx_baseline_latency_ms``,
    ``onnx_baseline_latency_p90_ms``, ``onnx_speedup`` (median), ``onnx_speedup_min``,
    ``onnx_speedup_max`` and ``onnx_efficiency``. ``onnx_status`` says what ran (or why not).

    Attributes:
        rows: one dict per batch size (see above); :meth:`to_frame` makes them a DataFrame.
        device, threads: where it ran.
        input_size: the input shape (batch replaced per row).
        warmup, repeats: untimed runs, then timed runs (pairs with a baseline).
        memory_method: how ``peak_memory_mb`` was measured.
        macs, baseline_macs: MACs of both models (for ``efficiency``; :attr:`mac_ratio`).
        onnx_status: what the ONNX timing did.
        notes: warnings of the run.

    Example:
        >>> import agentic_toolkit as at
        >>> res = at.benchmark(at.create_model("cifar_resnet20"), (1, 3, 32, 32), batch_sizes=(1, 2),
        ...                    warmup=1, repeats=3, threads=1)
        >>> res.to_frame()["batch_size"].tolist(), res.threads
        ([1, 2], 1)
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
            lines.append(line)
            if r.get("onnx_latency_ms") is not None:
                lines.append(self._onnx_line(r))
        if self.onnx_status != "not requested":
            lines.append(f"  onnx: {self.onnx_status}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    @staticmethod
    def _onnx_line(r: dict[str, Any]) -> str:
        line = (f"  {'':>10}  onnxruntime {r['onnx_latency_ms']:.2f} ms (p90 {r['onnx_latency_p90_ms']:.2f}), "
                f"{r['onnx_throughput']:.1f} img/s")
        if r.get("onnx_speedup") is not None:
            line += (f" | baseline {r['onnx_baseline_latency_ms']:.2f} ms, speedup {r['onnx_speedup']:.2f}x "
                     f"(min {r['onnx_speedup_min']:.2f}, max {r['onnx_speedup_max']:.2f})")
            if r.get("onnx_efficiency") is not None:
                line += f", efficiency {r['onnx_efficiency']:.2f}"
        return line

    def plot(self):
        """Median latency per batch size (model and baseline side by side, the median
        speedup over the baseline's bars) as a matplotlib Figure."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.5, 3.6), layout="constrained")
        ax = fig.subplots()
        pos = list(range(len(self.rows)))
        has_base = any("baseline_latency_ms" in r for r in self.rows)
        w = 0.4 if has_base else 0.8
        shift = w / 2 if has_base else 0.0
        ax.bar([p - shift for p in pos], [r["latency_ms"] for r in self.rows], w, label="model", color="#4c72b0")
        if has_base:
            bars = ax.bar([p + shift for p in pos], [r.get("baseline_latency_ms", 0.0) for r in self.rows], w,
                          label="baseline", color="#dd8452")
            ax.bar_label(bars, labels=[f"{r['speedup_median']:.2f}x" if "speedup_median" in r else ""
                                       for r in self.rows], fontsize=8)
            ax.legend()
        ax.set_xticks(pos, [str(r["batch_size"]) for r in self.rows])
        ax.set(xlabel="batch size", ylabel="median latency (ms)",
               title=f"{self.device}, {self.threads} threads, {self.repeats} repeats")
        return fig
