"""Plots shared by the notebooks, the budget panel and the result objects (matplotlib).

Every function takes a table (a pandas DataFrame, e.g. read back from a notebook's CSV),
draws on ``ax`` (a new figure when None) and returns the figure.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator


def plot_convergence(
    frame, tolerance: tuple[float, float], ax=None, title: str | None = None, score: bool = True
):
    """MAC error vs revision with the tolerance band shaded; returns the figure.

    ``frame`` needs the columns ``revision`` and ``error_pct`` (percent vs the target), as in
    :func:`~agentic_toolkit.agents.history.history_frame` or ``SearchResult.to_frame()``.
    With ``score`` and a ``score`` column holding values, the scores are drawn on a second
    axis on the right.
    """
    over, under = tolerance
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.axhspan(-under, over, color="tab:green", alpha=0.15, label=f"band (+{over:g}% / -{under:g}%)")
    ax.axhline(0, color="k", lw=0.8)
    handles = []
    if len(frame):
        errors = pd.to_numeric(frame["error_pct"], errors="coerce")  # None (not measured) -> NaN
        handles += ax.plot(frame["revision"], errors, "o-", color="tab:blue", label="achieved")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("revision")
    ax.set_ylabel("MAC error vs target (%)")
    ax.set_title(title or "Agent search: MAC error per revision")
    scores = _scores(frame) if score else []
    if scores:
        twin = ax.twinx()
        revs, vals = zip(*scores, strict=True)
        handles += twin.plot(revs, vals, "s", color="tab:orange", label="score")
        twin.set_ylabel("score (higher is better)")
    band, labels = ax.get_legend_handles_labels()
    ax.legend(band[:1] + handles, labels[:1] + [h.get_label() for h in handles], loc="best", fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def _scores(frame) -> list[tuple[int, float]]:
    """(revision, score) pairs with a finite score."""
    if "score" not in frame:
        return []
    out = []
    for rev, val in zip(frame["revision"], frame["score"], strict=True):
        try:
            val = float(val)
        except (TypeError, ValueError):
            continue
        if math.isfinite(val):
            out.append((int(rev), val))
    return out


__all__ = ["plot_convergence"]
