"""The Master agent's decisions: pure functions of the recorded revision history.

Every decision of a search (has it diverged? which revision is best? should it stop? is a
proposal new?) is computed from the revision records alone, so that a search resumed from
its JSONL history decides exactly as the uninterrupted one would. :func:`default_revision_budget`
and :func:`default_patience` size a search whose budget is not given.
"""

from __future__ import annotations

import json
import math

from .incumbent import DEFAULT_EVAL_IMAGES, incumbent_revision


def check_divergence(errors_pct: list[float]) -> str | None:
    """Divergence of the last three out-of-band errors (percent), or None.

    * not shrinking: ``|e3| >= |e2| >= |e1|``;
    * sign oscillation: the signs alternate and ``|e3| > |e1| / 2`` (not halving).
    """
    if len(errors_pct) < 3:
        return None
    e1, e2, e3 = errors_pct[-3:]
    if abs(e3) >= abs(e2) >= abs(e1):
        return f"error not shrinking over 3 revisions ({e1:+.2f}%, {e2:+.2f}%, {e3:+.2f}%)"
    if e1 * e2 < 0 and e2 * e3 < 0 and abs(e3) > 0.5 * abs(e1):
        return f"sign oscillation over 3 revisions ({e1:+.2f}%, {e2:+.2f}%, {e3:+.2f}%)"
    return None


def recent_out_of_band_errors(revs: list[dict]) -> list[float]:
    """Errors of the trailing run of measured, out-of-band revisions (an in-band one resets it)."""
    out: list[float] = []
    for r in revs:
        if r.get("in_band"):
            out = []
        elif r.get("error_pct") is not None:
            out.append(float(r["error_pct"]))
    return out


def best_revision(revs: list[dict]) -> dict | None:
    """The best record: in band with the highest score (earliest on ties), else the closest.

    A failed revision (``error``, e.g. a non-finite score) is never the best."""
    revs = [r for r in revs if not r.get("error") and _finite_or_none(r.get("score"))]
    in_band = [r for r in revs if r.get("in_band")]
    if in_band:
        return max(
            in_band,
            key=lambda r: (r["score"] if r.get("score") is not None else -math.inf, -r["revision"]),
        )
    measured = [r for r in revs if r.get("achieved_macs")]
    if not measured:
        return None
    return min(measured, key=lambda r: (abs(r["error_pct"]), r["revision"]))


def _finite_or_none(score) -> bool:
    """True for no score or a finite number (NaN and infinities are failed evaluations)."""
    return score is None or (isinstance(score, (int, float)) and math.isfinite(score))


def best_record(revs: list[dict], *, scored: bool, default_images: int = DEFAULT_EVAL_IMAGES) -> dict | None:
    """The revision a search reports as its best.

    With an evaluator (``scored``) the incumbent of the noise-aware replay
    (:func:`~agentic_toolkit.agents.incumbent.incumbent_revision`: the first scored
    in-band candidate, replaced only by one that beats it by more than 2 standard errors),
    not the raw maximum, which over many noisy candidates is biased upward. Standard errors
    come from each record's ``score_se`` / ``eval_images`` (``default_images`` when absent;
    a score outside 0..100 has none, so any improvement counts). Without an evaluator, or
    before any candidate is scored: :func:`best_revision`.
    """
    if scored:
        inc = incumbent_revision(revs, default_images=default_images)
        if inc is not None:
            return next(r for r in revs if r.get("revision") == inc)
    return best_revision(revs)


def stop_reason(
    revs: list[dict], *, max_revisions: int, has_evaluator: bool, patience: int,
    default_images: int = DEFAULT_EVAL_IMAGES, since: int = 0,
) -> str | None:
    """Why the search should stop after these revisions, or None to go on.

    With an evaluator, ``patience`` counts the revisions since the last kept move (the
    incumbent of :func:`best_record`), or since revision ``since`` when that is later (a
    search extended after ``since`` revisions, :mod:`~agentic_toolkit.agents.extension`,
    which also lifts a stop written into revision ``since`` or before).
    """
    if not revs:
        return None
    last = revs[-1]
    if last.get("stop") and last["revision"] > since:
        return last["stop"]
    in_band = [r for r in revs if r.get("in_band")]
    if in_band and not has_evaluator:
        return "converged"
    if in_band and has_evaluator and best_record(revs, scored=True, default_images=default_images) is not None:
        best = best_record(revs, scored=True, default_images=default_images)
        after = [r for r in revs if r["revision"] > max(best["revision"], since)]
        if len(after) >= patience:
            return f"converged; no kept move in the last {patience} revision(s)"
    if len(revs) >= max_revisions:
        return "converged; max revisions reached" if in_band else "max revisions reached without a candidate in band"
    return None


def takeover_active(revs: list[dict]) -> bool:
    """True once a revision handed the remaining revisions to the analyst.

    The decision is written on the revision where the language model diverged (its
    ``handover`` field), so a search resumed right after that revision replays it exactly.
    """
    return any(r.get("handover") for r in revs)


def proposer_label(record: dict) -> str:
    """Who proposed a revision, and why when it was not the backend: ``analyst (fallback)``..."""
    proposer = str(record.get("proposer") or record.get("backend") or "?")
    if record.get("takeover"):
        return f"{proposer} (takeover)"
    if record.get("fallback"):
        return f"{proposer} (fallback)"
    if record.get("llm_proposed") is not None:
        return f"{proposer} (repeat)"
    return proposer


def proposal_key(strategy: dict | None, solve_budget: bool) -> str | None:
    """What makes two proposals the same: everything, or everything but the ratio when it is solved."""
    if strategy is None:
        return None
    return json.dumps({k: v for k, v in strategy.items() if not (solve_budget and k == "pruning_ratio")}, sort_keys=True)


# --- revision budgets ---------------------------------------------------------------------------
def default_revision_budget(
    seconds_per_candidate: float | None, time_budget_s: float = 900.0, most: int = 25, least: int = 5
) -> int:
    """Revisions worth running when one candidate (prune + score) costs ``seconds_per_candidate``.

    ``time_budget_s / seconds`` clipped to ``[least, most]``: 25 when a candidate costs
    seconds, 15 at a minute, 5 from three minutes up; ``most`` when the cost is unknown.
    """
    s = seconds_per_candidate
    if s is None or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
        return int(most)
    return int(max(least, min(most, math.floor(time_budget_s / float(s)))))


def default_patience(max_revisions: int) -> int:
    """Revisions without a kept move before the search stops: a third of the budget, at least 3.

    (One round of the analyst's first probes -- each scope, criterion and grouping once --
    takes about that many revisions on a CNN with a handful of scopes.)
    """
    return max(3, math.ceil(int(max_revisions) / 3))


__all__ = [
    "best_record",
    "best_revision",
    "check_divergence",
    "default_patience",
    "default_revision_budget",
    "proposal_key",
    "proposer_label",
    "recent_out_of_band_errors",
    "stop_reason",
    "takeover_active",
]
