"""Measured speedup against MAC reduction: prune to a budget, time against the unpruned model.

Shared by ``benchmarks/bench_speedup.py`` (ResNet-50 at 50% of its MACs, uniform strategy)
and notebook 06 (the paper's targets, default strategy). For each (model, target) the
budget solver fits the strategy's ratio (no agent loop), the model is pruned, and
:func:`agentic_toolkit.benchmark` times pruned and unpruned interleaved (A B, B A, ...) in
one run, so load changes on a shared machine affect both alike. Random weights: latency
does not depend on them. :func:`plot_speedup_vs_macs` draws the written table.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from agentic_toolkit.benchmarking import benchmark
from agentic_toolkit.models import create_model
from agentic_toolkit.pruning import Strategy, fit_to_budget, get_plan
from agentic_toolkit.units import parse_macs

from .paper import IMAGENET_INPUT

#: The uniform strategy of ``benchmarks/bench_speedup.py``: every layer loses the same
#: fraction of channels (L2 magnitude), no isomorphic or global ranking.
UNIFORM = Strategy(isomorphic=False, global_pruning=False)


def target_label(target: float | str) -> str:
    """``0.5`` -> ``"50%"``; an absolute target (``"1.77G"``) as is."""
    return f"{target:.0%}" if isinstance(target, float) else str(target)


def speedup_study(
    cases: Sequence[tuple[str, float | str]],
    strategy: Strategy | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 16),
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    onnx: bool = False,
    input_size: tuple[int, ...] = IMAGENET_INPUT,
    progress: bool = False,
    verbose: bool = True,
) -> pd.DataFrame:
    """Prune each model of ``cases`` to its target and time it against the unpruned model.

    A target is a fraction of the baseline MACs (float) or an absolute count (``"1.77G"``).
    One row per case and batch size: ``model``, ``target``, ``target_macs``, ``strategy``
    (JSON, with the solved ratio), ``pruning_ratio``, ``base_macs``, ``macs``, ``mac_fraction``, ``prune_s``,
    ``device``, ``threads``, ``repeats``, ``warmup``, ``mac_ratio`` and the benchmark row
    (``batch_size``, ``latency_ms``, ``baseline_latency_ms``, ``speedup_median``,
    ``speedup_min``, ``speedup_max``, ``efficiency``, ...; see :class:`BenchmarkResult`).
    """
    strategy = strategy or Strategy()
    rows = []
    for name, target in cases:
        torch.manual_seed(0)
        model = create_model(name)
        x = torch.randn(*input_size, generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = get_plan(model, x)
            target_macs = int(round(target * plan.base_macs)) if isinstance(target, float) else parse_macs(target)
            fit = fit_to_budget(model, strategy, target_macs, x, plan=plan)
            result = fit.prune()
        prune_s = time.perf_counter() - t0
        bench = benchmark(result.model, input_size, baseline=model, device=device, batch_sizes=batch_sizes,
                          threads=threads, warmup=warmup, repeats=repeats, channels_last=channels_last,
                          onnx=onnx, progress=progress)
        if verbose:
            print(f"{name} -> {target_label(target)}: ratio {fit.ratio:.4f}, "
                  f"{100 * result.macs / result.base_macs:.1f}% of the MACs; {bench.summary()}")
        for r in bench.rows:
            rows.append({
                "model": name, "target": target_label(target), "target_macs": target_macs,
                "strategy": fit.strategy.to_json(), "pruning_ratio": round(fit.ratio, 6),
                "base_macs": int(result.base_macs), "macs": int(result.macs),
                "mac_fraction": round(result.macs / result.base_macs, 4), "prune_s": round(prune_s, 1),
                "device": bench.device, "threads": bench.threads, "repeats": bench.repeats,
                "warmup": bench.warmup, "mac_ratio": bench.mac_ratio, **r,
            })
        del model, result, plan, fit
    return pd.DataFrame(rows)


def plot_speedup_vs_macs(speed: pd.DataFrame, title: str | None = None) -> Any:
    """Median speedup (min-max bars) against the MAC ratio, per model and batch size."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    lim = max(speed["mac_ratio"].max(), speed["speedup_max"].max()) * 1.1
    ax.plot([1, lim], [1, lim], ls=":", color="grey", label="speedup = MAC ratio")
    for (name, bs), g in speed.groupby(["model", "batch_size"]):
        ax.errorbar(g["mac_ratio"], g["speedup_median"],
                    yerr=[g["speedup_median"] - g["speedup_min"], g["speedup_max"] - g["speedup_median"]],
                    fmt="o", capsize=3, label=f"{name}, batch {bs}")
    ax.axhline(1, color="k", lw=0.6)
    ax.set_xlabel("MAC reduction (baseline MACs / pruned MACs)")
    ax.set_ylabel("latency speedup (median, min–max)")
    device = ", ".join(dict.fromkeys(speed["device"].astype(str)))
    ax.set_title(title or f"Pruned to the paper's targets: speedup vs MAC reduction ({device})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
