"""Close the loop on a latency budget: measure the pruned model, correct, solve again.

The latency table predicts each layer alone; inside the network, caches, memory traffic
and fused kernels make the real latency differ by a few percent, and differently per
architecture and batch size. :func:`refine_latency_fit` therefore times the pruned model
against the unpruned one (interleaved, :func:`~agentic_toolkit.benchmark`), and, while the
measured latency fraction misses the target by more than ``accept``, solves again for the
target scaled by ``predicted / measured`` (a multiplicative correction of the model's
bias at that point); the fit whose measured fraction is closest to the target is returned
with the measurements of every round.

:func:`pick_rounding` closes the same loop for ``round_to="auto"``: its per-group multiples
come from step curves of each layer timed alone near its full width, which need not hold
inside the network at the pruned widths (measurements: ``docs/pruning.md``, "Latency
budgets"). It times the fit and the same strategy solved with each uniform multiple of
``multiples``, and keeps the most efficient.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from ..errors import ToolkitError

#: Uniform channel multiples :func:`pick_rounding` tries beside the fit's own rounding.
PICK_MULTIPLES = (8, 16, 32)


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
    """Measure ``fit`` and correct it at most ``rounds`` times (see the module docstring).

    Args:
        model: the unpruned model ``fit`` was solved for.
        fit: a :class:`~agentic_toolkit.BudgetFit` with a latency constraint.
        rounds: corrections at most; each prunes one model and times it.
        accept: stop when the measured latency fraction is within this relative distance of
            the target.
        warmup, repeats: untimed runs, then interleaved timed pairs (pruned, unpruned).
        device, threads: where to time (default threads: torch's setting).

    Returns:
        A :class:`RefinedFit`: the fit whose measured fraction came closest to the target
        (``fit``), ``target_fraction`` and every round (``checks``; the first is ``fit`` as given).

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model = at.create_model("cifar_resnet20").eval()  # random init
        >>> plan = at.get_plan(model, torch.randn(8, 3, 32, 32))
        >>> table = at.build_latency_model(plan, threads=1, grid_steps=2, repeats=1, cache=False, progress=False)
        >>> fit = at.fit_to_budget(model, at.Strategy(), constraints={"latency": "80%"}, plan=plan,
        ...                        latency_model=table)
        >>> refined = at.refine_latency_fit(model, fit, rounds=1, warmup=1, repeats=3, threads=1)
        >>> 1 <= len(refined.checks) <= 2, round(refined.target_fraction, 2)
        (True, 0.8)
    """
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
        current = _solve(model, current, latency_fraction=solved)
    out.fit = best_fit
    return out


@dataclass
class RoundingChoice:
    """The most efficient of the timed fits (``fit``) and every candidate (``frame``: ``round_to``,
    ``mac_fraction``, ``speedup`` (median of interleaved pairs), ``efficiency`` = speedup x
    MAC fraction, ``chosen``)."""

    fit: Any
    frame: pd.DataFrame

    @property
    def round_to(self) -> Any:
        """The chosen ``round_to`` (the fit's own, or one of the uniform multiples)."""
        return self.fit.strategy.round_to

    def summary(self) -> str:
        rows = ", ".join(f"{r.round_to}: {r.efficiency:.3f}" for r in self.frame.itertuples())
        return f"round_to efficiency measured ({rows}); chose {self.round_to}"

    def to_dict(self) -> dict[str, Any]:
        return {"round_to": self.round_to, "candidates": self.frame.to_dict("records")}

    def to_frame(self) -> pd.DataFrame:
        return self.frame


def pick_rounding(model, fit, *, multiples: tuple[int, ...] = PICK_MULTIPLES, warmup: int = 3, repeats: int = 20,
                  device: str = "cpu", threads: int | None = None) -> RoundingChoice:
    """Time ``fit`` and its strategy solved to the same budgets with each uniform ``round_to``
    in ``multiples`` (those landing in the band) against the unpruned model, all in one
    round-robin loop (:func:`~agentic_toolkit.benchmarking.runner.compare_speedups`; NHWC when
    the fit's latency table was measured so); the highest measured efficiency wins.

    Args:
        model: the unpruned model ``fit`` was solved for.
        fit: a :class:`~agentic_toolkit.BudgetFit` of ``model`` (any budget).
        multiples: the uniform ``round_to`` values to try beside the fit's own.
        warmup, repeats: untimed runs, then round-robin timed rounds.
        device, threads: where to time (default threads: torch's setting).

    Returns:
        A :class:`RoundingChoice`: the chosen ``fit`` and ``frame`` (``round_to``,
        ``mac_fraction``, ``speedup``, ``efficiency``, ``chosen``).

    Example:
        >>> import torch, agentic_toolkit as at
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        ...                       nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
        >>> plan = at.get_plan(model, torch.randn(8, 3, 32, 32))
        >>> table = at.build_latency_model(plan, threads=1, grid_steps=2, repeats=1, cache=False, progress=False)
        >>> fit = at.fit_to_budget(model, at.Strategy(), plan=plan, latency_model=table, constraints={"latency": "80%"})
        >>> choice = at.pick_rounding(model, fit, multiples=(8,), warmup=1, repeats=3, threads=1)
        >>> choice.frame.columns.tolist(), int(choice.frame["chosen"].sum())
        (['round_to', 'mac_fraction', 'speedup', 'efficiency', 'chosen'], 1)
    """
    from ..benchmarking.runner import compare_speedups

    if not multiples or any(not isinstance(m, int) or m < 1 for m in multiples):
        raise ToolkitError(f"multiples must be integers >= 1; got {multiples!r}")
    fits = [fit]
    for m in multiples:
        if m != fit.strategy.round_to:
            other = _solve(model, fit, replace(fit.strategy, round_to=m))
            if other.within_tolerance:
                fits.append(other)
    timed = compare_speedups([f.prune().model for f in fits], tuple(fit.plan.input_shape), baseline=model,
                             device=device, threads=threads, warmup=warmup, repeats=repeats, channels_last=_nhwc(fit))
    frame = pd.DataFrame({"round_to": ["none" if f.strategy.round_to is None else str(f.strategy.round_to) for f in fits],
                          "mac_fraction": [f.predicted_macs / f.base_macs for f in fits],
                          "speedup": [t["speedup_median"] for t in timed]})
    frame["efficiency"] = frame["speedup"] * frame["mac_fraction"]
    best = int(frame["efficiency"].idxmax())
    frame["chosen"] = frame.index == best
    return RoundingChoice(fits[best], frame)


def _nhwc(fit) -> bool:
    """Whether ``fit``'s latency table was measured in NHWC (then its models are timed so)."""
    return fit.latency_model is not None and fit.latency_model.key.get("memory_format") == "channels_last"


def _solve(model, fit, strategy=None, latency_fraction: float | None = None):
    """``fit``'s budgets solved again (for ``strategy``, default the fit's; the latency budget
    replaced by ``latency_fraction`` of the unpruned latency when given)."""
    from .budget import fit_to_budget

    specs = {c.kind: c.spec for c in fit.constraints}
    if latency_fraction is not None:
        specs["latency"] = f"{100.0 * latency_fraction:.6f}%"
    return fit_to_budget(model, strategy or fit.strategy, example_inputs=fit.plan.example_inputs, plan=fit.plan,
                         tolerance=fit.tolerance, counter=fit.counter, constraints=specs,
                         latency_model=fit.latency_model)


def _measure(model, fit, solved: float, warmup: int, repeats: int, device: str, threads: int | None) -> LatencyCheck:
    from ..benchmarking import benchmark

    shape = tuple(fit.plan.input_shape)
    res = benchmark(fit.prune().model, shape, baseline=model, device=device, batch_sizes=(shape[0],), threads=threads,
                    warmup=warmup, repeats=repeats, measure_memory=False, channels_last=_nhwc(fit))
    r = res.rows[0]
    lat = next(c for c in fit.constraints if c.kind == "latency")
    return LatencyCheck(
        ratio=fit.ratio, solved_fraction=solved, predicted_fraction=lat.achieved / lat.base,
        measured_fraction=1.0 / r["speedup_median"], speedup=r["speedup_median"], speedup_min=r["speedup_min"],
        speedup_max=r["speedup_max"], latency_ms=r["latency_ms"], baseline_latency_ms=r["baseline_latency_ms"],
    )
