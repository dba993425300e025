"""Close the loop on a latency budget: measure the pruned model, correct, solve again.

The latency table predicts each layer alone; inside the network, caches, memory traffic
and fused kernels make the real latency differ by a few percent, and differently per
architecture and batch size. :func:`refine_latency_fit` therefore times the pruned model
against the unpruned one (interleaved, :func:`~agentic_toolkit.benchmark`), and, while the
measured latency fraction misses the target by more than ``accept``, solves again for the
target scaled by ``predicted / measured`` (a multiplicative correction of the model's
bias at that point); the fit whose measured fraction is closest to the target is returned
with the measurements of every round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ToolkitError


@dataclass
class LatencyCheck:
    """One measured round: the solved ratio, the latency fraction (of the unpruned model)
    targeted by the solver, predicted and measured (``1 / speedup``), and the speedups."""

    ratio: float
    solved_fraction: float
    predicted_fraction: float
    measured_fraction: float
    speedup: float
    speedup_min: float
    speedup_max: float
    latency_ms: float
    baseline_latency_ms: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class RefinedFit:
    """The fit whose measured latency came closest to the target (``fit``), the target
    fraction, and every round (``checks``, the first is the uncorrected fit)."""

    fit: Any
    target_fraction: float
    checks: list[LatencyCheck] = field(default_factory=list)

    @property
    def best(self) -> LatencyCheck:
        return min(self.checks, key=lambda c: abs(c.measured_fraction / self.target_fraction - 1))

    @property
    def speedup(self) -> float:
        """The measured speedup of :attr:`fit`."""
        return self.best.speedup


def refine_latency_fit(model, fit, *, rounds: int = 1, accept: float = 0.02, warmup: int = 3, repeats: int = 20,
                       device: str = "cpu", threads: int | None = None) -> RefinedFit:
    """Measure ``fit`` (a :class:`~agentic_toolkit.BudgetFit` with a latency constraint, from
    ``model``) and correct it at most ``rounds`` times (see module docstring); each round
    prunes one model and times it ``repeats`` interleaved pairs after ``warmup`` runs."""
    lat = next((c for c in fit.constraints if c.kind == "latency"), None)
    if lat is None or fit.latency_model is None:
        raise ToolkitError("refine_latency_fit needs a fit with a latency constraint (constraints={'latency': ...})")
    if not isinstance(rounds, int) or rounds < 0:
        raise ToolkitError(f"rounds must be an integer >= 0; got {rounds!r}")
    target = lat.target / lat.base
    out = RefinedFit(fit, target)
    best_fit, current, solved = fit, fit, target
    for k in range(rounds + 1):
        check = _measure(model, current, solved, warmup, repeats, device, threads)
        out.checks.append(check)
        if check is out.best:
            best_fit = current
        if k == rounds or abs(check.measured_fraction / target - 1) <= accept:
            break
        solved = min(1.0, solved * check.predicted_fraction / check.measured_fraction)
        current = _resolve(model, current, solved)
    out.fit = best_fit
    return out


def _resolve(model, fit, fraction: float):
    from .budget import fit_to_budget

    specs = {c.kind: c.spec for c in fit.constraints}
    specs["latency"] = f"{100.0 * fraction:.6f}%"
    return fit_to_budget(model, fit.strategy, example_inputs=fit.plan.example_inputs, plan=fit.plan,
                         tolerance=fit.tolerance, counter=fit.counter, constraints=specs,
                         latency_model=fit.latency_model)


def _measure(model, fit, solved: float, warmup: int, repeats: int, device: str, threads: int | None) -> LatencyCheck:
    from ..benchmarking import benchmark

    shape = tuple(fit.plan.input_shape)
    pruned = fit.prune().model
    nhwc = fit.latency_model.key.get("memory_format") == "channels_last"  # time as the table was measured
    res = benchmark(pruned, shape, baseline=model, device=device, batch_sizes=(shape[0],), threads=threads,
                    warmup=warmup, repeats=repeats, measure_memory=False, channels_last=nhwc)
    r = res.rows[0]
    lat = next(c for c in fit.constraints if c.kind == "latency")
    return LatencyCheck(
        ratio=fit.ratio, solved_fraction=solved, predicted_fraction=lat.achieved / lat.base,
        measured_fraction=1.0 / r["speedup_median"], speedup=r["speedup_median"], speedup_min=r["speedup_min"],
        speedup_max=r["speedup_max"], latency_ms=r["latency_ms"], baseline_latency_ms=r["baseline_latency_ms"],
    )
