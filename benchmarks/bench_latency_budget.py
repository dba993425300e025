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
- ``round_to`` rows (every model, unless ``--no-auto``): ~50% of the MACs (``--mac-pct``, or
  ``--mac-target 8.17G``) with ``round_to`` none, ``"auto"``, ``"auto+measured"`` (the auto
  fit and uniform multiples 8/16/32 timed whole, the most efficient kept: ``pick_rounding``;
  ``round_to_chosen``) and ``"auto+shape"`` (auto, with the per-group ratios tilted toward the
  groups whose MACs are slow on the device: ``latency_shaped_fit``); efficiency = speedup /
  MAC ratio.

The driver is ``reproduce.latency_budget`` (notebook 06 draws its figure from
the table). Writes data/bench_latency_budget.csv (machine columns via ``agentic_toolkit.tables.annotate``).

    .venv/bin/python benchmarks/bench_latency_budget.py                 # full run (idle machine)
    .venv/bin/python benchmarks/bench_latency_budget.py --threads 2
    .venv/bin/python benchmarks/bench_latency_budget.py --smoke         # CIFAR ResNet-20, -> data/smoke/
    .venv/bin/python benchmarks/bench_latency_budget.py --models convnext_small --targets "" --mac-target 8.17G --merge
    .venv/bin/python benchmarks/bench_latency_budget.py --models resnet50 --targets "" --onnx \
        --out data/bench_latency_budget_onnx.csv            # the round_to rows, PyTorch and onnxruntime
    .venv/bin/python benchmarks/bench_latency_budget.py --models resnet50 --targets "" --channels-last \
        --out data/bench_latency_budget_channels_last.csv   # the round_to rows in NHWC
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from agentic_toolkit.tables import machine_line, write_table
from reproduce.common import output_dir
from reproduce.latency_budget import MODELS, latency_budget_study

KEY = ["model", "batch_size", "experiment", "target_pct", "round_to"]


def _keys(df: pd.DataFrame) -> list[tuple]:
    cols = []
    for k in KEY:
        c = df[k]
        if k == "round_to":
            c = c.fillna("none").astype(str).replace({"None": "none", "": "none"})
        elif k == "target_pct":
            c = c.round(2)
        cols.append(c)
    return list(zip(*cols, strict=True))


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``old`` without the rows ``new`` re-measures (same :data:`KEY`), then ``new``."""
    fresh = set(_keys(new))
    return pd.concat([old[[k not in fresh for k in _keys(old)]], new], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help=f"comma-separated (default {','.join(MODELS)}; --smoke: cifar_resnet20)")
    ap.add_argument("--batch-sizes", default=None, help="default 1,16 (--smoke: 1,4)")
    ap.add_argument("--targets", default="50,70", help="latency targets in %% of the unpruned latency")
    ap.add_argument("--mac-pct", type=float, default=50.0, help="MAC target of the round_to rows (%%)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=None, help="benchmark warm-up runs (default 3; --smoke 1)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved pairs (default 20; --smoke 3)")
    ap.add_argument("--table-warmup", type=int, default=None, help="table warm-up runs (default 2; --smoke 1)")
    ap.add_argument("--table-repeats", type=int, default=None, help="table timings per width (default 7; --smoke 2)")
    ap.add_argument("--refine", type=int, default=2, help="measured correction rounds per latency target (default 2)")
    ap.add_argument("--mac-target", default=None, help="absolute MAC target of the round_to rows, e.g. 8.17G")
    ap.add_argument("--variants", default="none,auto,auto+measured,auto+shape",
                    help="round_to rows: none, auto, auto+measured, auto+shape")
    ap.add_argument("--no-auto", action="store_true", help="skip the round_to rows")
    ap.add_argument("--smoke", action="store_true", help="CIFAR ResNet-20 at batch 1 and 4, few repeats, -> data/smoke/")
    ap.add_argument("--onnx", action="store_true",
                    help="round_to rows also time onnxruntime (onnx_* columns; write them to their own --out)")
    ap.add_argument("--channels-last", action="store_true",
                    help="round_to rows time both models in NHWC (memory_format column; write them to their own --out)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of the existing --out CSV that this run does not re-measure (same model, "
                         "batch size, experiment, target and round_to)")
    ap.add_argument("--out", type=Path, default=None, help="default data/bench_latency_budget.csv (--smoke: data/smoke/)")
    args = ap.parse_args(argv)
    smoke = args.smoke
    if args.threads:
        torch.set_num_threads(args.threads)
    study = latency_budget_study(
        (args.models or ("cifar_resnet20" if smoke else ",".join(MODELS))).split(","),
        [int(b) for b in (args.batch_sizes or ("1,4" if smoke else "1,16")).split(",")],
        targets=[float(t) for t in args.targets.split(",") if t.strip()],
        mac_pct=args.mac_pct,
        round_to_rows=not args.no_auto,
        threads=torch.get_num_threads(),
        warmup=args.warmup if args.warmup is not None else (1 if smoke else 3),
        repeats=args.repeats or (3 if smoke else 20),
        table_warmup=args.table_warmup if args.table_warmup is not None else (1 if smoke else 2),
        table_repeats=args.table_repeats or (2 if smoke else 7),
        refine=args.refine,
        mac_target=args.mac_target,
        variants=args.variants.split(","),
        onnx=args.onnx,
        channels_last=args.channels_last,
    )
    path = args.out or output_dir(smoke) / "bench_latency_budget.csv"
    frame = study.to_frame()
    if args.merge and path.is_file():
        frame = merge_rows(pd.read_csv(path), frame)
    out = write_table(frame, path)
    r = study.report
    print(f"{r['within_7pct']}/{r['latency_targets']} latency targets within ±7% of the target speedup; "
          f"{r['seconds']:.0f} s\n{study.summary()}\n{machine_line(r['threads'])}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
