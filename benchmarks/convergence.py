"""Convergence study: how many revisions each proposer needs to land in the MAC band.

Grid baseline vs the offline analyst (vs Claude when ANTHROPIC_API_KEY is set) on the
paper's four models (timm ResNet-50, ResNet-101, ConvNeXt-Small, DeiT-Base; random init,
1x3x224x224) x targets at 30/40/50/60/70% of the baseline MACs plus the paper's absolute
targets, max_revisions=5, band +1%/-5%, with solve_budget off (the proposer's ratio is
used as is) and on (fit_to_budget sets it). No evaluator: MACs only, so it runs on CPU.

Writes data/convergence.csv (one row per case x backend x solve_budget, with the
per-revision ratios and errors as JSON lists for trajectory plots) and prints the success
rate and mean revisions per backend.

    python benchmarks/convergence.py            # the full study
    python benchmarks/convergence.py --smoke    # one model, two targets -> data/smoke/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentic_toolkit.master import run_agentic_pruning  # noqa: E402
from agentic_toolkit.models import create_model  # noqa: E402
from agentic_toolkit.profiling import profile_macs  # noqa: E402
from agentic_toolkit.pruning import get_plan  # noqa: E402
from agentic_toolkit.units import format_macs, parse_macs  # noqa: E402

MODELS = ("resnet50", "resnet101", "convnext_small", "deit_base_patch16_224")
FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7)
#: The paper's absolute targets (Table of results), MACs.
PAPER_TARGETS = {
    "resnet50": ("1.77G",),
    "resnet101": ("4.22G",),
    "convnext_small": ("8.17G",),
    "deit_base_patch16_224": ("4.16G", "2.61G"),
}
TOLERANCE = (1.0, 5.0)
MAX_REVISIONS = 5


def cases(models, smoke: bool):
    for name in models:
        targets = [(f"{int(f * 100)}%", f) for f in FRACTIONS] + [(t, t) for t in PAPER_TARGETS.get(name, ())]
        if smoke:
            targets = [targets[2], targets[-1]]
        yield name, targets


def run_case(model, x, plan, model_name, label, target, backend, solve_budget) -> dict:
    base_macs = plan.base_macs
    target_macs = int(round(target * base_macs)) if isinstance(target, float) else parse_macs(target)
    t0 = time.perf_counter()
    result = run_agentic_pruning(
        model, target_macs, x, tolerance=TOLERANCE, max_revisions=MAX_REVISIONS, backend=backend,
        solve_budget=solve_budget, progress=False, model_name=model_name, plan=plan,
    )
    revs = result.records
    return {
        "model": model_name,
        "target": label,
        "target_macs": target_macs,
        "target_fraction": round(target_macs / base_macs, 4),
        "base_macs": base_macs,
        "backend": backend,
        "solve_budget": solve_budget,
        "converged": result.converged,
        "revisions": result.revisions,
        "first_in_band": result.first_in_band,
        "achieved_macs": result.macs,
        "error_pct": None if result.error_pct is None else round(result.error_pct, 4),
        "stop_reason": result.stop_reason,
        "fallbacks": sum(bool(r.get("fallback")) for r in revs),
        "ratios": json.dumps([(r.get("strategy") or {}).get("pruning_ratio") for r in revs]),
        "errors_pct": json.dumps([None if r.get("error_pct") is None else round(r["error_pct"], 4) for r in revs]),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def summarise(df: pd.DataFrame) -> pd.DataFrame:
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="one model (resnet50), two targets")
    ap.add_argument("--models", nargs="*", default=None, help=f"subset of {', '.join(MODELS)}")
    ap.add_argument("--backends", nargs="*", default=None, help="default: grid analyst (+ anthropic with a key)")
    ap.add_argument("--out", default=None, help="default: data/convergence.csv (--smoke: data/smoke/convergence.csv)")
    args = ap.parse_args(argv)
    if args.out is None:  # a smoke run never overwrites the full study
        args.out = str(ROOT / "data" / ("smoke" if args.smoke else "") / "convergence.csv")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    models = args.models or (MODELS[:1] if args.smoke else MODELS)
    backends = args.backends or (["grid", "analyst"] + (["anthropic"] if os.environ.get("ANTHROPIC_API_KEY") else []))
    plan = [(m, ts) for m, ts in cases(models, args.smoke)]
    total = sum(len(ts) for _, ts in plan) * len(backends) * 2
    rows = []
    bar = tqdm(total=total, desc="convergence", unit="case")
    for name, targets in plan:
        torch.manual_seed(0)  # the same random-init weights whichever models are selected
        model = create_model(name)
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        base = int(profile_macs(model, example_inputs=x).total_macs)
        plan = get_plan(model, x)  # one dependency graph per model, shared by its searches
        assert plan.base_macs == base, (plan.base_macs, base)
        tqdm.write(f"{name}: baseline {format_macs(base)} MACs")
        for label, target in targets:
            for solve_budget in (False, True):
                for backend in backends:
                    row = run_case(model, x, plan, name, label, target, backend, solve_budget)
                    rows.append(row)
                    bar.update(1)
                    tqdm.write(
                        f"  {label:>6} {backend:>9} solve_budget={solve_budget!s:5} -> "
                        f"{'ok ' if row['converged'] else 'MISS'} rev {row['first_in_band'] or '-'} "
                        f"errors {row['errors_pct']} ({row['wall_s']} s)"
                    )
        del model, plan
    bar.close()
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    summary = summarise(df)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}; wrote {out} ({len(df)} rows)")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
