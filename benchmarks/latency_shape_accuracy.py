"""What do latency-shaped ratios cost in accuracy? Adapted CIFAR ResNet-56 at 50% of its MACs, NHWC
CPU table (see ``reproduce.latency_shape_accuracy``). Writes
data/latency_shape_accuracy.csv; resumable (task store runs/latency_shape_accuracy/).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/latency_shape_accuracy.py --threads 2    # ~15 min
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentic_toolkit.tables import machine_line, write_table
from reproduce.common import output_dir
from reproduce.latency_shape_accuracy import CACHE, latency_shape_accuracy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.5, help="MAC fraction (default 0.5)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-images", type=int, default=None, help="default: the accuracy-at-budget study's")
    ap.add_argument("--smoke", action="store_true", help="1 seed, 256 train / 500 test images, 3 timing pairs -> data/smoke/")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="default data/ (--smoke: data/smoke/, with the smoke run's cell cache)")
    args = ap.parse_args(argv)
    out_dir = args.out_dir or output_dir(args.smoke)
    study = latency_shape_accuracy(
        args.fraction, (0,) if args.smoke else tuple(int(s) for s in args.seeds.split(",")), args.threads,
        256 if args.smoke else args.train_images, repeats=3 if args.smoke else 20,
        cache=out_dir / "latency_shape_accuracy" if args.smoke else CACHE, test_images=500 if args.smoke else None)
    out = write_table(study.to_frame(), out_dir / "latency_shape_accuracy.csv")
    print(f"{study.summary()}\n{machine_line(study.report['threads'])}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
