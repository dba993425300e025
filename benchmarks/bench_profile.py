"""Time to count a model's MACs: fvcore (jit trace + real forward) vs profile_macs (meta).

For each model, both counters run ``--repeat`` times on the same random-init model and
input (1x3x224x224, CPU) after one warm-up call; the best time of each is compared.
fvcore's time covers ``FlopCountAnalysis(...).by_operator()``; ours covers
``profile_macs(model)`` end to end. Also records both counts (same operators: conv,
linear, matmul/bmm/einsum, with attention un-fused for fvcore). Goal: >= 10x each.
The driver is :func:`reproduce.counters.profiling_speed` (notebook 01 times
the counters the same way). Writes data/bench_profile.csv, one row per model, with the
machine, date and versions.

    python benchmarks/bench_profile.py [--repeat N] [--models a,b,...]
    python benchmarks/bench_profile.py --smoke     # resnet50, one timed call -> data/smoke/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentic_toolkit.tables import annotate, machine_line, write_table
from reproduce.common import output_dir
from reproduce.counters import SPEED_MODELS, profiling_speed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=None, help="timed calls per counter (default 5; --smoke: 1)")
    ap.add_argument("--models", default=None, help=f"comma-separated model names (default {','.join(SPEED_MODELS)})")
    ap.add_argument("--smoke", action="store_true", help="resnet50 only, one timed call, written to data/smoke/")
    ap.add_argument("--out", type=Path, default=None, help="default: data/bench_profile.csv (--smoke: data/smoke/)")
    args = ap.parse_args(argv)
    models = args.models.split(",") if args.models else (["resnet50"] if args.smoke else list(SPEED_MODELS))
    repeat = args.repeat or (1 if args.smoke else 5)
    df = annotate(profiling_speed(models, repeat=repeat))
    out = write_table(df, args.out or output_dir(args.smoke) / "bench_profile.csv")
    print(df[["model", "fvcore_ms", "ours_ms", "ratio", "fvcore_macs", "ours_macs", "counts_equal"]].to_string(index=False))
    print(f"smallest ratio fvcore/ours: {df['ratio'].min():.1f}x, largest {df['ratio'].max():.1f}x (goal >= 10x on every model)")
    print(f"{machine_line()}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
