"""Latency budgets: predicted vs measured speedup, and round_to="auto" efficiency, on this CPU.

For each model (timm, random weights, 224 px) and batch size, a latency table is measured
once (``build_latency_model``, cached under the toolkit's cache dir), then

- ``latency_target`` rows: ``fit_to_budget(constraints={"latency": "50%"})`` (and 70%) with
  the default strategy; the pruned model is timed against the unpruned one, interleaved
  (``benchmark`` with a baseline), and corrected at most ``--refine`` times
  (``refine_latency_fit``: solve again for the target scaled by predicted / measured).
  ``target_speedup`` = 100 / target %; ``open_speedup`` / ``open_ratio`` are the
  uncorrected fit's measured speedup and its ratio to the target's (the table's accuracy),
  ``speedup`` / ``speedup_ratio`` those of the returned fit (acceptance: within ±7%,
  ``within_7pct``), beside the predicted latencies;
- ``round_to`` rows (the first model only, ResNet-50 by default): ~50% of the MACs with
  ``round_to`` none and ``"auto"``; efficiency = speedup / MAC ratio.

Writes data/bench_latency_budget.csv (machine columns via ``studies.machine.annotate``).

    .venv/bin/python benchmarks/bench_latency_budget.py                 # full run (idle machine)
    .venv/bin/python benchmarks/bench_latency_budget.py --threads 2
    .venv/bin/python benchmarks/bench_latency_budget.py --smoke         # CIFAR ResNet-20, -> data/smoke/
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

import agentic_toolkit as at
from agentic_toolkit.pruning.latency_fit import refine_latency_fit
from agentic_toolkit.pruning.latency_model import build_latency_model
from agentic_toolkit.studies.machine import annotate, machine_line, output_dir, write_table

MODELS = "resnet50,convnext_small,deit_small_patch16_224"


def _model(name: str):
    if name.startswith("cifar_"):
        return at.create_model(name).eval(), 32
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval(), 224


def _measure(model, pruned, shape, args) -> dict:
    """Interleaved timing of ``pruned`` against ``model`` at one batch size."""
    res = at.benchmark(pruned, shape, baseline=model, batch_sizes=(shape[0],), warmup=args.warmup,
                       repeats=args.repeats, measure_memory=False)
    r = res.rows[0]
    return {"latency_ms": r["latency_ms"], "baseline_latency_ms": r["baseline_latency_ms"],
            "speedup": r["speedup_median"], "speedup_min": r["speedup_min"], "speedup_max": r["speedup_max"],
            "mac_ratio": res.mac_ratio, "efficiency": r["efficiency"], "repeats": res.repeats}


def _row(name: str, batch: int, experiment: str, fit, lat, measured: dict, **extra) -> dict:
    base_pred = lat.base_ms
    pred = fit.predicted_latency_ms
    return {"model": name, "batch_size": batch, "experiment": experiment, **extra,
            "round_to": str(fit.strategy.round_to), "pruning_ratio": fit.ratio,
            "mac_fraction": fit.predicted_macs / fit.base_macs, "base_predicted_ms": base_pred,
            "predicted_ms": pred, "predicted_speedup": base_pred / pred, **measured,
            "table_measurements": lat.measurements, "table_seconds": lat.seconds}


def run_model(name: str, batch: int, first: bool, args) -> list[dict]:
    """All rows of one model at one batch size."""
    model, side = _model(name)
    shape = (batch, 3, side, side)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = at.get_plan(model, x)
        lat = build_latency_model(plan, "cpu", torch.get_num_threads(), warmup=args.table_warmup,
                                  repeats=args.table_repeats, auto_round=first and not args.no_auto)
    rows = []
    for pct in args.targets:
        fit = at.fit_to_budget(model, at.Strategy(), example_inputs=x, plan=plan, latency_model=lat,
                               constraints={"latency": f"{pct:g}%"})
        ref = refine_latency_fit(model, fit, rounds=args.refine, warmup=args.warmup, repeats=args.repeats)
        c, first, target = ref.best, ref.checks[0], 100.0 / pct
        measured = {"latency_ms": c.latency_ms, "baseline_latency_ms": c.baseline_latency_ms, "speedup": c.speedup,
                    "speedup_min": c.speedup_min, "speedup_max": c.speedup_max}
        row = _row(name, batch, "latency_target", ref.fit, lat, measured, target_pct=pct, target_speedup=target,
                   speedup_ratio=c.speedup / target, open_speedup=first.speedup,
                   open_ratio=first.speedup / target, rounds=len(ref.checks) - 1)
        row["within_7pct"] = abs(row["speedup_ratio"] - 1) <= 0.07
        rows.append(row)
        print(f"{name} b{batch} latency {pct:g}%: target {target:.2f}x, predicted {row['predicted_speedup']:.2f}x "
              f"({row['predicted_ms']:.2f} ms); measured uncorrected {first.speedup:.2f}x (ratio "
              f"{row['open_ratio']:.3f}), after {row['rounds']} correction(s) {c.speedup:.2f}x ({c.latency_ms:.2f} ms "
              f"vs {c.baseline_latency_ms:.2f}), ratio {row['speedup_ratio']:.3f} "
              f"{'OK' if row['within_7pct'] else 'MISS'} (MACs {100 * row['mac_fraction']:.0f}%)", flush=True)
    if first and not args.no_auto:
        for rt in (None, "auto"):
            fit = at.fit_to_budget(model, at.Strategy(round_to=rt), example_inputs=x, plan=plan, latency_model=lat,
                                   target_macs=f"{args.mac_pct:g}%")
            measured = _measure(model, fit.prune().model, shape, args)
            rows.append(_row(name, batch, "round_to", fit, lat, measured, target_pct=args.mac_pct))
            print(f"{name} b{batch} {args.mac_pct:g}% MACs round_to={rt}: speedup {measured['speedup']:.2f}x, "
                  f"MAC ratio {measured['mac_ratio']:.2f}x, efficiency {measured['efficiency']:.2f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help=f"comma-separated (default {MODELS}; --smoke: cifar_resnet20)")
    ap.add_argument("--batch-sizes", default=None, help="default 1,16 (--smoke: 1,4)")
    ap.add_argument("--targets", default="50,70", help="latency targets in %% of the unpruned latency")
    ap.add_argument("--mac-pct", type=float, default=50.0, help="MAC target of the round_to rows (%%)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=None, help="benchmark warm-up runs (default 3; --smoke 1)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved pairs (default 20; --smoke 3)")
    ap.add_argument("--table-warmup", type=int, default=None, help="table warm-up runs (default 2; --smoke 1)")
    ap.add_argument("--table-repeats", type=int, default=None, help="table timings per width (default 7; --smoke 2)")
    ap.add_argument("--refine", type=int, default=1, help="measured correction rounds per latency target (default 1)")
    ap.add_argument("--no-auto", action="store_true", help="skip the round_to rows")
    ap.add_argument("--smoke", action="store_true", help="CIFAR ResNet-20 at batch 1 and 4, few repeats, -> data/smoke/")
    ap.add_argument("--out", type=Path, default=None, help="default data/bench_latency_budget.csv (--smoke: data/smoke/)")
    args = ap.parse_args(argv)
    smoke = args.smoke
    names = (args.models or ("cifar_resnet20" if smoke else MODELS)).split(",")
    batches = [int(b) for b in (args.batch_sizes or ("1,4" if smoke else "1,16")).split(",")]
    args.targets = [float(t) for t in args.targets.split(",")]
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 3)
    args.repeats = args.repeats or (3 if smoke else 20)
    args.table_warmup = args.table_warmup if args.table_warmup is not None else (1 if smoke else 2)
    args.table_repeats = args.table_repeats or (2 if smoke else 7)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = [r for b in batches for i, n in enumerate(names) for r in run_model(n, b, i == 0, args)]
    threads = torch.get_num_threads()
    df = annotate(pd.DataFrame(rows), threads=threads)
    out = write_table(df, args.out or output_dir(smoke) / "bench_latency_budget.csv")
    hits = df[df["experiment"] == "latency_target"]["within_7pct"]
    print(f"{int(hits.sum())}/{len(hits)} latency targets within ±7% of the target speedup; "
          f"{time.perf_counter() - start:.0f} s\n{machine_line(threads)}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
