"""Figures of the convergence study, drawn from its tables (``data/convergence.csv`` and
``data/04_convergence_summary.csv``), so notebook 04 can restyle them without recomputing."""

from __future__ import annotations

from typing import Any

import pandas as pd

from agentic_toolkit.plots import integer_axis

from .convergence import LLM_BACKEND, error_trajectories

#: Line colour per backend in the plots.
BACKEND_COLORS = {"grid": "tab:orange", "analyst": "tab:blue", LLM_BACKEND: "tab:green",
                  "anthropic": "tab:purple", "openai": "tab:olive"}


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
            n = len(study[(study["backend"] == backend) & (study["solve_budget"] == sb)])
            if n:
                ax.plot([], [], "o-", color=BACKEND_COLORS.get(backend, "grey"), label=f"{backend} ({n})")
        ax.set_yscale("symlog", linthresh=5, linscale=1.5)
        ax.set_yticks([-50, -20, -5, 0, 1, 5, 20, 50, 100, 200])
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+g}" if v else "0"))
        ax.minorticks_off()
        ax.set_xlabel("revision")
        ax.set_title(f"solve_budget={sb}: " + ("proposer's ratio as is (paper)" if not sb else "ratio solved exactly"))
        ax.set_xlim(0.5, max_revisions + 0.5)
        integer_axis(ax.xaxis)
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("MAC error vs target (%, symlog)")
    cases = len(study.drop_duplicates(["model", "target"]))
    fig.suptitle(f"Error trajectories, {cases} model×target cases (number of searches per backend in brackets; "
                 f"band +{tolerance[0]:g}% / −{tolerance[1]:g}%)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_success_rate(summary: pd.DataFrame, max_revisions: int = 5) -> Any:
    """Bars: share of searches in band per backend, ratio as proposed (paper) vs solved; the
    solid part is the share landed by the backend's own proposal, the faint rest the share
    landed by an analyst fallback (an LLM's unusable reply or repeat). A second panel compares
    the backends on the LLM column's cases (when there is one)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if "subset" not in summary:
        summary = summary.assign(subset="all")
    subsets = [s for s in ("all", "LLM cases") if (summary["subset"] == s).any()]
    colors = {False: "tab:blue", True: "tab:orange"}
    labels = {False: "ratio as proposed (paper)", True: "ratio solved"}
    fig, axes = plt.subplots(1, len(subsets), figsize=(6 * len(subsets), 3.6), squeeze=False)
    for ax, subset in zip(axes[0], subsets, strict=True):
        part = summary[summary["subset"] == subset]
        backends = list(dict.fromkeys(part["backend"]))
        for i, backend in enumerate(backends):
            for sb, dx in ((False, -0.2), (True, 0.2)):
                r = part[(part["backend"] == backend) & (part["solve_budget"] == sb)]
                if r.empty:
                    continue
                r = r.iloc[0]
                total = float(r["success_rate_%"])
                own = 100.0 * float(r.get("in_band_by_own_proposal", r["converged"])) / float(r["cases"])
                ax.bar(i + dx, total, 0.38, color=colors[sb], alpha=0.3)
                ax.bar(i + dx, own, 0.38, color=colors[sb])
                text = f"{total:.0f}%" if abs(own - total) < 0.05 else f"{total:.0f}%\n({own:.0f}% own)"
                ax.text(i + dx, total + 1.5, text, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(backends)))
        ax.set_xticklabels([f"{b}\n({int(part[part['backend'] == b]['cases'].max())} cases)" for b in backends])
        ax.set_ylim(0, 122)
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("searches in band (%)")
        ax.set_title(("every case" if subset == "all" else "the local LLM's cases only")
                     + f": in band within {max_revisions} revisions", fontsize=10)
    handles = [Patch(color=colors[sb], label=labels[sb]) for sb in (False, True)]
    handles.append(Patch(color="grey", alpha=0.3, label="landed by an analyst fallback"))
    axes[0][-1].legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    return fig


__all__ = ["BACKEND_COLORS", "plot_error_trajectories", "plot_success_rate"]
