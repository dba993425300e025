"""Proxy noise and the incumbent: is a revision's score better than the strategy it built on?

* noise: :func:`score_se` (standard error of a top-1 percentage on ``n`` images),
  :func:`record_se` (that of a history record), :func:`beats` and :func:`verdict` (is a
  score better than the incumbent's by more than ``k`` standard errors);
* the incumbent: :func:`replay` walks the scored revisions in order and keeps a candidate
  (makes it the strategy to build on) only when it :func:`beats` the incumbent of its time;
  :func:`incumbent_revision` is the last one kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Scored images assumed when a record says neither ``score_se`` nor ``eval_images``.
DEFAULT_EVAL_IMAGES = 512
#: A candidate is kept when it beats the incumbent by more than this many standard errors.
NOISE_K = 2.0


# --- noise ----------------------------------------------------------------------------------------
def score_se(score_pct: float, n_images: int = DEFAULT_EVAL_IMAGES) -> float:
    """Standard error of a top-1 percentage measured on ``n_images``: ``sqrt(p(1-p)/n) * 100``.

    A score outside [0, 100] is not a percentage: there is no noise model for it and the
    standard error is 0 (any improvement then counts). E.g. ``score_se(80, 512) == 1.77``.
    """
    p = float(score_pct)
    n = int(n_images) if n_images else DEFAULT_EVAL_IMAGES
    if not math.isfinite(p) or not 0.0 <= p <= 100.0 or n < 1:
        return 0.0
    q = p / 100.0
    return math.sqrt(q * (1.0 - q) / n) * 100.0


def record_se(record: dict, default_images: int = DEFAULT_EVAL_IMAGES) -> float:
    """The standard error of a record's score: its ``score_se``, else :func:`score_se` of its
    ``score`` on its ``eval_images`` (``default_images`` when absent)."""
    se = record.get("score_se")
    if isinstance(se, (int, float)) and not isinstance(se, bool) and math.isfinite(se) and se >= 0:
        return float(se)
    if record.get("score") is None:
        return 0.0
    n = record.get("eval_images")
    n = int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) and n >= 1 else default_images
    return score_se(float(record["score"]), n)


def beats(score: float, incumbent: float, se: float, k: float = NOISE_K) -> bool:
    """True when ``score - incumbent > k * se`` (with ``se == 0``: any improvement)."""
    return float(score) - float(incumbent) > k * float(se)


def verdict(score: float, incumbent: float, se: float, k: float = NOISE_K) -> str:
    """``"kept: +3.1 > 2·SE 2.0"``, ``"not kept: +0.8 within noise (2·SE 2.0)"`` or
    ``"not kept: -4.4 worse (2·SE 2.0)"``."""
    d, band = float(score) - float(incumbent), k * float(se)
    if beats(score, incumbent, se, k):
        return f"kept: {d:+.3g} > {k:g}·SE {band:.3g}"
    if d < -band:
        return f"not kept: {d:+.3g} worse ({k:g}·SE {band:.3g})"
    return f"not kept: {d:+.3g} within noise ({k:g}·SE {band:.3g})"


# --- the incumbent ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One revision as the exploration sees it.

    ``parent`` is the incumbent's revision when this one ran (None before any was scored);
    ``outcome`` is ``"reference"`` (the first score), ``"kept"``, ``"noise"`` (within
    ``k`` SE), ``"worse"`` (more than ``k`` SE below), ``"failed"`` (error, or out of band),
    or ``"pending"`` (not scored yet: an out-of-band attempt whose ratio is being corrected,
    or an in-band one without a score).
    """

    revision: int
    parent: int | None
    outcome: str
    score: float | None = None
    delta: float | None = None
    se: float = 0.0
    text: str = ""


def replay(
    records: Sequence[dict], k: float = NOISE_K, default_images: int = DEFAULT_EVAL_IMAGES, solve_budget: bool = True
) -> list[Step]:
    """Each revision's :class:`Step`, in order (revision records only).

    The first scored in-band record is the reference incumbent; a later one replaces the
    incumbent only when it :func:`beats` it by more than ``k`` standard errors of the
    incumbent's score (:func:`record_se`). A record with an ``error`` failed; an
    out-of-band one failed when ``solve_budget`` (the solver could not reach the band),
    otherwise it is pending (the proposer corrects the ratio next).
    """
    steps: list[Step] = []
    inc: dict | None = None
    for r in records:
        if r.get("type", "revision") != "revision":
            continue
        rev = int(r.get("revision", len(steps) + 1))
        parent = int(inc["revision"]) if inc is not None else None
        if r.get("error") or not _finite(r.get("score")):
            why = r.get("error") or "non-finite score"
            steps.append(Step(rev, parent, "failed", text=f"failed: {str(why)[:120]}"))
            continue
        if not r.get("in_band"):
            out = "failed" if solve_budget else "pending"
            steps.append(Step(rev, parent, out, text="out of band" if solve_budget else "out of band: correct the ratio"))
            continue
        if r.get("score") is None:
            steps.append(Step(rev, parent, "pending", text="in band, not scored"))
            continue
        score = float(r["score"])
        if inc is None:
            steps.append(Step(rev, None, "reference", score, se=record_se(r, default_images), text="reference"))
            inc = r
            continue
        ref, se = float(inc["score"]), record_se(inc, default_images)
        d = score - ref
        outcome = "kept" if beats(score, ref, se, k) else ("worse" if d < -k * se else "noise")
        steps.append(Step(rev, parent, outcome, score, d, se, verdict(score, ref, se, k)))
        if outcome == "kept":
            inc = r
    return steps


def _finite(score) -> bool:
    """True for no score or a finite number (an old history may hold NaN from a failed evaluation)."""
    return score is None or (isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score))


def incumbent_revision(records: Sequence[dict], k: float = NOISE_K, default_images: int = DEFAULT_EVAL_IMAGES) -> int | None:
    """The revision of the current incumbent (last kept, else the reference), or None."""
    found = None
    for s in replay(records, k, default_images):
        if s.outcome in ("reference", "kept"):
            found = s.revision
    return found


__all__ = [
    "DEFAULT_EVAL_IMAGES",
    "NOISE_K",
    "Step",
    "beats",
    "incumbent_revision",
    "record_se",
    "replay",
    "score_se",
    "verdict",
]
