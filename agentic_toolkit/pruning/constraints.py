"""Budget constraints of :func:`~agentic_toolkit.fit_to_budget`: MACs, parameters, latency.

A budget is a dict such as ``{"macs": "1.77G", "params": "15M"}``: each value an absolute
count (``"15M"``, ``1.5e7``) or a fraction of the unpruned model's count (``"60%"``). Every
count falls monotonically (in steps) as the pruning ratio grows, so the solver finds the
ratio of each constraint alone and keeps the largest: that constraint *binds* and lands in
its band, the others end at or below their targets. A latency budget (``"12ms"``, ``"0.5s"``,
or ``"60%"`` of the unpruned model's latency) is met by the latency predicted from a table
measured on the device (:mod:`.latency_model`); internally it is counted in whole
microseconds (``target``, ``achieved``), shown in ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ToolkitError
from ..units import format_macs, parse_count, parse_latency, parse_percent

KINDS = {"macs": ("MAC count", "MACs"), "params": ("parameter count", "params"),
         "latency": ("latency", "ms")}  # kind -> (what, unit)
PLANNED: tuple[str, ...] = ()


@dataclass
class Constraint:
    """One budget of a fit: its ``kind``, the value as given (``spec``), the absolute
    ``target``, the unpruned count (``base``), the smallest count the strategy reaches, the
    accepted ``band`` (low, high), the ratio solving it alone (``ratio``) and the count at the
    fit's solved ratio (``achieved``)."""

    kind: str
    spec: Any
    target: int
    base: int
    smallest: int
    band: tuple[float, float]
    ratio: float = 0.0
    achieved: int = 0
    binding: bool = False

    @property
    def reachable(self) -> tuple[int, int]:
        return (self.smallest, self.base)

    @property
    def in_band(self) -> bool:
        return self.band[0] <= self.achieved <= self.band[1]

    @property
    def met(self) -> bool:
        """In the band if it binds, else at or below the top of the band."""
        return self.in_band if self.binding else self.achieved <= self.band[1]

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.achieved - self.target) / self.target

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (latency in microseconds, ``"unit": "us"``)."""
        unit = {"unit": "us"} if self.kind == "latency" else {}
        return {**unit, "target": int(self.target), "achieved": int(self.achieved), "error_pct": self.error_pct,
                "base": int(self.base), "reachable": [int(self.smallest), int(self.base)],
                "binding": bool(self.binding), "met": bool(self.met), "spec": str(self.spec)}

    def describe(self) -> str:
        """``params: 14.9M (target 15M, -0.52%, binding), reaches 1.1M .. 11.7M``."""
        state = "binding" if self.binding else ("met" if self.met else "NOT met")
        return (f"{self.kind}: {fmt(self.kind, self.achieved)} (target {fmt(self.kind, self.target)}, "
                f"{self.error_pct:+.2f}%, {state}); this strategy reaches "
                f"{fmt(self.kind, self.smallest)} .. {fmt(self.kind, self.base)}")


def fmt(kind: str, count: float) -> str:
    """A count with its SI suffix and unit: ``fmt("params", 15e6) -> "15M params"``
    (latency, counted in microseconds: ``fmt("latency", 12345) -> "12.3 ms"``)."""
    if kind == "latency":
        return f"{count / 1000.0:.3g} ms"
    return f"{format_macs(count)} {KINDS[kind][1]}"


def check_constraints(target_macs: Any, constraints: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{kind: value}`` from ``target_macs`` and ``constraints`` together, each value checked
    (``ToolkitError`` for an unknown kind, a latency budget, a bad value, the MAC budget given
    twice or no budget at all)."""
    specs: dict[str, Any] = {}
    if constraints is not None:
        if not isinstance(constraints, Mapping):
            raise ToolkitError(f"constraints must be a dict such as {{'params': '15M'}}; got {constraints!r}")
        for kind, value in constraints.items():
            if kind in PLANNED:
                raise ToolkitError(f"{kind} constraints are not implemented yet")
            if kind not in KINDS:
                raise ToolkitError(f"unknown constraint {kind!r}; use {', '.join(map(repr, KINDS))}")
            specs[kind] = value
    if target_macs is not None:
        if "macs" in specs:
            raise ToolkitError("the MAC budget is given twice (target_macs and constraints['macs']); give it once")
        specs = {"macs": target_macs, **specs}
    if not specs:
        raise ToolkitError("fit_to_budget needs a budget: target_macs or constraints={'macs': ..., 'params': ...}")
    for kind, value in specs.items():
        _check_value(kind, value)
    return specs


def _check_value(kind: str, value: Any) -> None:
    if parse_percent(value) is not None:
        return
    if kind == "latency":
        parse_latency(value)
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
        raise ToolkitError(f"the {kind} budget must be a finite count; got {value!r}")
    parse_count(value, KINDS[kind][0])


def resolve_target(kind: str, value: Any, base: int) -> int:
    """The absolute target of a checked ``value``: a count, or ``"60%"`` of ``base``."""
    fraction = parse_percent(value)
    if fraction is not None:
        return max(1, int(round(fraction * base)))
    if kind == "latency":
        return max(1, int(round(1000.0 * parse_latency(value))))
    return parse_count(value, KINDS[kind][0])


def parse_constraint_args(items: Iterable[str]) -> dict[str, str]:
    """``["params=15M", "macs=50%", "latency=60%"]`` (CLI ``--constraint``) -> ``{"params": "15M", "macs": "50%"}``."""
    out: dict[str, str] = {}
    for item in items:
        kind, sep, value = str(item).partition("=")
        kind, value = kind.strip().lower(), value.strip()
        if not sep or not kind or not value:
            raise ToolkitError(f"--constraint must look like params=15M or macs=50%; got {item!r}")
        if kind in out:
            raise ToolkitError(f"--constraint {kind} is given twice")
        out[kind] = value
    return out


def infeasible_message(constraints: list[Constraint], strategy_hint: str) -> str:
    """Why no ratio meets all ``constraints``: each target with its reachable range."""
    lines = []
    for c in constraints:
        lo, hi = c.reachable
        why = ""
        if c.band[1] < lo:
            why = " (below the smallest model this strategy allows)"
        elif c.target > hi:
            why = " (above the unpruned model)"
        lines.append(f"{c.kind} target {fmt(c.kind, c.target)}{why}: reachable {fmt(c.kind, lo)} .. {fmt(c.kind, hi)}")
    return "no pruning ratio of this strategy meets the budget; " + "; ".join(lines) + ". " + strategy_hint
