"""Exploring strategy shapes: proxy noise, the incumbent, model keys and revision budgets.

Pure helpers shared by the offline analyst (:mod:`.backends.analyst`) and the Master loop:

* noise: :func:`score_se` (standard error of a top-1 percentage on ``n`` images),
  :func:`record_se` (that of a history record), :func:`beats` and :func:`verdict` (is a
  score better than the incumbent's by more than ``k`` standard errors);
* the incumbent: :func:`replay` walks the scored revisions in order and keeps a candidate
  (makes it the strategy to build on) only when it :func:`beats` the incumbent of its time;
  :func:`incumbent_revision` is the last one kept;
* model identity: :func:`widths_key` hashes a plan's per-group kept widths for a strategy
  at its (solved) ratio, :func:`cuts_key` the exact channels cut; :func:`shape_key` is a
  strategy without its ratio (what the budget solver does not change);
* moves (the analyst's rules, see :mod:`.backends.analyst`): :func:`classify` names what one
  revision changed of its incumbent (a :class:`Trial`), :func:`scope_moves` and
  :func:`structural_moves` turn the trials into candidate :class:`Move` s;
* budgets: :func:`default_revision_budget` (revisions worth running for a candidate cost)
  and :func:`default_patience`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..pruning.strategy import MULTIPLIER_RANGE

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
        if r.get("error"):
            steps.append(Step(rev, parent, "failed", text=f"failed: {str(r['error'])[:120]}"))
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


def incumbent_revision(records: Sequence[dict], k: float = NOISE_K, default_images: int = DEFAULT_EVAL_IMAGES) -> int | None:
    """The revision of the current incumbent (last kept, else the reference), or None."""
    found = None
    for s in replay(records, k, default_images):
        if s.outcome in ("reference", "kept"):
            found = s.revision
    return found


# --- keys ----------------------------------------------------------------------------------------------
def shape_key(strategy) -> str:
    """A strategy (Strategy or dict) without ``pruning_ratio``, as canonical JSON.

    Multipliers equal to 1 are dropped (they change nothing) and the rest rounded to 4
    decimals, so two shapes the budget solver treats alike give the same key.
    """
    d = strategy.to_dict() if hasattr(strategy, "to_dict") else dict(strategy)
    d.pop("pruning_ratio", None)
    mult = {str(k): round(float(v), 4) for k, v in (d.get("multipliers") or {}).items()}
    d["multipliers"] = {k: v for k, v in sorted(mult.items()) if abs(v - 1.0) > 1e-9}
    return json.dumps(d, sort_keys=True)


def solved_shape_key(strategy, kind_scopes, stage_scopes=()) -> str:
    """:func:`shape_key` up to what the budget solver absorbs.

    Every prunable group carries exactly one *kind* tag (``residual``, ``stem``, ``head``,
    ``<block>.inner``, ``attn.head_dim``...: the scopes whose table kind is neither
    ``stage`` nor ``heads``), so scaling all of ``kind_scopes``' multipliers by one factor
    only rescales the ratio the solver finds: same widths, same model. The same holds for
    ``stage_scopes`` when every group has a stage tag (pass them only then). Each family's
    multipliers are divided by that of its first scope (sorted) before hashing. Not applied
    when the strategy prunes whole heads (``attn.heads``), whose ratio the kinds do not scale.
    """
    d = strategy.to_dict() if hasattr(strategy, "to_dict") else dict(strategy)
    mult = {str(k): float(v) for k, v in (d.get("multipliers") or {}).items()}
    if "attn.heads" not in mult:
        for family in (sorted(set(kind_scopes)), sorted(set(stage_scopes))):
            if family:
                ref = mult.get(family[0], 1.0)
                for k in family:
                    mult[k] = mult.get(k, 1.0) / ref
    return shape_key({**d, "multipliers": mult})


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _selection(plan, strategy, selection):
    from ..pruning.strategy import Strategy

    if not isinstance(strategy, Strategy):
        strategy = Strategy.from_dict(dict(strategy))
    return strategy, (selection if selection is not None else plan.select(strategy))


def widths_key(plan, strategy, selection=None) -> str:
    """Hash of ``plan``'s per-group kept channel counts for ``strategy`` at its ratio.

    ``strategy`` is a Strategy or a history record's ``strategy`` dict (with the solved
    ratio); pass ``selection`` (e.g. ``BudgetFit.selection``) to skip ``plan.select``. Two
    strategies with the same key give models of the same widths and MACs (the channels
    kept may still differ when the importance criterion differs: see :func:`cuts_key`).
    """
    _, sel = _selection(plan, strategy, selection)
    removed = plan.removed_channels(sel)
    kept = [[i, plan.groups[i].channels - removed[i]] for i in sorted(removed)]
    return _digest(kept)


def cuts_key(plan, strategy, selection=None) -> str:
    """Hash of the exact root channels every group loses: equal keys, identical pruned models."""
    strategy, sel = _selection(plan, strategy, selection)
    roots = plan.root_indices(sel, strategy)
    return _digest([[i, list(map(int, idx))] for i, idx in sorted(roots.items())])


def fit_widths_key(fit) -> str:
    """:func:`widths_key` of a :class:`~agentic_toolkit.pruning.budget.BudgetFit` (no new selection)."""
    return widths_key(fit.plan, fit.strategy, fit.selection)


# --- moves ----------------------------------------------------------------------------------------------
#: grouping name -> (isomorphic, global_pruning)
GROUPINGS = {"isomorphic": (True, True), "global": (False, True), "uniform": (False, False)}
MIN_MULTIPLIER = 0.05


def grouping_of(shape: dict) -> str:
    """``isomorphic``, ``global`` or ``uniform`` for a strategy dict."""
    if shape.get("isomorphic"):
        return "isomorphic"
    return "global" if shape.get("global_pruning") else "uniform"


def record_shape(record: dict) -> dict | None:
    """A record's strategy dict (applied, else proposed), or None."""
    s = record.get("strategy") or record.get("proposed")
    return dict(s) if isinstance(s, dict) else None


def _mult(shape: dict, scope: str) -> float:
    return float((shape.get("multipliers") or {}).get(scope, 1.0))


def _direction(factor: float) -> str:
    return "protect" if factor < 1.0 else "release"


def _opposite(direction: str) -> tuple[str, float]:
    return ("release", 1.25) if direction == "protect" else ("protect", 0.75)


@dataclass(frozen=True)
class Trial:
    """A scored (or failed) revision that changed one thing of its incumbent."""

    kind: str  # "scope", "importance" or "grouping"
    target: str  # scope name, criterion or grouping
    factor: float  # child / parent multiplier for a scope move, else 1
    step: Step

    def describe(self, before: str = "") -> str:
        if self.kind == "scope":
            return f"{_direction(self.factor)} '{self.target}' x{self.factor:.3g}"
        return f"{self.kind} {self.target}" + (f" (was {before})" if before else "")


def classify(child: dict, parent: dict) -> tuple[str, str, float] | None:
    """``(kind, target, factor)`` when ``child`` changes exactly one thing of ``parent``."""
    if any(child.get(k) != parent.get(k) for k in ("round_to", "ignored", "max_layer_ratio")):
        return None
    changes = []
    if child.get("importance") != parent.get("importance"):
        changes.append(("importance", str(child.get("importance")), 1.0))
    if grouping_of(child) != grouping_of(parent):
        changes.append(("grouping", grouping_of(child), 1.0))
    scopes = set(child.get("multipliers") or {}) | set(parent.get("multipliers") or {})
    for s in sorted(scopes):
        a, b = _mult(parent, s), _mult(child, s)
        if abs(a - b) > 1e-9:
            changes.append(("scope", s, b / a))
    return changes[0] if len(changes) == 1 else None


@dataclass(frozen=True)
class Move:
    """A candidate move from the incumbent; sorted by ``(tier, -gain, order)``."""

    tier: int
    gain: float
    order: int
    kind: str
    target: str
    factor: float
    why: str

    def apply(self, shape: dict) -> dict | None:
        """The moved shape, or None when the move changes nothing (a clamped multiplier)."""
        out = dict(shape)
        if self.kind == "importance":
            out["importance"] = self.target
        elif self.kind == "grouping":
            out["isomorphic"], out["global_pruning"] = GROUPINGS[self.target]
        else:
            mult = dict(shape.get("multipliers") or {})
            old = float(mult.get(self.target, 1.0))
            new = round(min(MULTIPLIER_RANGE[1], max(MIN_MULTIPLIER, old * self.factor)), 4)
            if abs(new - old) < 1e-9:
                return None
            if abs(new - 1.0) < 1e-9:
                mult.pop(self.target, None)
            else:
                mult[self.target] = new
            out["multipliers"] = mult
        return out

    def describe(self, shape: dict) -> str:
        if self.kind == "scope":
            old = _mult(shape, self.target)
            new = round(min(MULTIPLIER_RANGE[1], max(MIN_MULTIPLIER, old * self.factor)), 4)
            return f"{_direction(self.factor)} '{self.target}' x{self.factor:g} (multiplier {old:.4g} -> {new:.4g})"
        was = shape.get("importance") if self.kind == "importance" else grouping_of(shape)
        return f"{self.kind} {self.target} (was {was})"


def scope_moves(scope: str, trials: list[Trial], incumbent: int | None, order: int) -> list[Move]:
    """The moves of one scope, from its trials (oldest first) and the incumbent's revision."""
    local = [t for t in trials if t.step.parent == incumbent]
    bad = {_direction(t.factor) for t in local if t.step.outcome in ("worse", "failed")}
    flat = {_direction(t.factor) for t in local if t.step.outcome == "noise"}
    slopes = [t.step.delta / math.log(t.factor) for t in trials if t.step.delta is not None]
    slope = sum(slopes) / len(slopes) if slopes else 0.0
    moves = []
    if not trials:
        moves.append(Move(2, 0.0, 2 * order, "scope", scope, 0.5, "never moved: probe by protecting it"))
        moves.append(Move(3, 0.0, order, "scope", scope, 1.25, "never moved: probe by releasing it"))
    else:
        last = trials[-1]
        d, delta = _direction(last.factor), last.step.delta
        if last.step.outcome == "kept":
            f = 0.75 if d == "protect" else 1.25
            moves.append(Move(0, delta or 0.0, order, "scope", scope, f, f"{d} paid off ({delta:+.3g}): {d} further"))
        elif last.step.outcome in ("worse", "failed"):
            o, f = _opposite(d)
            cost = f"cost {delta:+.3g}" if delta is not None else "failed"
            moves.append(Move(1, abs(delta or 0.0), order, "scope", scope, f, f"{d} {cost}: {o} it instead"))
        else:
            o, f = _opposite(d)
            moves.append(Move(3, slope * math.log(f), order, "scope", scope, f,
                              f"{d} made no clear difference ({delta:+.3g}): try to {o} it"))
    return [m for m in moves if _direction(m.factor) not in bad and not (m.tier == 3 and _direction(m.factor) in flat)]


def structural_moves(options: list[tuple[str, str]], shape: dict, trials: list[Trial]) -> list[Move]:
    """Importance and grouping moves over ``options`` (``(kind, value)``, in probe order):
    probe the untried values; retry one that was within noise and positive (on a newer
    incumbent; a repeat of the same shape is skipped by the caller)."""
    current = {"importance": shape.get("importance"), "grouping": grouping_of(shape)}
    moves = []
    for k, (kind, v) in enumerate(options):
        if v == current[kind]:
            continue
        mine = [t for t in trials if t.kind == kind and t.target == v]
        if not mine:
            moves.append(Move(2, 0.0, 2 * k + 1, kind, v, 1.0, f"{kind} {v} never tried: probe it"))
        elif all(t.step.outcome == "noise" for t in mine) and (mine[-1].step.delta or 0.0) > 0:
            d = mine[-1].step.delta
            moves.append(Move(3, d, k, kind, v, 1.0, f"{kind} {v} was within noise ({d:+.3g}): retry on the incumbent"))
    return moves


# --- budgets -------------------------------------------------------------------------------------------
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
    "GROUPINGS",
    "Move",
    "Trial",
    "classify",
    "grouping_of",
    "record_shape",
    "scope_moves",
    "structural_moves",
    "DEFAULT_EVAL_IMAGES",
    "NOISE_K",
    "Step",
    "beats",
    "cuts_key",
    "default_patience",
    "default_revision_budget",
    "fit_widths_key",
    "incumbent_revision",
    "record_se",
    "replay",
    "score_se",
    "shape_key",
    "solved_shape_key",
    "verdict",
    "widths_key",
]
