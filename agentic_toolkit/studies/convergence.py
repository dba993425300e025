"""Reproducible experiment drivers shared by benchmarks/ scripts and notebooks.

:func:`convergence_study` is the paper's convergence experiment: how many revisions each
proposer needs to land in the MAC band, with ``solve_budget`` off (the proposer's ratio is
used as is, the paper's setting) and on (``fit_to_budget`` sets it). The plots are drawn
from the written tables (:func:`plot_error_trajectories`, :func:`plot_success_rate`), so
notebook 04 can restyle a figure without re-running the study.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..agents.master import run_agentic_pruning
from ..models import create_model
from ..pruning.apply import get_plan
from ..units import format_macs, parse_macs
from .paper import PAPER_MODELS, PAPER_TARGETS

FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7)
#: Line colour per backend in the plots.
BACKEND_COLORS = {"grid": "tab:orange", "analyst": "tab:blue", "anthropic": "tab:purple", "openai": "tab:green"}


def study_targets(model: str, fractions: Sequence[float] = FRACTIONS, smoke: bool = False) -> list[tuple[str, float | str]]:
    """(label, target) pairs: fractions of the baseline, then the paper's absolute targets."""
    targets: list[tuple[str, float | str]] = [(f"{round(f * 100)}%", f) for f in fractions]
    targets += [(t, t) for t in PAPER_TARGETS.get(model, ())]
    return [targets[len(targets) // 2], targets[-1]] if smoke and len(targets) > 2 else targets


def convergence_study(
    models: Iterable[str] = PAPER_MODELS,
    backends: Sequence[str] = ("grid", "analyst"),
    *,
    fractions: Sequence[float] = FRACTIONS,
    solve_budget_modes: Sequence[bool] = (False, True),
    tolerance: tuple[float, float] = (1.0, 5.0),
    max_revisions: int = 5,
    input_size: tuple[int, ...] = (1, 3, 224, 224),
    smoke: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every model x target x solve_budget x backend search (MACs only, no evaluator).

    Models are random-init (seed 0); one pruning plan per model is shared by its searches.
    Returns one row per search with the per-revision ratios and errors as JSON lists.
    """
    models = list(models)
    jobs = {m: study_targets(m, fractions, smoke) for m in models}
    total = sum(len(t) for t in jobs.values()) * len(backends) * len(solve_budget_modes)
    rows = []
    with tqdm(total=total, desc="convergence", unit="search", disable=not progress) as bar:
        for name, targets in jobs.items():
            torch.manual_seed(0)
            model = create_model(name)
            x = torch.randn(*input_size, generator=torch.Generator().manual_seed(0))
            plan = get_plan(model, x)
            base = int(plan.base_macs)
            for label, target in targets:
                target_macs = int(round(target * base)) if isinstance(target, float) else parse_macs(target)
                for solve_budget in solve_budget_modes:
                    for backend in backends:
                        t0 = time.perf_counter()
                        res = run_agentic_pruning(
                            model, target_macs, x, tolerance=tolerance, max_revisions=max_revisions,
                            backend=backend, solve_budget=solve_budget, progress=False, model_name=name, plan=plan,
                        )
                        revs = res.records
                        rows.append({
                            "model": name, "target": label, "target_macs": target_macs,
                            "target_fraction": round(target_macs / base, 4), "base_macs": base,
                            "backend": backend, "solve_budget": solve_budget, "converged": res.converged,
                            "revisions": res.revisions, "first_in_band": res.first_in_band,
                            "achieved_macs": res.macs,
                            "error_pct": None if res.error_pct is None else round(res.error_pct, 4),
                            "stop_reason": res.stop_reason,
                            "fallbacks": sum(bool(r.get("fallback")) for r in revs),
                            "ratios": json.dumps([(r.get("strategy") or {}).get("pruning_ratio") for r in revs]),
                            "errors_pct": json.dumps(
                                [None if r.get("error_pct") is None else round(r["error_pct"], 4) for r in revs]
                            ),
                            "wall_s": round(time.perf_counter() - t0, 2),
                        })
                        bar.update(1)
                        bar.set_postfix_str(f"{name} {label} {backend} -> {format_macs(res.macs or 0)}", refresh=False)
            del model, plan
    return pd.DataFrame(rows)


def summarise_convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Success rate and revisions per backend and solve_budget setting."""
    rows = []
    for (backend, sb), g in df.groupby(["backend", "solve_budget"], sort=False):
        ok = g[g["converged"]]
        rows.append({
            "backend": backend,
            "solve_budget": sb,
            "cases": len(g),
            "success_rate_%": round(100 * len(ok) / len(g), 1),
            "mean_revisions_converged": round(ok["first_in_band"].mean(), 2) if len(ok) else None,
            "max_revisions_converged": int(ok["first_in_band"].max()) if len(ok) else None,
            "mean_revisions_all": round(g["revisions"].mean(), 2),
        })
    return pd.DataFrame(rows)


def error_trajectories(df: pd.DataFrame) -> pd.DataFrame:
    """Long table (one row per search revision) of the MAC error, for trajectory plots."""
    rows = []
    for _, r in df.iterrows():
        for i, err in enumerate(json.loads(r["errors_pct"]), start=1):
            rows.append({"model": r["model"], "target": r["target"], "backend": r["backend"],
                         "solve_budget": r["solve_budget"], "revision": i, "error_pct": err})
    return pd.DataFrame(rows)


def read_study(path) -> pd.DataFrame:
    """A study table written by :func:`convergence_study` (``solve_budget`` and ``converged`` as bools)."""
    df = pd.read_csv(path)
    for col in ("solve_budget", "converged"):
        if col in df and df[col].dtype != bool:
            df[col] = df[col].astype(str).str.lower().eq("true")
    return df


def plot_error_trajectories(study: pd.DataFrame, tolerance: tuple[float, float] = (1.0, 5.0),
                            max_revisions: int = 5) -> Any:
    """Two panels (solve_budget off / on): each search's MAC error after each revision."""
    import matplotlib.pyplot as plt

    traj = error_trajectories(study)
    backends = list(dict.fromkeys(study["backend"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, sb in zip(axes, (False, True), strict=True):
        part = traj[traj["solve_budget"] == sb]
        ax.axhspan(-tolerance[1], tolerance[0], color="tab:green", alpha=0.15, label="band")
        for (_model, _target, backend), g in part.groupby(["model", "target", "backend"]):
            ax.plot(g["revision"], g["error_pct"], "o-", color=BACKEND_COLORS.get(backend, "grey"),
                    alpha=0.5, ms=3, lw=1)
        for backend in backends:
            ax.plot([], [], "o-", color=BACKEND_COLORS.get(backend, "grey"), label=backend)
        ax.set_yscale("symlog", linthresh=5, linscale=1.5)
        ax.set_yticks([-50, -20, -5, 0, 1, 5, 20, 50, 100, 200])
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+g}" if v else "0"))
        ax.minorticks_off()
        ax.set_xlabel("revision")
        ax.set_title(f"solve_budget={sb}: " + ("proposer's ratio as is (paper)" if not sb else "ratio solved exactly"))
        ax.set_xticks(range(1, max_revisions + 1))
    axes[0].set_ylabel("MAC error vs target (%, symlog)")
    axes[0].legend(loc="upper right", fontsize=8)
    cases = len(study.drop_duplicates(["model", "target"]))
    fig.suptitle(f"Error trajectories, {cases} cases × {len(backends)} backends "
                 f"(band +{tolerance[0]:g}% / −{tolerance[1]:g}%)")
    fig.tight_layout()
    return fig


def plot_success_rate(summary: pd.DataFrame, max_revisions: int = 5) -> Any:
    """Bars: share of searches in band per backend, ratio as proposed vs solved."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 3.2))
    plot_df = summary.assign(setting=summary["solve_budget"].map({False: "ratio as proposed", True: "ratio solved"}))
    sns.barplot(data=plot_df, x="backend", y="success_rate_%", hue="setting", ax=ax)
    for c in ax.containers:
        ax.bar_label(c, fmt="%.0f%%", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("searches in band (%)")
    ax.set_title(f"Convergence within {max_revisions} revisions")
    fig.tight_layout()
    return fig
