"""Zoo coverage: every torchvision classifier and one model per timm family, pruned to 50%.

Each model runs in its own subprocess with a time and a resident-memory limit (killed and
recorded as ``killed: memory`` / ``killed: time`` on excess) through profile -> fit to 50%
of its MACs -> prune -> forward -> save/load round trip (no base model passed; max abs
output difference <= 1e-5). Rows are appended to the CSV as each model finishes; a rerun
skips the models already there (delete the file to start over). The driver is
:mod:`reproduce.zoo`; ``--readme`` prints the README's list of supported
architectures from the table's ok rows.

    nice -n 10 .venv/bin/python benchmarks/zoo_coverage.py              # -> data/zoo_coverage.csv
    .venv/bin/python benchmarks/zoo_coverage.py --smoke                 # 3 fast models -> data/smoke/
    .venv/bin/python benchmarks/zoo_coverage.py --models timm:resnet18,torchvision:swin_t
    .venv/bin/python benchmarks/zoo_coverage.py --readme                # render, run nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from reproduce.common import output_dir
from reproduce.zoo import (
    MEMORY_LIMIT_MIB,
    TIME_LIMIT_S,
    supported_architectures,
    zoo_coverage,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="3 fast models, written to data/smoke/")
    ap.add_argument("--models", default=None, help="source:name,... (default: the whole zoo)")
    ap.add_argument("--memory-mib", type=int, default=MEMORY_LIMIT_MIB, help="resident memory limit per model")
    ap.add_argument("--time-s", type=float, default=TIME_LIMIT_S, help="wall-time limit per model")
    ap.add_argument("--out", type=Path, default=None, help="default: data/zoo_coverage.csv (--smoke: data/smoke/)")
    ap.add_argument("--readme", action="store_true", help="print the supported-architecture list and exit")
    args = ap.parse_args(argv)
    out = args.out or output_dir(args.smoke) / "zoo_coverage.csv"
    if args.readme:
        print(supported_architectures(pd.read_csv(out)))
        return 0
    models = None
    if args.models:
        models = [tuple(m.split(":", 1)) for m in args.models.split(",") if m]
    df = zoo_coverage(out, models=models, smoke=args.smoke, memory_mib=args.memory_mib, time_s=args.time_s)
    counts = df["status"].value_counts().to_dict()
    print(f"{len(df)} models: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
