"""What do latency-shaped ratios cost in accuracy? Adapted CIFAR ResNet-56 at 50% of its MACs, NHWC
CPU table (see ``agentic_toolkit.studies.latency_shape_accuracy``). Writes
data/latency_shape_accuracy.csv; resumable (runs/latency_shape_accuracy.jsonl).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/latency_shape_accuracy.py --threads 2    # ~15 min
"""

from __future__ import annotations

import argparse
import sys

from agentic_toolkit.studies.latency_shape_accuracy import latency_shape_accuracy
from agentic_toolkit.studies.machine import machine_line, output_dir, write_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.5, help="MAC fraction (default 0.5)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-images", type=int, default=None, help="default: the accuracy-at-budget study's")
    args = ap.parse_args(argv)
    study = latency_shape_accuracy(args.fraction, tuple(int(s) for s in args.seeds.split(",")), args.threads,
                                   args.train_images)
    out = write_table(study.to_frame(), output_dir(False) / "latency_shape_accuracy.csv")
    print(f"{study.summary()}\n{machine_line(study.report['threads'])}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
