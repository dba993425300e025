"""A FastNAS-style sensitivity allocation: the strongest non-LLM baseline for a MAC budget.

What NVIDIA ModelOpt's FastNAS does for a FLOPs constraint, on this toolkit's plan:

1. **Sensitivity**: every prunable channel group alone loses a share of its channels (its
   least important by ``importance``; every other group unpruned) for each share in
   ``fractions``, and the evaluator scores the result (e.g. the BN-re-estimated proxy). The
   table is measured once per model and evaluator and reused for every budget.
2. **Threshold**: for a tolerated score drop ``tau`` each group takes the largest share
   whose drop is at most ``tau`` (drops made monotone in the share first); ``tau`` is bisected
   over the measured drops until the allocation's exact MACs meet the target.
3. **Landing**: the allocation becomes per-group multipliers (``group:<layer>`` scopes) of a
   per-group strategy, and :func:`~agentic_toolkit.fit_to_budget` scales it onto the budget
   band exactly, like every other strategy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch.nn as nn

from ..errors import ToolkitError
from ..parallel import Executor, resolve_executor, worker_pool
from ..pruning.apply import get_plan
from ..pruning.budget import BudgetFit, fit_to_budget
from ..pruning.plan import PrunePlan
from ..pruning.ranking import Selection
from ..pruning.strategy import Strategy

#: Shares of a group's channels removed when measuring its sensitivity.
FRACTIONS = (0.25, 0.5, 0.75)
#: The columns of a table's frame, in order (a logged table is read back in this order).
COLUMNS = ("group", "units", "fraction", "score", "drop")
_UNPRUNED = 1e-3  # multiplier of a group the allocation leaves whole (must be > 0)


@dataclass
class SensitivityTable:
    """Score of the model with one group pruned by each share (``frame``: group, fraction,
    score, drop), the unpruned score and the seconds the measurement took."""

    frame: pd.DataFrame
    unpruned_score: float
    importance: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.frame.to_dict("records"), "unpruned_score": self.unpruned_score,
                "importance": self.importance, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensitivityTable:
        frame = pd.DataFrame(d["rows"])
        return cls(frame[[c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]],
                   d["unpruned_score"], d["importance"], d["seconds"])

    @classmethod
    def combine(cls, *tables: SensitivityTable) -> SensitivityTable:
        """One table from several measured with the same evaluator and importance (e.g. a
        finer grid of shares added later); the seconds add up."""
        if not tables or len({t.importance for t in tables}) != 1:
            raise ToolkitError("combine needs at least one table, all with the same importance")
        if len({round(t.unpruned_score, 6) for t in tables}) != 1:
            raise ToolkitError("combine needs tables measured with the same evaluator (unpruned scores differ)")
        frame = pd.concat([t.frame for t in tables], ignore_index=True)
        order = {g: i for i, g in enumerate(dict.fromkeys(frame["group"]))}  # the plan's group order
        frame = frame.drop_duplicates(["group", "fraction"])
        frame = frame.sort_values(["group", "fraction"], key=lambda c: c.map(order) if c.name == "group" else c,
                                  kind="stable")
        return cls(frame.reset_index(drop=True), tables[0].unpruned_score, tables[0].importance,
                   sum(t.seconds for t in tables))

    def summary(self) -> str:
        worst = self.frame.sort_values("drop", ascending=False).head(3)
        most = ", ".join(f"{r.group} x{r.fraction:g}: -{r.drop:.1f}" for r in worst.itertuples())
        return (f"sensitivity of {self.frame['group'].nunique()} groups x {self.frame['fraction'].nunique()} "
                f"shares in {self.seconds:.0f} s (unpruned {self.unpruned_score:.2f}); most sensitive: {most}")


@dataclass
class SensitivityResult:
    """The landed strategy, its fit, the allocation per group and the search cost."""

    strategy: Strategy
    fit: BudgetFit
    allocation: dict[str, float]
    tau: float
    table: SensitivityTable
    seconds: float = field(default=0.0)

    def summary(self) -> str:
        pruned = sum(1 for v in self.allocation.values() if v > 0)
        return (f"sensitivity allocation: drop threshold {self.tau:.2f}, {pruned}/{len(self.allocation)} groups "
                f"pruned, {self.fit.predicted_macs:,} MACs ({self.fit.error_pct:+.2f}% of target) in "
                f"{self.seconds:.0f} s")

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.to_dict(), "allocation": self.allocation, "tau": self.tau,
                "macs": self.fit.predicted_macs, "seconds": self.seconds, "table": self.table.to_dict()}


def measure_sensitivity(
    model: nn.Module,
    example_inputs,
    evaluator: Callable[[nn.Module], float],
    *,
    importance: str = "magnitude_l2",
    fractions: Sequence[float] = FRACTIONS,
    plan: PrunePlan | None = None,
    calibration=None,
    progress: bool = True,
    adaptive: bool = False,
    executor: Executor = None,
) -> SensitivityTable:
    """Score ``model`` with each prunable group alone pruned by each share in ``fractions``.

    Args:
        model: the unpruned model; example_inputs: its example inputs.
        evaluator: ``evaluator(model) -> score`` (higher is better), e.g. a proxy on val images.
        importance: the criterion that picks each group's channels to cut.
        fractions: the shares of a group's channels to cut, each in (0, 1).
        plan: a :class:`PrunePlan` of ``model`` to reuse; calibration: its calibration batches.
        adaptive: measure the middle share of every group first, then only the shares below it
            for the groups more sensitive than the median and the shares above it for the rest
            (about two probes per group instead of three: a sensitive group needs resolution
            below, an insensitive one the larger cuts).
        executor: None (the probes one after the other here), ``"ray"`` or a
            :class:`~agentic_toolkit.parallel.RayExecutor`: the probes fanned out to Ray
            workers, each holding one copy of the plan (with the model) and the evaluator
            (with its images). The table is the same as the sequential one (an evaluator
            with a ``calls`` count is credited with the workers' calls).

    Returns:
        A :class:`SensitivityTable` (one row per measured group and share).
    """
    fractions = sorted(fractions)
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise ToolkitError(f"fractions must be shares in (0, 1), got {list(fractions)}")
    t0 = time.perf_counter()
    p = get_plan(model, example_inputs, calibration, plan)
    groups = p.group_scopes()
    strategy = Strategy(importance=importance, isomorphic=False, global_pruning=False)
    remote = resolve_executor(executor) is not None
    if remote:
        p.importance(importance)  # scored here: an unpickled plan reuses the scores, it cannot rescore
    with _replaying(evaluator, p, groups), worker_pool((p, evaluator, strategy), executor) as pool:
        base = float(evaluator(p.source))  # with a replay: records the reference's outputs

        def measure(jobs: list[tuple[str, float]]) -> list[dict[str, Any]]:
            items = [(groups[k].index, _cut_units(groups[k].units, f), f) for k, f in jobs]
            scores = pool.map(_probe_score, items, on_result=lambda _: bar.update(1))
            if remote and isinstance(getattr(evaluator, "calls", None), int):
                evaluator.calls += sum(n > 0 for _, n, _ in items)  # the workers' calls, as if made here
            return [{"group": k, "units": groups[k].units, "fraction": f, "score": base if s is None else s,
                     "drop": base - (base if s is None else s)} for (k, f), s in zip(jobs, scores, strict=True)]

        if adaptive and len(fractions) > 1:
            mid = fractions[len(fractions) // 2]
            bar = _bar(len(groups) * (1 + (len(fractions) - 1) // 2), progress)
            first = measure([(k, mid) for k in groups])
            median = float(np.median([r["drop"] for r in first]))
            rest = [(r["group"], f) for r in first
                    for f in (fractions[: len(fractions) // 2] if r["drop"] > median else fractions[len(fractions) // 2 + 1:])]
            rows = first + measure(rest)
        else:
            bar = _bar(len(groups) * len(fractions), progress)
            rows = measure([(k, f) for k in groups for f in fractions])
    bar.close()
    order = {k: i for i, k in enumerate(groups)}
    rows.sort(key=lambda r: (order[r["group"]], r["fraction"]))
    return SensitivityTable(pd.DataFrame(rows), base, importance, time.perf_counter() - t0)


def _replaying(evaluator, plan: PrunePlan, groups: dict) -> contextlib.AbstractContextManager:
    """A proxy scorer replays the unpruned model's forward up to each probe's first cut layer
    (:mod:`~agentic_toolkit.training.prefix_replay`): the same scores for about half the
    computation on a chain of blocks. Other evaluators score as they are."""
    replaying = getattr(evaluator, "replaying", None)
    if not callable(replaying):
        return contextlib.nullcontext()
    return replaying(plan.source, [{m.name for m in g.members} for g in groups.values()])


def _cut_units(units: int, share: float) -> int:
    """Channels (units) a probe removes from a group of ``units`` at ``share`` (never all)."""
    return min(int(round(share * units)), units - 1)


def _probe_score(shared: tuple[PrunePlan, Callable[[nn.Module], float], Strategy],
                 item: tuple[int, int, float]) -> float | None:
    """The score of the plan's model with group ``index`` cut by ``n`` units at ``share``
    (``item``; None when nothing is cut: the unpruned score). Runs in this process or in a
    worker holding ``shared``."""
    plan, evaluator, strategy = shared
    index, n, share = item
    if n <= 0:
        return None
    pruned, _ = plan.apply(Selection(share, removed_units={index: n}), strategy)
    return float(evaluator(pruned))


def sensitivity_search(
    model: nn.Module,
    target_macs: int,
    example_inputs,
    table: SensitivityTable,
    *,
    plan: PrunePlan | None = None,
    calibration=None,
    tolerance: tuple[float, float] = (1.0, 5.0),
) -> SensitivityResult:
    """Allocate per-group shares from ``table`` under ``target_macs`` and land them exactly."""
    t0 = time.perf_counter()
    p = get_plan(model, example_inputs, calibration, plan)
    strategy, tau, alloc = allocation_strategy(p, table, target_macs)
    fit = fit_to_budget(model, strategy, target_macs, example_inputs, tolerance=tolerance, plan=p)
    return SensitivityResult(fit.strategy, fit, alloc, tau, table, table.seconds + time.perf_counter() - t0)


def allocation_strategy(plan: PrunePlan, table: SensitivityTable, target_macs: int) -> tuple[Strategy, float, dict]:
    """``(strategy before landing, threshold tau, share per group)`` of the threshold allocation
    whose exact MACs meet ``target_macs`` (see the module docstring)."""
    curves = _monotone_curves(table.frame)
    taus = np.unique(np.concatenate([[0.0], table.frame["drop"].clip(lower=0).to_numpy()]))
    lo, hi = 0, len(taus) - 1
    if _macs(plan, curves, taus[hi]) > target_macs:
        tau = float(taus[hi])  # even the largest shares everywhere do not reach it: the solver scales up
    else:
        while lo < hi:  # smallest tau whose allocation meets the target
            mid = (lo + hi) // 2
            if _macs(plan, curves, taus[mid]) <= target_macs:
                hi = mid
            else:
                lo = mid + 1
        tau = float(taus[lo])
    alloc = _allocation(curves, tau)
    return _to_strategy(alloc, table.importance), tau, alloc


def efficiency_allocation(plan: PrunePlan, table: SensitivityTable, target_macs: int) -> tuple[Strategy, dict]:
    """``(strategy before landing, share per group)``: starting from the unpruned model, each
    step moves the group to its next measured share whose proxy drop per MAC saved is the
    smallest (MACs exact for the whole allocation so far), until the target is met.

    Unlike the threshold allocation (FastNAS: one tolerated drop for every group, whatever the
    group costs), this weighs each group's sensitivity against the MACs it frees."""
    curves = _monotone_curves(table.frame)
    alloc = dict.fromkeys(curves, 0.0)
    level = dict.fromkeys(curves, 0)
    macs = _alloc_macs(plan, alloc)
    while macs > target_macs:
        best = None
        for key, curve in curves.items():
            i = level[key]
            if i >= len(curve):
                continue
            share, drop = curve[i]
            saved = macs - _alloc_macs(plan, {**alloc, key: share})
            if saved > 0:
                cost = (drop - (curve[i - 1][1] if i else 0.0)) / saved
                if best is None or cost < best[0]:
                    best = (cost, key, share, macs - saved)
        if best is None:
            break  # every group at its largest measured share: the solver scales the rest
        _, key, share, macs = best
        alloc[key], level[key] = share, level[key] + 1
    return _to_strategy(alloc, table.importance), alloc


def _to_strategy(alloc: dict[str, float], importance: str) -> Strategy:
    """Per-group multipliers of a per-group (uniform-grouping) strategy for the shares ``alloc``."""
    ref = max(alloc.values()) or max(FRACTIONS)
    return Strategy(
        importance=importance, isomorphic=False, global_pruning=False, pruning_ratio=ref,
        multipliers={k: (v / ref if v > 0 else _UNPRUNED) for k, v in alloc.items()},
    )


def seed_proposals_for(plan: PrunePlan, table: SensitivityTable, target_macs: int) -> list:
    """The two allocations as search proposals (proposer ``profiling``), for
    :class:`~agentic_toolkit.AgenticSearch` ``(start=SearchStart(sensitivity=...))``: per MAC saved first, then
    the threshold allocation (left out when it is the same strategy: a repeated proposal would
    end the search)."""
    from .analysis import Proposal

    def spared(alloc):
        return ", ".join(sorted(k.removeprefix("group:") for k, v in alloc.items() if v == 0)) or "none"

    eff, eff_alloc = efficiency_allocation(plan, table, target_macs)
    thr, tau, thr_alloc = allocation_strategy(plan, table, target_macs)
    whys = [
        f"Profiling agent's sensitivity allocation per MAC saved: each step cuts the group whose next measured "
        f"share costs the least proxy score per MAC freed; spared: {spared(eff_alloc)}",
        f"Profiling agent's sensitivity allocation by threshold: each of {len(thr_alloc)} groups takes the largest "
        f"measured share whose proxy drop is <= {tau:.2f} points; spared: {spared(thr_alloc)}",
    ]
    seeds = [(eff, whys[0])] + ([(thr, whys[1])] if thr != eff else [])  # one seed when both agree
    return [Proposal(strategy=st, rationale=why, prompt="", raw_reply="", backend="profiling", proposer="profiling")
            for st, why in seeds]


def seed_proposals(search, sensitivity, preset) -> tuple[list, SensitivityTable | None, dict | None]:
    """``(proposals, table, spec)`` for an :class:`~agentic_toolkit.AgenticSearch`: the
    allocations from ``sensitivity`` (``True``: measured now as the search ``preset`` says; a
    :class:`SensitivityTable`; ``False``: none; ``None``: as the preset says, which measures
    only when there is an evaluator) and ``spec``, what decided the table (the history header's
    ``sensitivity``; None without one). A table logged by the search being resumed is read
    back, not measured again."""
    if sensitivity is None:
        sensitivity = bool(preset.sensitivity and search.evaluator is not None)
    if sensitivity is False:
        return [], None, None
    if isinstance(sensitivity, SensitivityTable):
        spec = {"given": True, "importance": sensitivity.importance, "rows": len(sensitivity.frame)}
    elif sensitivity is True:
        if search.evaluator is None:
            raise ToolkitError("sensitivity=True measures with the evaluator: pass evaluator=")
        spec = preset.table_spec(search.evaluator)
        logged = next((r for r in search.log.records if r.get("type") == "sensitivity"), None)
        sensitivity = SensitivityTable.from_dict(logged) if logged is not None else measure_sensitivity(
            search.model, search.example_inputs, preset.probe(search.evaluator), plan=search.plan,
            progress=search.progress, fractions=preset.fractions, adaptive=preset.adaptive,
            executor=search.budget.executor)
    else:
        raise ToolkitError(f"sensitivity must be True, False or a SensitivityTable, got {type(sensitivity).__name__}")
    return seed_proposals_for(search.plan, sensitivity, search.target_macs), sensitivity, spec


def _monotone_curves(frame: pd.DataFrame) -> dict[str, list[tuple[float, float]]]:
    """Per group: [(share, drop)] by share, each drop at least the drop of any smaller share."""
    curves = {}
    for key, rows in frame.sort_values("fraction").groupby("group", sort=False):
        drops = np.maximum.accumulate(rows["drop"].clip(lower=0).to_numpy())
        curves[key] = list(zip(rows["fraction"].tolist(), drops.tolist(), strict=True))
    return curves


def _allocation(curves: dict[str, list[tuple[float, float]]], tau: float) -> dict[str, float]:
    return {k: max((f for f, d in c if d <= tau), default=0.0) for k, c in curves.items()}


def _macs(p: PrunePlan, curves, tau: float) -> int:
    return _alloc_macs(p, _allocation(curves, tau))


def _alloc_macs(p: PrunePlan, alloc: dict[str, float]) -> int:
    """Exact MACs of the plan's model with each group cut by its share in ``alloc``."""
    groups = p.group_scopes()
    removed = {}
    for key, share in alloc.items():
        g = groups[key]
        n = min(int(round(share * g.units)), g.units - 1)
        if n > 0:
            removed[g.index] = n
    return p.predict_macs(Selection(0.0, removed_units=removed))


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sensitivity", disable=not progress, leave=False)
