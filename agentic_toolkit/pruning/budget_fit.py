"""The result of :func:`~agentic_toolkit.fit_to_budget` (:class:`BudgetFit`), its error for an
unreachable budget (:class:`BudgetInfeasibleError`) and MAC recounting in a convention
(:func:`recount`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ToolkitError
from ..units import format_macs
from .apply import PruneResult, prune_with_plan
from .constraints import Constraint
from .plan import PrunePlan
from .ranking import Selection
from .strategy import Strategy

COUNTERS = ("macs", "torch_pruning")


class BudgetInfeasibleError(ToolkitError, ValueError):
    """No ratio of this strategy meets the budget.

    Attributes:
        target: the first unreachable constraint's target (MACs for a plain ``target_macs``).
        reachable: ``(min, max)`` that constraint can reach with this strategy.
        constraints: ``{kind: {"target", "reachable"}}`` for every constraint given.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model = at.create_model("cifar_resnet20")
        >>> try:
        ...     at.fit_to_budget(model, at.Strategy(), "100M", torch.randn(1, 3, 32, 32))
        ... except at.BudgetInfeasibleError as exc:
        ...     print(exc.target, exc.reachable)
        100000000 (636550, 40551040)
    """

    def __init__(self, message: str, target: int, reachable: tuple[int, int],
                 constraints: dict[str, dict[str, Any]] | None = None):
        super().__init__(message)
        self.target = int(target)
        self.reachable = (int(reachable[0]), int(reachable[1]))
        self.constraints = constraints or {"macs": {"target": self.target, "reachable": self.reachable}}


@dataclass
class BudgetFit:
    """Result of :func:`fit_to_budget`. All MAC numbers are in the convention of ``counter``.

    Attributes:
        strategy: the input strategy with the solved ``pruning_ratio``.
        target_macs: the MAC target, or None when MACs were not constrained.
        predicted_macs: exact for the model :meth:`prune` (or
            ``apply_isomorphic_prune(model, fit.strategy, ...)``) builds; for
            ``"torch_pruning"`` the count of that pruned model.
        base_macs, min_macs, max_macs: the unpruned count and what this strategy can reach.
        probes, seconds: solver steps and wall time.
        within_tolerance: the binding count lies in its band
            ``[target * (1 - down%), target * (1 + up%)]`` and every other is at most its top.
        tolerance: ``(up, down)`` in percent.
        plan, selection: the :class:`PrunePlan` and the solved cut counts (reused by :meth:`prune`).
        counter: ``"macs"`` or ``"torch_pruning"``.
        counts: verifying counts ``(ratio, analytic prediction, counted)`` (empty for ``"macs"``,
            whose prediction is exact).
        predicted_params: the exact parameter count of the pruned model.
        constraints: every budget with its target and achieved count
            (:class:`~agentic_toolkit.pruning.constraints.Constraint`; :attr:`binding` names
            the one that set the ratio).
        latency_model: the latency table of a latency budget, else None.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model = at.create_model("cifar_resnet20")
        >>> fit = at.fit_to_budget(model, at.Strategy(), "50%", torch.randn(1, 3, 32, 32))
        >>> fit.target_macs, fit.within_tolerance, fit.binding
        (20275520, True, 'macs')
        >>> fit.prune().macs == fit.predicted_macs
        True
    """

    strategy: Strategy
    target_macs: int | None
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
    predicted_params: int | None = None
    constraints: list[Constraint] = field(default_factory=list, repr=False, compare=False)
    latency_model: Any = field(default=None, repr=False, compare=False)
    _pruned: PruneResult | None = field(default=None, repr=False, compare=False)

    @property
    def ratio(self) -> float:
        """The solved global pruning ratio."""
        return self.strategy.pruning_ratio

    @property
    def binding(self) -> str:
        """The constraint that set the ratio (``"macs"`` for a plain MAC target)."""
        return next((c.kind for c in self.constraints if c.binding), "macs")

    @property
    def achieved(self) -> dict[str, int]:
        """The count of every constraint at the solved ratio, e.g. ``{"macs": ..., "params": ...}``."""
        return {c.kind: int(c.achieved) for c in self.constraints}

    @property
    def error_pct(self) -> float:
        """Signed distance of the binding count from its target, in percent."""
        c = next((c for c in self.constraints if c.binding), None)
        if c is None:
            return 100.0 * (self.predicted_macs - self.target_macs) / self.target_macs
        return c.error_pct

    @property
    def predicted_latency_ms(self) -> float | None:
        """Latency (ms) of the pruned model predicted by the fit's latency model (None without one)."""
        if self.latency_model is None or self.plan is None or self.selection is None:
            return None
        return self.latency_model.predict(self.plan.widths(self.selection))

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
        """JSON-ready numbers (no plan, no selection); ``constraints`` maps each kind to its
        ``target``, ``achieved``, ``error_pct``, ``base``, ``reachable``, ``binding``, ``met``."""
        return {
            "strategy": self.strategy.to_dict(),
            "target_macs": None if self.target_macs is None else int(self.target_macs),
            "predicted_macs": int(self.predicted_macs),
            "predicted_params": None if self.predicted_params is None else int(self.predicted_params),
            "error_pct": self.error_pct,
            "base_macs": int(self.base_macs),
            "reachable": [int(self.min_macs), int(self.max_macs)],
            "probes": int(self.probes),
            "within_tolerance": bool(self.within_tolerance),
            "tolerance": list(self.tolerance),
            "seconds": self.seconds,
            "counter": self.counter,
            "counts": [[float(r), int(p), int(c)] for r, p, c in self.counts],
            "binding": self.binding,
            "constraints": {c.kind: c.to_dict() for c in self.constraints},
            "predicted_latency_ms": self.predicted_latency_ms,
        }

    def summary(self) -> str:
        """A few human-readable lines: target, prediction, solved ratio, reachable range."""
        up, down = self.tolerance
        band = "within" if self.within_tolerance else "OUTSIDE"
        s = self.strategy
        how = "counted" if self.verified else "predicted"
        ranking = "isomorphic" if s.isomorphic else "global" if s.global_pruning else "per-layer"
        solved = (f"pruning_ratio {self.ratio:.5f} ({s.importance}, {ranking} ranking) solved in {self.probes} "
                  f"probes, {self.seconds:.2f} s")
        if self.target_macs is not None and [c.kind for c in self.constraints] in ([], ["macs"]):
            lines = [
                f"target {format_macs(self.target_macs)} MACs ({self.counter} counter): {how} "
                f"{format_macs(self.predicted_macs)} "
                f"({self.error_pct:+.3f}%, {band} +{up:g}%/-{down:g}%) of {format_macs(self.base_macs)}",
                f"{solved}; this strategy reaches {format_macs(self.min_macs)} .. {format_macs(self.max_macs)}",
            ]
        else:
            lines = [f"budget ({band} +{up:g}%/-{down:g}%, {self.binding} binding; {self.counter} counter): "
                     f"{format_macs(self.predicted_macs)} MACs {how}, {format_macs(self.predicted_params or 0)} params",
                     *(f"  {c.describe()}" for c in self.constraints), solved]
        if self.verified:
            misses = [c - p for _, p, c in self.counts]
            state = "exact" if not any(misses) else f"missed by {format_macs(abs(misses[0]))}, ratio corrected"
            lines.append(f"verified by counting the pruned model ({len(self.counts)} count(s); analytic "
                         f"prediction {state})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_frame(self):
        """The solver's probes of the binding count in order: ``probe``, ``ratio``,
        ``predicted_<kind>`` (``predicted_macs`` for a MAC target) and ``error_pct``."""
        import pandas as pd

        c = next((c for c in self.constraints if c.binding), None)
        kind, target = (c.kind, c.target) if c is not None else ("macs", self.target_macs)
        col = f"predicted_{kind}"
        rows = [{"probe": i, "ratio": r, col: int(m), "error_pct": 100.0 * (m - target) / target}
                for i, (r, m) in enumerate(self.trace)]
        return pd.DataFrame(rows, columns=["probe", "ratio", col, "error_pct"])


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

