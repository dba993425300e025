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

``constraints={"macs": ..., "params": ...}`` budgets several counts at once (see
:mod:`.constraints`): parameters are predicted exactly from the same widths
(:class:`~agentic_toolkit.pruning.param_model.ParamModel`), each count is solved alone on
the shared probes, and the largest ratio wins (its constraint binds; the others end below
their targets).

A ``"latency"`` constraint is met by the latency predicted from a table measured once on
``device`` (with ``threads``) at the batch size of ``example_inputs`` and cached on disk
(:mod:`.latency_model`); predictions never rise with the ratio (a monotone envelope of the
table), so the same bracketing solves it. ``Strategy(round_to="auto")`` rounds each group's
kept channels to a multiple chosen from the same measurements (:meth:`.LatencyModel.round_multiples`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch.nn as nn

from ..errors import ToolkitError
from .apply import PruneResult, get_plan, prune_with_plan
from .budget_fit import COUNTERS, BudgetFit, BudgetInfeasibleError, check_counter, recount
from .constraints import Constraint, check_constraints, fmt, infeasible_message, resolve_target
from .param_model import ParamModel
from .plan import PrunePlan
from .ranking import Selection
from .strategy import Strategy

__all__ = ["COUNTERS", "BudgetFit", "BudgetInfeasibleError", "check_counter", "check_tolerance", "fit_to_budget",
           "recount"]

MAX_RATIO = 1.0 - 1e-6  # Strategy.pruning_ratio must stay below 1
STOP_REL = 1e-4  # a probe this close to the target ends the search
MAX_PROBES = 64
MAX_COUNTS = 4  # pruned-and-counted probes of a verified counter ("torch_pruning")
COUNT_REL = 1e-3  # a count this close to the target (and in band) ends the verification


def check_tolerance(tolerance) -> tuple[float, float]:
    """``(up %, down %)`` as floats, or :class:`ToolkitError`."""
    try:
        up, down = (float(t) for t in tolerance)
    except (TypeError, ValueError):
        raise ToolkitError(f"tolerance must be (up %, down %), e.g. (1.0, 5.0); got {tolerance!r}") from None
    if not (math.isfinite(up) and math.isfinite(down)) or up < 0 or down < 0 or down >= 100:
        raise ToolkitError(f"tolerance percentages must be >= 0 (down < 100); got {tolerance!r}")
    return up, down


def fit_to_budget(
    model: nn.Module,
    strategy: Strategy,
    target_macs: int | float | str | None = None,
    example_inputs=None,
    tolerance: tuple[float, float] = (1.0, 5.0),
    calibration=None,
    plan: PrunePlan | None = None,
    counter: str = "macs",
    *,
    constraints: Mapping[str, Any] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    latency_model: Any = None,
) -> BudgetFit:
    """Solve ``strategy.pruning_ratio`` so that the pruned model meets a MAC budget (or
    every budget of ``constraints``).

    The solver returns the reachable count closest to the target, preferring one inside the
    band. MACs are those of one forward pass on ``example_inputs`` (use a batch of 1 for
    per-image budgets such as the paper's). With several constraints the most restrictive
    one binds and lands in its band, the others end at or below theirs.

    Args:
        model: the unpruned model (not changed).
        strategy: importance and shape; only its ``pruning_ratio`` is solved.
        target_macs: MACs as a number, ``"1.77G"`` or ``"50%"`` (of the unpruned count).
        example_inputs: the input MACs are counted on (not needed with ``plan``).
        tolerance: ``(up, down)`` in percent: the band ``[target - down%, target + up%]``.
        calibration: ``(images, labels)`` batches for gradient-based importance (Taylor).
        plan: a previous :class:`PrunePlan` of the same model to reuse; the fit keeps it
            (``fit.plan``) and ``fit.prune()`` uses it.
        counter: the convention the target and band are met in: ``"macs"`` or
            ``"torch_pruning"`` (per sample, as ``torch_pruning.utils.count_ops_and_params``;
            the solved model is then pruned and counted to verify it, see the module docstring).
        constraints: MACs, parameters and/or latency budgets together, e.g.
            ``{"macs": "1.77G", "params": "15M"}``, ``{"params": "60%"}``, ``{"latency": "12ms"}``.
            A latency is predicted on ``device`` by a measured table (built and cached on first
            use); ``Strategy(round_to="auto")`` needs the same table.
        device: ``"cpu"`` or ``"cuda"``, for latency budgets.
        threads: CPU threads for latency budgets; default: torch's setting.
        latency_model: a prebuilt table from :func:`~.latency_model.build_latency_model`
            (kept as ``fit.latency_model``; ``fit.predicted_latency_ms`` is its prediction).

    Returns:
        A :class:`BudgetFit`: the solved strategy, predicted counts, ``prune()``.

    Raises:
        BudgetInfeasibleError: the target is out of the strategy's reach (``.reachable``
            lists every constraint's range).
        ToolkitError: a target <= 0 or other bad input.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> _ = torch.manual_seed(0)
        >>> model, x = at.create_model("cifar_resnet20"), torch.randn(1, 3, 32, 32)
        >>> fit = at.fit_to_budget(model, at.strategy_preset("uniform_l1"), "20M", x)
        >>> fit.within_tolerance, 19_000_000 <= fit.predicted_macs <= 20_200_000
        (True, True)
        >>> both = at.fit_to_budget(model, at.Strategy(), constraints={"macs": "60%", "params": "40%"},
        ...                         plan=fit.plan)
        >>> both.binding, both.within_tolerance
        ('params', True)
    """
    start = time.perf_counter()
    if not isinstance(strategy, Strategy):
        raise ToolkitError(f"strategy must be an agentic_toolkit.Strategy, got {type(strategy).__name__}")
    check_counter(counter)
    specs = check_constraints(target_macs, constraints)
    up, down = check_tolerance(tolerance)
    if example_inputs is None and plan is None:
        raise ToolkitError("fit_to_budget needs example_inputs (e.g. torch.randn(1, 3, 224, 224)) or a plan")
    p = get_plan(model, example_inputs, calibration, plan)
    p.check_strategy(strategy)
    params = ParamModel(p.source, p.sizes, p.prunable_keys)
    selections: dict[float, Selection] = {}
    mac_probe = _Probe(p, strategy, lambda sel: p.predict_macs(sel, counter), selections)
    probes = {"macs": mac_probe, "params": _Probe(p, strategy, lambda sel: params.predict(p.widths(sel)), selections)}
    bases = {"macs": p.base_count(counter), "params": params.base}
    lat = _latency_model(p, strategy, specs, latency_model, device, threads)
    if lat is not None:
        probes["latency"] = _Probe(p, strategy, lambda sel: lat.predict_us(p.widths(sel)), selections)
        bases["latency"] = lat.predict_us({})
    cons = [_constraint(kind, spec, bases[kind], probes[kind], (down, up)) for kind, spec in specs.items()]
    _check_reachable(cons, strategy)
    binding = _solve(cons, probes)
    counted = _Counts(p, strategy, mac_probe, counter)
    ratio, macs = _macs_at(binding, counted, type(model).__name__)
    for c in cons:
        c.achieved = macs if c.kind == "macs" else probes[c.kind](ratio)
    within = all(c.met for c in cons)
    _warn_outside(cons, params, (up, down))
    mac_target = next((c.target for c in cons if c.kind == "macs"), None)
    return BudgetFit(
        strategy=strategy.replace(pruning_ratio=float(ratio)),
        target_macs=mac_target,
        predicted_macs=int(macs),
        base_macs=int(bases["macs"]),
        min_macs=int(mac_probe(MAX_RATIO)),
        max_macs=int(bases["macs"]),
        probes=len(selections),
        within_tolerance=within,
        tolerance=(up, down),
        seconds=time.perf_counter() - start,
        plan=p,
        selection=selections[ratio],
        trace=probes[binding.kind].trace,
        counter=counter,
        counts=counted.counts,
        predicted_params=probes["params"](ratio),
        constraints=cons,
        latency_model=lat,
        _pruned=counted.best,
    )


def _latency_model(p: PrunePlan, strategy: Strategy, specs: Mapping[str, Any], given: Any, device: str,
                   threads: int | None):
    """The latency model a fit needs (a latency constraint or ``round_to="auto"``), else None;
    for ``"auto"`` the plan's per-group multiples are set from it."""
    auto = strategy.round_to == "auto"
    if "latency" not in specs and not auto and given is None:
        return None
    from .latency_model import LatencyModel, build_latency_model

    if given is not None and not isinstance(given, LatencyModel):
        raise ToolkitError(f"latency_model must be a LatencyModel (build_latency_model), got {type(given).__name__}")
    lat = given if given is not None and (given.steps or not auto) else build_latency_model(
        p, device, threads, auto_round=auto)
    if auto:
        p.auto_round_to = lat.round_multiples(p)
    return lat


def _macs_at(binding: Constraint, counted: _Counts, model_name: str) -> tuple[float, int]:
    """``(ratio, MACs)`` of the fit: the binding ratio and its predicted MACs, or, where the
    prediction is not the count (``"torch_pruning"``, an inexact MAC model), the pruned model
    counted (and the ratio corrected when MACs bind)."""
    ratio, plan = binding.ratio, counted.plan
    macs = counted.f(ratio)
    if counted.counter == "macs" and plan.mac_model.inexact:
        warnings.warn(
            f"the analytic MAC model is not exact for {model_name} (e.g. an attention layout other "
            "than a fused qkv Linear): the solved model is pruned and counted to verify it",
            stacklevel=3,
        )
    if counted.counter == "macs" and not plan.mac_model.inexact:
        return ratio, macs
    if binding.kind == "macs":
        return counted.verify(ratio, binding.target, binding.smallest, binding.band)
    return ratio, counted.count(ratio)  # the MACs of the model the binding constraint chose


def _solve(cons: list[Constraint], probes: dict[str, _Probe]) -> Constraint:
    """Solve each constraint alone and mark the most restrictive one (largest ratio) binding.
    A constraint already at or below its target at the largest ratio so far is not solved:
    counts fall with the ratio, so its own ratio cannot be larger."""
    binding: Constraint | None = None
    for c in cons:
        if binding is not None and probes[c.kind](binding.ratio) <= c.target:
            continue
        c.ratio = _closest(_bracket(probes[c.kind], c.target, c.smallest), c.target, c.band)[0]
        if binding is None or c.ratio > binding.ratio:
            binding = c
    binding.binding = True
    return binding


def _constraint(kind: str, spec, base: int, probe: _Probe, tolerance: tuple[float, float]) -> Constraint:
    down, up = tolerance
    target = resolve_target(kind, spec, base)
    band = (target * (1 - down / 100.0), target * (1 + up / 100.0))
    return Constraint(kind, spec, target, int(base), int(probe(MAX_RATIO)), band)


def _warn_outside(cons: list[Constraint], params: ParamModel, tolerance: tuple[float, float]) -> None:
    up, down = tolerance
    for c in cons:
        if c.binding and not c.in_band:
            warnings.warn(
                f"the closest reachable count, {fmt(c.kind, c.achieved)}, is outside the band [-{down}%, +{up}%] "
                f"of {fmt(c.kind, c.target)} (the strategy's steps are too coarse here; try a smaller round_to)",
                stacklevel=3,
            )
        elif not c.met:
            warnings.warn(f"{c.kind} {fmt(c.kind, c.achieved)} end above the band (+{up}%) of their target "
                          f"{fmt(c.kind, c.target)} at the ratio the binding constraint chose", stacklevel=3)
    if params.approximate and any(c.kind == "params" for c in cons):
        warnings.warn("the parameter prediction is approximate: " + "; ".join(params.approximate[:3]), stacklevel=3)


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

    def count(self, ratio: float) -> int:
        """Prune and count the model at ``ratio`` once (it becomes ``best``); its MACs."""
        self.best = self._count(ratio)
        return self.best.macs

    def _count(self, ratio: float) -> PruneResult:
        sel = self.f.selection(ratio)
        pruned = prune_with_plan(self.plan, self.strategy.replace(pruning_ratio=float(ratio)), selection=sel)
        result = recount(pruned, self.plan, self.counter, selection=sel)
        self.counts.append((float(ratio), int(result.predicted_macs), int(result.macs)))
        return result


class _Probe:
    """One count (``count(selection)``: predicted MACs in a convention, parameters) of the
    strategy at a ratio; each ratio is selected once, shared by the probes of one fit
    (``selections``), and counted once per probe."""

    def __init__(self, plan: PrunePlan, strategy: Strategy, count: Callable[[Selection], int],
                 selections: dict[float, Selection]):
        self.plan, self.strategy, self.count, self.selections = plan, strategy, count, selections
        self.cache: dict[float, int] = {}
        self.trace: list[tuple[float, int]] = []

    @property
    def probes(self) -> int:
        return len(self.trace)

    def selection(self, r: float) -> Selection:
        if r not in self.selections:
            self.selections[r] = self.plan.select(self.strategy, r)
        return self.selections[r]

    def __call__(self, r: float) -> int:
        if r not in self.cache:
            self.cache[r] = int(self.count(self.selection(r)))
            self.trace.append((r, self.cache[r]))
        return self.cache[r]


def _check_reachable(cons: list[Constraint], strategy: Strategy) -> None:
    """Raise :class:`BudgetInfeasibleError` when a constraint is below the smallest model the
    strategy allows, or every one is above the unpruned model (nothing to prune)."""
    low = [c for c in cons if c.smallest > c.band[1]]
    high = [c for c in cons if c.target > c.base]
    if not low and len(high) < len(cons):
        return
    c = (low or high)[0]
    hint = "Raise max_layer_ratio or multipliers, or un-ignore layers."
    lo, hi = (fmt(c.kind, v) for v in c.reachable)
    if len(cons) > 1:
        msg = infeasible_message(cons, hint if low else "")
    elif low:
        msg = (f"target {fmt(c.kind, c.target)} is below the smallest model this strategy allows ({lo} at "
               f"pruning_ratio ~1, max_layer_ratio={strategy.max_layer_ratio}); reachable: {lo} .. {hi}. {hint}")
    else:
        msg = f"target {fmt(c.kind, c.target)} is above the model's {hi}; this strategy reaches {lo} .. {hi}"
    details = {x.kind: {"target": x.target, "reachable": x.reachable} for x in cons}
    raise BudgetInfeasibleError(msg, c.target, c.reachable, details)


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
