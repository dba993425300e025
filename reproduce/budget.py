"""The budget solver measured: how close it lands, and what it costs against one plain prune.

:func:`budget_targets` (``benchmarks/budget_targets.py``): for each model (random init with seed 0,
1x3x224x224, default strategy: magnitude_l2, isomorphic, global) one plan serves the paper's
targets and fractions of the baseline; every fit is pruned and the pruned model's MACs are
compared with the target and with the prediction, in the convention of ``counter``
(``"macs"`` or ``"torch_pruning"``: ``count_ops_and_params``, which then also counts each
pruned model itself).

:func:`budget_cost` (``benchmarks/bench_budget.py``): (fit + final prune) / (one prune at a
fixed ratio), both from scratch (dependency graph, importance scores and MAC profile
included), interleaved ``repeat`` times after a warm-up; medians compared.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from agentic_toolkit.models import create_model
from agentic_toolkit.pruning import Strategy, apply_isomorphic_prune, fit_to_budget, get_plan
from agentic_toolkit.units import format_macs, parse_macs

from .paper import IMAGENET_INPUT, PAPER_TARGETS

#: Targets of :func:`budget_cost`: the first paper target of three architectures.
COST_TARGETS = {"resnet50": "1.77G", "convnext_small": "8.17G", "deit_base_patch16_224": "4.16G"}


def _input(input_size: Sequence[int]) -> torch.Tensor:
    return torch.randn(*input_size, generator=torch.Generator().manual_seed(0))


def budget_targets(targets: Mapping[str, Sequence[str]] = PAPER_TARGETS,
                   fractions: Sequence[float] = (0.3, 0.5, 0.8),
                   strategy: Strategy | None = None,
                   input_size: tuple[int, ...] = IMAGENET_INPUT,
                   counter: str = "macs") -> pd.DataFrame:
    """Every absolute target of ``targets`` and every fraction of each baseline, fitted and pruned.

    Columns: ``model``, ``counter``, ``kind`` (``paper`` or ``fraction``), ``target``
    (label), ``target_macs``, ``base_macs``, ``achieved_macs``, ``predicted_macs``,
    ``error_pct`` (achieved vs target), ``probes``, ``ratio``, ``exact`` (pruned MACs ==
    prediction), ``seconds`` (fit + prune), ``plan_s`` (building the model's one plan), and
    for ``counter="torch_pruning"``: ``counts`` (pruned-and-counted probes),
    ``analytic_exact`` (the analytic prediction equalled the first count) and
    ``count_ops_macs`` (``torch_pruning.utils.count_ops_and_params`` of the pruned model;
    for ``"macs"`` these three are empty). Fractions are of the base in ``counter``.
    """
    strategy = strategy or Strategy()
    x = _input(input_size)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, absolute in targets.items():
            torch.manual_seed(0)  # random init: magnitude scores, hence the fit, depend on the weights
            model = create_model(name)
            t0 = time.perf_counter()
            plan = get_plan(model, x)
            plan_s = time.perf_counter() - t0
            wanted: list[tuple[str, str, int]] = [("paper", t, parse_macs(t)) for t in absolute]
            wanted += [("fraction", f"{f:.0%}", int(plan.base_count(counter) * f)) for f in fractions]
            for kind, label, target in wanted:
                t0 = time.perf_counter()
                fit = fit_to_budget(model, strategy, target, x, plan=plan, counter=counter)
                result = fit.prune()
                seconds = time.perf_counter() - t0
                rows.append({
                    "model": name, "counter": counter, "kind": kind, "target": label, "target_macs": int(target),
                    "base_macs": int(fit.base_macs), "achieved_macs": int(result.macs),
                    "predicted_macs": int(fit.predicted_macs),
                    "error_pct": round(100.0 * (result.macs - target) / target, 4),
                    "probes": fit.probes, "ratio": round(fit.ratio, 6),
                    "exact": bool(result.macs == fit.predicted_macs),
                    "seconds": round(seconds, 2), "plan_s": round(plan_s, 2), **_verification(fit, result, x),
                })
            del model, plan
    return pd.DataFrame(rows)


def _verification(fit, result, x: torch.Tensor) -> dict:
    """How a ``torch_pruning`` fit was verified, and ``count_ops_and_params`` of its model."""
    if fit.counter == "macs":
        return {"counts": None, "analytic_exact": None, "count_ops_macs": None}
    from agentic_toolkit.profiling.reference_counters import torch_pruning_macs

    return {
        "counts": len(fit.counts), "analytic_exact": bool(fit.counts[0][1] == fit.counts[0][2]),
        "count_ops_macs": torch_pruning_macs(result.model.eval(), x),
    }


def _fixed_prune(model, strategy: Strategy, x: torch.Tensor) -> float:
    start = time.perf_counter()
    apply_isomorphic_prune(model, strategy, x)
    return time.perf_counter() - start


def _fit_and_prune(model, strategy: Strategy, target_macs: int, x: torch.Tensor):
    start = time.perf_counter()
    fit = fit_to_budget(model, strategy, target_macs, x)
    result = fit.prune()
    return time.perf_counter() - start, fit, result


def budget_cost(targets: Mapping[str, str] = COST_TARGETS, repeat: int = 5, fixed_ratio: float = 0.3,
                strategy: Strategy | None = None,
                input_size: tuple[int, ...] = IMAGENET_INPUT) -> pd.DataFrame:
    """Median time of (fit_to_budget + prune) over one ``apply_isomorphic_prune`` at ``fixed_ratio``.

    Columns: ``model``, ``target``, ``target_macs``, ``achieved_macs``, ``error_pct``,
    ``probes``, ``repeat``, ``fixed_ratio``, ``fixed_s`` and ``fit_prune_s`` (medians),
    ``cost_ratio`` (fit_prune_s / fixed_s), ``exact`` (pruned MACs == prediction).
    """
    strategy = strategy or Strategy()
    x = _input(input_size)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm = create_model("cifar_resnet20")  # imports and first-call costs outside the timings
        fit_to_budget(warm, strategy, 20e6, torch.randn(1, 3, 32, 32)).prune()
        for name, target in targets.items():
            target_macs = parse_macs(target)
            torch.manual_seed(0)
            model = create_model(name)
            fixed, fitted = [], []
            for _ in range(max(1, repeat)):
                fixed.append(_fixed_prune(model, strategy.replace(pruning_ratio=fixed_ratio), x))
                t, fit, result = _fit_and_prune(model, strategy, target_macs, x)
                fitted.append(t)
            t_fixed, t_fit = statistics.median(fixed), statistics.median(fitted)
            rows.append({
                "model": name, "target": format_macs(target_macs), "target_macs": int(target_macs),
                "achieved_macs": int(result.macs),
                "error_pct": round(100.0 * (result.macs - target_macs) / target_macs, 4),
                "probes": fit.probes, "repeat": max(1, repeat), "fixed_ratio": fixed_ratio,
                "fixed_s": round(t_fixed, 3), "fit_prune_s": round(t_fit, 3),
                "cost_ratio": round(t_fit / t_fixed, 3), "exact": bool(result.macs == fit.predicted_macs),
            })
            del model
    return pd.DataFrame(rows)
