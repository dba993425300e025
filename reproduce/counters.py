"""MAC counters compared: agreement with fvcore, torch-pruning and the paper, and speed.

Shared by ``benchmarks/bench_profile.py`` (:func:`profiling_speed`: fvcore's time / ours)
and notebook 01 (:func:`counter_agreement` and the plots, which are drawn from the table of
:func:`agentic_toolkit.profiling.mac_breakdown`). Both time the counters with :func:`time_counters`: one
warm-up call, then the best of ``repeat`` calls, on the same random-init model.
fvcore's time covers ``FlopCountAnalysis(...).by_operator()`` on a copy with attention
un-fused (the copy is made before timing); ours covers ``profile_macs`` end to end.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from agentic_toolkit.models import create_model
from agentic_toolkit.profiling import MacProfile, profile_macs
from agentic_toolkit.profiling.reference_counters import fvcore_macs, torch_pruning_macs

from .paper import IMAGENET_INPUT, PAPER_BASELINE_GMACS, PAPER_MODELS

#: Models of the profiling benchmark (the paper's four).
SPEED_MODELS = PAPER_MODELS


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """One warm-up call, then the smallest wall time of ``repeat`` calls, and the last result."""
    result = fn()
    times = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def _unfused(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model)
    for m in out.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return out


def time_counters(model: nn.Module, x: torch.Tensor, repeat: int = 3) -> dict[str, Any]:
    """Best times and counts of fvcore (same operators) and of ``profile_macs``.

    Returns ``fvcore_s``, ``ours_s``, ``fvcore_macs``, ``ours_macs`` and ``profile`` (our
    :class:`MacProfile`).
    """
    unfused = _unfused(model)
    t_fv, fv = best_time(lambda: fvcore_macs(unfused, x, unfuse_attention=False), repeat)
    t_ours, prof = best_time(lambda: profile_macs(model, input_size=tuple(x.shape)), repeat)
    return {"fvcore_s": t_fv, "ours_s": t_ours, "fvcore_macs": int(fv), "ours_macs": int(prof.total_macs),
            "profile": prof}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name)


def profiling_speed(models: Iterable[str] = SPEED_MODELS, repeat: int = 5,
                    input_size: tuple[int, ...] = IMAGENET_INPUT) -> pd.DataFrame:
    """fvcore's time / ours per model (random init, seed 0), with both counts.

    Columns: ``model``, ``input``, ``repeat``, ``fvcore_ms``, ``ours_ms``, ``ratio``
    (fvcore / ours), ``fvcore_macs``, ``ours_macs``, ``counts_equal``.
    """
    x = torch.randn(*input_size, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in models:
        t = time_counters(_model(name), x, repeat)
        rows.append({
            "model": name, "input": "x".join(map(str, input_size)), "repeat": repeat,
            "fvcore_ms": round(1e3 * t["fvcore_s"], 2), "ours_ms": round(1e3 * t["ours_s"], 2),
            "ratio": round(t["fvcore_s"] / t["ours_s"], 2),
            "fvcore_macs": t["fvcore_macs"], "ours_macs": t["ours_macs"],
            "counts_equal": t["fvcore_macs"] == t["ours_macs"],
        })
    return pd.DataFrame(rows)


def counter_agreement(models: Iterable[str] = PAPER_MODELS, input_size: tuple[int, ...] = IMAGENET_INPUT,
                      paper_gmacs: Mapping[str, float] = PAPER_BASELINE_GMACS,
                      repeat: int = 1) -> tuple[pd.DataFrame, dict[str, MacProfile]]:
    """Our count against fvcore (same operators), the paper's baselines and torch-pruning's
    ``count_ops_and_params`` (and our ``torch_pruning`` convention, which should equal it).

    Returns the table (one row per model, with both counters' times as in
    :func:`time_counters`) and each model's :class:`MacProfile`.
    """
    x = torch.randn(*input_size, generator=torch.Generator().manual_seed(0))
    rows, profiles = [], {}
    for name in models:
        model = _model(name)
        t = time_counters(model, x, repeat)
        prof = profiles[name] = t["profile"]
        ours, fv = t["ours_macs"], t["fvcore_macs"]
        paper = paper_gmacs.get(name)
        rows.append({
            "model": name,
            "ours_macs": ours,
            "fvcore_same_ops": fv,
            "ours_vs_fvcore_pct": 100 * (ours - fv) / fv,
            "paper_gmacs": paper,
            "ours_vs_paper_pct": 100 * (ours / 1e9 - paper) / paper if paper else None,
            "torch_pruning_count": torch_pruning_macs(model, x),
            "ours_torch_pruning_convention": profile_macs(model, x, convention="torch_pruning").total_macs,
            "params": prof.params,
            "ours_ms": 1e3 * t["ours_s"],
            "fvcore_ms": 1e3 * t["fvcore_s"],
        })
    return pd.DataFrame(rows), profiles


# ----------------------------------------------------------------------------- plots (from the tables)


def plot_mac_by_stage(breakdown: pd.DataFrame) -> Any:
    """One panel per model: share of MACs per stage (stages with MACs only)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    models = list(dict.fromkeys(breakdown["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        stages = breakdown.query("model == @name and kind == 'stage' and macs > 0")
        ax.barh(stages["group"], 100 * stages["share"], color=sns.color_palette("crest", len(stages)))
        ax.invert_yaxis()
        ax.set_xlabel("share of MACs (%)")
        ax.set_title(f"{name}\n{stages['total_macs'].iloc[0] / 1e9:.2f} GMACs", fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
    shape = breakdown["input"].iloc[0].replace("x", "×")
    fig.suptitle(f"Where the MACs are: share per stage ({shape})")
    fig.tight_layout()
    return fig


def plot_mac_by_type(breakdown: pd.DataFrame) -> Any:
    """Grouped bars: GMACs per layer type and model."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    by_type = breakdown.query("kind == 'type' and macs > 0").rename(columns={"group": "type"})
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(data=by_type.assign(gmacs=by_type["macs"] / 1e9), y="model", x="gmacs", hue="type", ax=ax, orient="h")
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("")
    ax.set_title("MACs by layer type (Attention = Q·Kᵀ and A·V matmuls)")
    ax.legend(title="layer type", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
