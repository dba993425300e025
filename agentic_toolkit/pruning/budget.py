"""Solve a strategy's global pruning ratio for a MAC budget (``fit_to_budget``).

The strategy's shape (importance, multipliers, ranking, caps, rounding) stays fixed; only
``pruning_ratio`` is solved. Each probe ranks the cached importance scores and counts the
MACs of the resulting widths exactly (:class:`agentic_toolkit.pruning.plan.PrunePlan`), so no
model is pruned while solving. MACs fall monotonically (in steps) as the ratio grows; we
bracket the target and shrink the bracket by regula falsi (Illinois) with bisection
safeguards until the two sides are adjacent steps or one lands within 0.01% of the target.

``counter`` picks the convention the band is met in: ``"macs"`` (default: conv, linear,
matmul and attention MACs, :func:`~agentic_toolkit.profile_macs`) or ``"torch_pruning"``
(``torch_pruning.utils.count_ops_and_params``, what the AgenticPruner paper reports; it
adds biases, norms, activations and pooling and counts timm attention by its own formula,
0.8% more on ResNet-50). The ``"torch_pruning"`` count is predicted analytically too
(:class:`~agentic_toolkit.pruning.mac_model.TpMacModel`: exact on the ResNets, ConvNeXt,
DeiT/ViT, Swin, EfficientNet, MobileNet, RegNet, ResNeXt and PoolFormer), and then
*verified*: the solved model is pruned and counted in that convention. Where the count
misses the prediction (e.g. DenseNet's concatenations feed activations whose width the
analytic model guesses), the ratio is solved again for the target shifted by the miss and
counted again (at most ``MAX_COUNTS`` counts), so the result lands in the band as
``count_ops_and_params`` measures it. The pruned model of the last count is kept for
:meth:`BudgetFit.prune`, so verifying costs no extra prune.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..errors import ToolkitError
from ..units import format_macs, parse_macs
from .apply import PruneResult, get_plan, prune_with_plan
from .plan import PrunePlan
from .ranking import Selection
from .strategy import Strategy

MAX_RATIO = 1.0 - 1e-6  # Strategy.pruning_ratio must stay below 1
STOP_REL = 1e-4  # a probe this close to the target ends the search
MAX_PROBES = 64
MAX_COUNTS = 4  # pruned-and-counted probes of a verified counter ("torch_pruning")
COUNT_REL = 1e-3  # a count this close to the target (and in band) ends the verification
COUNTERS = ("macs", "torch_pruning")


class BudgetInfeasibleError(ToolkitError, ValueError):
    """No ratio of this strategy reaches the target; ``reachable`` is ``(min, max)`` MACs."""

    def __init__(self, message: str, target: int, reachable: tuple[int, int]):
        super().__init__(message)
        self.target = int(target)
        self.reachable = (int(reachable[0]), int(reachable[1]))


@dataclass
class BudgetFit:
    """Result of :func:`fit_to_budget`.

    ``strategy`` carries the solved ``pruning_ratio``; ``predicted_macs`` is exact for the
    model :meth:`prune` (or ``apply_isomorphic_prune(model, fit.strategy, ...)``) builds, in
    the convention of ``counter`` (all MAC numbers here are): for ``"torch_pruning"`` it is
    the count of that pruned model. ``counts`` lists the verifying counts ``(ratio,
    analytic prediction, counted)`` (empty for ``"macs"``, whose prediction is exact).
    ``min_macs``/``max_macs`` bound what this strategy can reach. ``within_tolerance``:
    the prediction lies in ``[target * (1 - down%), target * (1 + up%)]``.
    """

    strategy: Strategy
    target_macs: int
    predicted_macs: int
    base_macs: int
    min_macs: int
    max_macs: int
    probes: int
    within_tolerance: bool
    tolerance: tuple[float, float]
    seconds: float
    plan: PrunePlan | None = field(default=None, repr=False, compare=False)
    selection: Selection | None = field(default=None, repr=False, compare=False)
    trace: list[tuple[float, int]] = field(default_factory=list, repr=False, compare=False)
    counter: str = "macs"
    counts: list[tuple[float, int, int]] = field(default_factory=list, repr=False, compare=False)
    _pruned: PruneResult | None = field(default=None, repr=False, compare=False)

    @property
    def ratio(self) -> float:
        """The solved global pruning ratio."""
        return self.strategy.pruning_ratio

    @property
    def error_pct(self) -> float:
        """Signed distance of the prediction from the target, in percent."""
        return 100.0 * (self.predicted_macs - self.target_macs) / self.target_macs

    @property
    def reachable(self) -> tuple[int, int]:
        return (self.min_macs, self.max_macs)

    @property
    def verified(self) -> bool:
        """The pruned model was counted (``counter="torch_pruning"``)."""
        return bool(self.counts)

    def prune(self, inplace: bool = False) -> PruneResult:
        """Prune the model to the solved strategy, reusing the plan (no second graph build).

        The result's MACs are in the fit's ``counter`` convention (see :func:`recount`); a
        verified fit hands over the model it counted the first time (a copy each time after).
        """
        if self.plan is None:
            raise ToolkitError("this BudgetFit has no plan; call apply_isomorphic_prune instead")
        if self._pruned is not None and not inplace:
            result, self._pruned = self._pruned, None
            return result
        result = prune_with_plan(self.plan, self.strategy, inplace=inplace, selection=self.selection)
        return recount(result, self.plan, self.counter, selection=self.selection)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no plan, no selection)."""
        return {
            "strategy": self.strategy.to_dict(),
            "target_macs": int(self.target_macs),
            "predicted_macs": int(self.predicted_macs),
            "error_pct": self.error_pct,
            "base_macs": int(self.base_macs),
            "reachable": [int(self.min_macs), int(self.max_macs)],
            "probes": int(self.probes),
            "within_tolerance": bool(self.within_tolerance),
            "tolerance": list(self.tolerance),
            "seconds": self.seconds,
            "counter": self.counter,
            "counts": [[float(r), int(p), int(c)] for r, p, c in self.counts],
        }

    def summary(self) -> str:
        """A few human-readable lines: target, prediction, solved ratio, reachable range."""
        up, down = self.tolerance
        band = "within" if self.within_tolerance else "OUTSIDE"
        s = self.strategy
        how = "counted" if self.verified else "predicted"
        lines = [
            f"target {format_macs(self.target_macs)} MACs ({self.counter} counter): {how} "
            f"{format_macs(self.predicted_macs)} "
            f"({self.error_pct:+.3f}%, {band} +{up:g}%/-{down:g}%) of {format_macs(self.base_macs)}",
            f"pruning_ratio {self.ratio:.5f} ({s.importance}, "
            f"{'isomorphic' if s.isomorphic else 'global' if s.global_pruning else 'per-layer'} ranking) "
            f"solved in {self.probes} probes, {self.seconds:.2f} s; this strategy reaches "
            f"{format_macs(self.min_macs)} .. {format_macs(self.max_macs)}",
        ]
        if self.verified:
            misses = [c - p for _, p, c in self.counts]
            state = "exact" if not any(misses) else f"missed by {format_macs(abs(misses[0]))}, ratio corrected"
            lines.append(f"verified by counting the pruned model ({len(self.counts)} count(s); analytic "
                         f"prediction {state})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_frame(self):
        """The solver's probes in order: ``probe``, ``ratio``, ``predicted_macs``, ``error_pct``."""
        import pandas as pd

        rows = [
            {"probe": i, "ratio": r, "predicted_macs": int(m), "error_pct": 100.0 * (m - self.target_macs) / self.target_macs}
            for i, (r, m) in enumerate(self.trace)
        ]
        return pd.DataFrame(rows, columns=["probe", "ratio", "predicted_macs", "error_pct"])


def check_tolerance(tolerance) -> tuple[float, float]:
    try:
        up, down = (float(t) for t in tolerance)
    except (TypeError, ValueError):
        raise ToolkitError(f"tolerance must be (up %, down %), e.g. (1.0, 5.0); got {tolerance!r}") from None
    if not (math.isfinite(up) and math.isfinite(down)) or up < 0 or down < 0 or down >= 100:
        raise ToolkitError(f"tolerance percentages must be >= 0 (down < 100); got {tolerance!r}")
    return up, down


def _check_target(target_macs) -> int:
    if isinstance(target_macs, bool):
        raise ToolkitError(f"target_macs must be a MAC count such as 1.77e9 or '1.77G'; got {target_macs!r}")
    if isinstance(target_macs, (int, float)):
        if not math.isfinite(target_macs) or target_macs <= 0:
            raise ToolkitError(f"target_macs must be > 0; got {target_macs!r}")
        return int(round(target_macs))
    return parse_macs(target_macs)


def fit_to_budget(
    model: nn.Module,
    strategy: Strategy,
    target_macs: int | float | str,
    example_inputs,
    tolerance: tuple[float, float] = (1.0, 5.0),
    calibration=None,
    plan: PrunePlan | None = None,
    counter: str = "macs",
) -> BudgetFit:
    """Solve ``strategy.pruning_ratio`` so that the pruned model has ``target_macs`` MACs.

    ``tolerance=(up, down)`` in percent is the accepted band ``[target - down%, target +
    up%]``; the solver returns the reachable count closest to the target (preferring one
    inside the band). Raises :class:`BudgetInfeasibleError` (with ``.reachable``) when the
    target is above the model's MACs or below the smallest model the strategy allows, and
    :class:`ToolkitError` for a target <= 0. Pass ``plan=`` to reuse a previous plan of the
    same model; the returned fit keeps it (``fit.plan``) and ``fit.prune()`` uses it.
    MACs are those of one forward pass on ``example_inputs`` (use a batch of 1 for
    per-image budgets such as the paper's). ``counter`` is the convention the target and
    band are met in: ``"macs"`` (default) or ``"torch_pruning"`` (per sample, as
    ``torch_pruning.utils.count_ops_and_params``; the solved model is then pruned and
    counted to verify it, see the module docstring).
    """
    start = time.perf_counter()
    if not isinstance(strategy, Strategy):
        raise ToolkitError(f"strategy must be an agentic_toolkit.Strategy, got {type(strategy).__name__}")
    check_counter(counter)
    target = _check_target(target_macs)
    up, down = check_tolerance(tolerance)
    p = get_plan(model, example_inputs, calibration, plan)
    p.check_strategy(strategy)
    band = (target * (1 - down / 100.0), target * (1 + up / 100.0))
    f = _Probe(p, strategy, counter)
    base = p.base_count(counter)
    smallest = f(MAX_RATIO)
    _check_reachable(target, base, smallest, band[1], strategy)
    ratio, predicted = _closest(_bracket(f, target, smallest), target, band)
    counted = _Counts(p, strategy, f, counter)
    if counter == "macs" and p.mac_model.inexact:
        warnings.warn(
            f"the analytic MAC model is not exact for {type(model).__name__} (e.g. an attention layout other "
            "than a fused qkv Linear): the solved model is pruned and counted to verify it",
            stacklevel=2,
        )
    if counter != "macs" or p.mac_model.inexact:
        ratio, predicted = counted.verify(ratio, target, smallest, band)
    within = band[0] <= predicted <= band[1]
    if not within:
        warnings.warn(
            f"closest reachable MACs {format_macs(predicted)} are outside the band "
            f"[-{down}%, +{up}%] of {format_macs(target)} (the strategy's steps are too coarse here; "
            "try a smaller round_to)",
            stacklevel=2,
        )
    return BudgetFit(
        strategy=strategy.replace(pruning_ratio=float(ratio)),
        target_macs=target,
        predicted_macs=int(predicted),
        base_macs=int(base),
        min_macs=int(smallest),
        max_macs=int(base),
        probes=f.probes,
        within_tolerance=within,
        tolerance=(up, down),
        seconds=time.perf_counter() - start,
        plan=p,
        selection=f.cache[ratio][1],
        trace=f.trace,
        counter=counter,
        counts=counted.counts,
        _pruned=counted.best,
    )


def check_counter(counter) -> str:
    """``counter`` if it names a MAC convention (``COUNTERS``), else :class:`ToolkitError`."""
    if counter not in COUNTERS:
        raise ToolkitError(f"counter must be one of {', '.join(map(repr, COUNTERS))}; got {counter!r}")
    return counter


def recount(result: PruneResult, plan: PrunePlan, counter: str, selection: Selection | None = None) -> PruneResult:
    """``result`` with ``macs``, ``base_macs`` and ``predicted_macs`` in ``counter``'s convention.

    ``"macs"``: ``result`` itself. ``"torch_pruning"``: the pruned model counted with
    ``profile_macs(..., convention="torch_pruning")`` (``count_ops_and_params``, per
    sample), the analytic prediction for ``selection`` (default: the strategy's), and a
    note naming the counter.
    """
    from ..profiling.profile import profile_macs

    if check_counter(counter) == "macs":
        return result
    sel = plan.select(result.strategy) if selection is None else selection
    macs = profile_macs(result.model, example_inputs=plan.example_inputs, convention=counter).total_macs
    note = f"MACs counted in the {counter} convention (torch_pruning.utils.count_ops_and_params, per sample)"
    return dataclasses.replace(
        result, macs=int(macs), base_macs=plan.base_count(counter), predicted_macs=plan.predict_macs(sel, counter),
        notes=[*result.notes, note],
    )


def _closest(candidates: list[tuple[float, int]], target: int, band: tuple[float, float]) -> tuple[float, int]:
    """The candidate closest to the target, preferring one inside the band."""
    inside = [c for c in candidates if band[0] <= c[1] <= band[1]]
    return min(inside or candidates, key=lambda c: (abs(c[1] - target), c[0]))


class _Counts:
    """Pruned-and-counted probes that verify a solved ratio (counter ``"torch_pruning"``)."""

    def __init__(self, plan: PrunePlan, strategy: Strategy, f: _Probe, counter: str):
        self.plan, self.strategy, self.f, self.counter = plan, strategy, f, counter
        self.counts: list[tuple[float, int, int]] = []  # (ratio, analytic prediction, counted)
        self.best: PruneResult | None = None  # the pruned model of the best count so far

    def verify(self, ratio: float, target: int, smallest: int, band: tuple[float, float]) -> tuple[float, int]:
        """``(ratio, counted MACs)``: count the model at ``ratio``; while the count misses the
        analytic prediction and is not within ``COUNT_REL`` of the target inside the band,
        solve again for the target shifted by the last miss and count that ratio."""
        results: dict[float, PruneResult] = {}
        while len(results) < MAX_COUNTS and ratio not in results:
            results[ratio] = r = self._count(ratio)
            miss = r.macs - self.f(ratio)
            if not miss or (band[0] <= r.macs <= band[1] and abs(r.macs - target) <= COUNT_REL * target):
                break
            shifted = target - miss
            shifted_band = (band[0] - miss, band[1] - miss)
            ratio = _closest(_bracket(self.f, shifted, smallest), shifted, shifted_band)[0]
        ratio, macs = _closest([(k, r.macs) for k, r in results.items()], target, band)
        self.best = results[ratio]
        return ratio, macs

    def _count(self, ratio: float) -> PruneResult:
        self.f(ratio)  # (cached: the selection)
        sel = self.f.cache[ratio][1]
        pruned = prune_with_plan(self.plan, self.strategy.replace(pruning_ratio=float(ratio)), selection=sel)
        result = recount(pruned, self.plan, self.counter, selection=sel)
        self.counts.append((float(ratio), int(result.predicted_macs), int(result.macs)))
        return result


class _Probe:
    """Predicted MACs (in ``counter``'s convention) of the strategy at a ratio (each ratio
    selected and predicted once)."""

    def __init__(self, plan: PrunePlan, strategy: Strategy, counter: str = "macs"):
        self.plan, self.strategy, self.counter = plan, strategy, counter
        self.cache: dict[float, tuple[int, Selection]] = {}
        self.trace: list[tuple[float, int]] = []

    @property
    def probes(self) -> int:
        return len(self.trace)

    def __call__(self, r: float) -> int:
        if r not in self.cache:
            sel = self.plan.select(self.strategy, r)
            self.cache[r] = (self.plan.predict_macs(sel, self.counter), sel)
            self.trace.append((r, self.cache[r][0]))
        return self.cache[r][0]


def _check_reachable(target: int, base: int, smallest: int, hi_band: float, strategy: Strategy) -> None:
    if target > base:
        raise BudgetInfeasibleError(
            f"target {format_macs(target)} MACs is above the model's {format_macs(base)} MACs; "
            f"this strategy reaches {format_macs(smallest)} .. {format_macs(base)}",
            target,
            (smallest, base),
        )
    if smallest > hi_band:
        raise BudgetInfeasibleError(
            f"target {format_macs(target)} MACs is below the smallest model this strategy allows "
            f"({format_macs(smallest)} at pruning_ratio ~1, max_layer_ratio={strategy.max_layer_ratio}); "
            f"reachable: {format_macs(smallest)} .. {format_macs(base)}. Raise max_layer_ratio or "
            "multipliers, or un-ignore layers.",
            target,
            (smallest, base),
        )


def _bracket(f: _Probe, target: int, smallest: int) -> list[tuple[float, int]]:
    """Shrink ``[0, MAX_RATIO]`` around the target (regula falsi, Illinois-style bisection
    when one side stalls); the two ends ``(ratio, macs)`` of the final bracket."""
    r_lo, r_hi = 0.0, MAX_RATIO  # invariant: f(r_lo) > target >= f(r_hi), unless an end hits it
    f_lo, f_hi = f(r_lo), smallest
    last = ""
    while smallest < target < f_lo and f.probes < MAX_PROBES and r_hi - r_lo > 1e-9:
        if min(f_lo - target, target - f_hi) <= STOP_REL * target:
            break
        if last.endswith("lolo") or last.endswith("hihi"):
            r = (r_lo + r_hi) / 2  # regula falsi stalls on one side: bisect
        else:
            r = r_lo + (r_hi - r_lo) * (f_lo - target) / (f_lo - f_hi)
            r = min(max(r, r_lo + 1e-3 * (r_hi - r_lo)), r_hi - 1e-3 * (r_hi - r_lo))
        v = f(r)
        if v > target:
            r_lo, f_lo, last = r, v, last + "lo"
        else:
            r_hi, f_hi, last = r, v, last + "hi"
        last = last[-4:]
    return [(r_lo, f_lo), (r_hi, f_hi)]
