"""Measured speedup of timm ResNet-50 pruned to ~50% of its MACs, against the unpruned model.

Both models are timed interleaved in one run (``agentic_toolkit.benchmark`` with a
baseline), so load changes on a shared machine affect both alike. Records, per batch size,
the median latency of each, the speedup as median with its min-max spread over the
interleaved pairs, and the efficiency = speedup / MAC ratio (1.0: latency fell exactly as
much as the MACs). Random weights: latency does not depend on them.

The pruned model comes from the budget solver with a uniform strategy (every layer loses
the same fraction of channels, L2 magnitude), without the agent loop. The driver is
:func:`reproduce.speedup.speedup_study` (notebook 06 runs it on the paper's
targets). Writes data/bench_speedup.csv (one row per batch size, with the machine, date,
versions and torch thread count).

    .venv/bin/python benchmarks/bench_speedup.py                       # torch's threads
    .venv/bin/python benchmarks/bench_speedup.py --threads 1 --repeats 15
    .venv/bin/python benchmarks/bench_speedup.py --smoke               # batch 1, 2 pairs -> data/smoke/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agentic_toolkit import Strategy
from agentic_toolkit.tables import annotate, machine_line, write_table
from reproduce.common import output_dir
from reproduce.speedup import UNIFORM, speedup_study


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--batch-sizes", default=None, help="default 1,16 (--smoke: 1)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None, help="default 3 (--smoke: 1)")
    ap.add_argument("--repeats", type=int, default=None, help="default 20 (--smoke: 2)")
    ap.add_argument("--strategy", default=None, help="Strategy as JSON (default: uniform, L2 magnitude)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--onnx", action="store_true", help="also time with onnxruntime (onnx extra)")
    ap.add_argument("--smoke", action="store_true", help="batch 1, 2 pairs, written to data/smoke/")
    ap.add_argument("--out", type=Path, default=None, help="default: data/bench_speedup.csv (--smoke: data/smoke/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here as JSON")
    args = ap.parse_args(argv)
    sizes = tuple(int(b) for b in (args.batch_sizes or ("1" if args.smoke else "1,16")).split(","))
    strategy = Strategy.from_json(args.strategy) if args.strategy else UNIFORM
    df = speedup_study(
        [(args.model, args.fraction)], strategy, batch_sizes=sizes, threads=args.threads,
        warmup=args.warmup if args.warmup is not None else (1 if args.smoke else 3),
        repeats=args.repeats or (2 if args.smoke else 20), channels_last=args.channels_last,
        onnx=args.onnx, progress=True,
    )
    threads = int(df["threads"].iloc[0])
    df = annotate(df, threads=threads)
    out = write_table(df, args.out or output_dir(args.smoke) / "bench_speedup.csv")
    for r in df.itertuples():
        print(f"batch {r.batch_size}: speedup {r.speedup_median:.2f}x (min-max {r.speedup_min:.2f}-{r.speedup_max:.2f} "
              f"over {r.repeats} pairs), MAC ratio {r.mac_ratio:.2f}x ({100 * r.mac_fraction:.1f}% of the MACs), "
              f"efficiency {r.efficiency:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(df.to_dict("records"), indent=2) + "\n")
    print(f"{machine_line(threads)}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
