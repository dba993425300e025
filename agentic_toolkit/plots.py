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
    axis on the right, with their standard errors (:func:`score_errors`) as error bars.
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
    integer_axis(ax.xaxis)
    ax.set_xlabel("revision")
    ax.set_ylabel("MAC error vs target (%)")
    ax.set_title(title or "Agent search: MAC error per revision")
    scores = score_errors(frame) if score else []
    if scores:
        twin = ax.twinx()
        revs, vals, ses = zip(*scores, strict=True)
        bars = twin.errorbar(revs, vals, yerr=ses, fmt="s", color="tab:orange", capsize=3, label="score ± SE")
        handles.append(bars)
        twin.set_ylabel("score (higher is better)")
    band, labels = ax.get_legend_handles_labels()
    ax.legend(band[:1] + handles, labels[:1] + [h.get_label() for h in handles], loc="best", fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def integer_axis(axis) -> None:
    """Integer ticks only on ``axis`` (e.g. ``ax.xaxis`` of revisions), even for a single value."""
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def score_errors(frame) -> list[tuple[int, float, float]]:
    """``(revision, score, standard error)`` of the rows with a finite score.

    The error is the row's ``score_se`` (as the search logs it), else the binomial standard
    error of a percentage (a score in 0..100, e.g. top-1) on the row's ``eval_images``, else 0
    (no error bar: the number of scored images is not known).
    """
    if "score" not in frame:
        return []
    out = []
    for _, row in frame.iterrows():
        val = _finite(row.get("score"))
        if val is not None:
            out.append((int(row["revision"]), val, _score_se(val, row)))
    return out


def _score_se(score: float, row) -> float:
    se = _finite(row.get("score_se"))
    if se is not None and se >= 0:
        return se
    n = _finite(row.get("eval_images"))
    if n is None or n < 1 or not 0.0 <= score <= 100.0:
        return 0.0
    q = score / 100.0
    return math.sqrt(q * (1.0 - q) / n) * 100.0


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


__all__ = ["integer_axis", "plot_convergence", "score_errors"]
