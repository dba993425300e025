"""The analyst's moves (see :mod:`.backends.analyst`): what one revision changed of its
incumbent, and which move to try next.

:func:`classify` names what one revision changed of its incumbent (a :class:`Trial`),
:func:`scope_moves` and :func:`structural_moves` turn the trials into candidate
:class:`Move` s; :func:`grouping_of` and :func:`record_shape` read a strategy dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..pruning.strategy import MULTIPLIER_RANGE
from .incumbent import Step

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


def scope_moves(scope: str, trials: list[Trial], incumbent: int | None, order: int,
                slow: bool = False) -> list[Move]:
    """The moves of one scope, from its trials (oldest first) and the incumbent's revision.

    A never-moved scope is probed by protecting it first, unless ``slow`` (its MACs are slow
    on the device under a latency budget): releasing it first then frees latency for fewer
    MACs (:mod:`.latency_view`)."""
    local = [t for t in trials if t.step.parent == incumbent]
    bad = {_direction(t.factor) for t in local if t.step.outcome in ("worse", "failed")}
    flat = {_direction(t.factor) for t in local if t.step.outcome == "noise"}
    slopes = [t.step.delta / math.log(t.factor) for t in trials if t.step.delta is not None]
    slope = sum(slopes) / len(slopes) if slopes else 0.0
    moves = []
    if not trials and slow:
        moves.append(Move(2, 0.0, order, "scope", scope, 1.25,
                          "never moved; its MACs are slow on this device: probe by releasing it"))
        moves.append(Move(3, 0.0, 2 * order, "scope", scope, 0.5, "never moved: probe by protecting it"))
    elif not trials:
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


__all__ = [
    "GROUPINGS",
    "MIN_MULTIPLIER",
    "Move",
    "Trial",
    "classify",
    "grouping_of",
    "record_shape",
    "scope_moves",
    "structural_moves",
]
