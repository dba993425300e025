"""Reproducible experiment drivers shared by benchmarks/ scripts and notebooks.

:func:`convergence_study` is the paper's convergence experiment: how many revisions each
proposer needs to land in the MAC band, with ``solve_budget`` off (the proposer's ratio is
used as is, the paper's setting) and on (``fit_to_budget`` sets it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..agents.master import run_agentic_pruning
from ..models import create_model
from ..pruning.apply import get_plan
from ..units import format_macs, parse_macs

PAPER_MODELS = ("resnet50", "resnet101", "convnext_small", "deit_base_patch16_224")
FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7)
#: The paper's absolute MAC targets per model.
PAPER_TARGETS = {
    "resnet50": ("1.77G",),
    "resnet101": ("4.22G",),
    "convnext_small": ("8.17G",),
    "deit_base_patch16_224": ("4.16G", "2.61G"),
}


def study_targets(model: str, fractions: Sequence[float] = FRACTIONS, smoke: bool = False) -> list[tuple[str, float | str]]:
    """(label, target) pairs: fractions of the baseline, then the paper's absolute targets."""
    targets: list[tuple[str, float | str]] = [(f"{round(f * 100)}%", f) for f in fractions]
    targets += [(t, t) for t in PAPER_TARGETS.get(model, ())]
    return [targets[len(targets) // 2], targets[-1]] if smoke and len(targets) > 2 else targets


def convergence_study(
    models: Iterable[str] = PAPER_MODELS,
    backends: Sequence[str] = ("grid", "analyst"),
    *,
    fractions: Sequence[float] = FRACTIONS,
    solve_budget_modes: Sequence[bool] = (False, True),
    tolerance: tuple[float, float] = (1.0, 5.0),
    max_revisions: int = 5,
    input_size: tuple[int, ...] = (1, 3, 224, 224),
    smoke: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every model x target x solve_budget x backend search (MACs only, no evaluator).

    Models are random-init (seed 0); one pruning plan per model is shared by its searches.
    Returns one row per search with the per-revision ratios and errors as JSON lists.
    """
    models = list(models)
    jobs = {m: study_targets(m, fractions, smoke) for m in models}
    total = sum(len(t) for t in jobs.values()) * len(backends) * len(solve_budget_modes)
    rows = []
    with tqdm(total=total, desc="convergence", unit="search", disable=not progress) as bar:
        for name, targets in jobs.items():
            torch.manual_seed(0)
            model = create_model(name)
            x = torch.randn(*input_size, generator=torch.Generator().manual_seed(0))
            plan = get_plan(model, x)
            base = int(plan.base_macs)
            for label, target in targets:
                target_macs = int(round(target * base)) if isinstance(target, float) else parse_macs(target)
                for solve_budget in solve_budget_modes:
                    for backend in backends:
                        t0 = time.perf_counter()
                        res = run_agentic_pruning(
                            model, target_macs, x, tolerance=tolerance, max_revisions=max_revisions,
                            backend=backend, solve_budget=solve_budget, progress=False, model_name=name, plan=plan,
                        )
                        revs = res.records
                        rows.append({
                            "model": name, "target": label, "target_macs": target_macs,
                            "target_fraction": round(target_macs / base, 4), "base_macs": base,
                            "backend": backend, "solve_budget": solve_budget, "converged": res.converged,
                            "revisions": res.revisions, "first_in_band": res.first_in_band,
                            "achieved_macs": res.macs,
                            "error_pct": None if res.error_pct is None else round(res.error_pct, 4),
                            "stop_reason": res.stop_reason,
                            "fallbacks": sum(bool(r.get("fallback")) for r in revs),
                            "ratios": json.dumps([(r.get("strategy") or {}).get("pruning_ratio") for r in revs]),
                            "errors_pct": json.dumps(
                                [None if r.get("error_pct") is None else round(r["error_pct"], 4) for r in revs]
                            ),
                            "wall_s": round(time.perf_counter() - t0, 2),
                        })
                        bar.update(1)
                        bar.set_postfix_str(f"{name} {label} {backend} -> {format_macs(res.macs or 0)}", refresh=False)
            del model, plan
    return pd.DataFrame(rows)


def summarise_convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Success rate and revisions per backend and solve_budget setting."""
    rows = []
    for (backend, sb), g in df.groupby(["backend", "solve_budget"], sort=False):
        ok = g[g["converged"]]
        rows.append({
            "backend": backend,
            "solve_budget": sb,
            "cases": len(g),
            "success_rate_%": round(100 * len(ok) / len(g), 1),
            "mean_revisions_converged": round(ok["first_in_band"].mean(), 2) if len(ok) else None,
            "max_revisions_converged": int(ok["first_in_band"].max()) if len(ok) else None,
            "mean_revisions_all": round(g["revisions"].mean(), 2),
        })
    return pd.DataFrame(rows)


def error_trajectories(df: pd.DataFrame) -> pd.DataFrame:
    """Long table (one row per search revision) of the MAC error, for trajectory plots."""
    rows = []
    for _, r in df.iterrows():
        for i, err in enumerate(json.loads(r["errors_pct"]), start=1):
            rows.append({"model": r["model"], "target": r["target"], "backend": r["backend"],
                         "solve_budget": r["solve_budget"], "revision": i, "error_pct": err})
    return pd.DataFrame(rows)
