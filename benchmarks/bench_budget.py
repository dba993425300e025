"""Cost of hitting a MAC budget vs one plain prune: (fit + final prune) / (prune at a fixed ratio).

For each model (random init, 1x3x224x224, CPU, magnitude_l2 isomorphic strategy):
- *fixed*: ``apply_isomorphic_prune(model, strategy(pruning_ratio=0.3), x)`` from scratch;
- *fit*: ``fit_to_budget(model, strategy, target, x)`` then ``fit.prune()`` from scratch.
Both include building the dependency graph, the importance scores and the MAC profile;
the fit then probes ratios on the cached scores and prunes once. The two are interleaved
``--repeat`` times after a warm-up and the medians compared. Also records the achieved
MACs, the error against the target and the number of probes. Goal: ratio <= 2 on
ResNet-50, ConvNeXt-Small and DeiT-Base. The driver is
:func:`reproduce.budget.budget_cost`. Writes data/bench_budget.csv.

    python benchmarks/bench_budget.py [--repeat N] [--models name=target,...]
    python benchmarks/bench_budget.py --smoke      # resnet50, one repeat -> data/smoke/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentic_toolkit.tables import annotate, machine_line, write_table
from reproduce.budget import COST_TARGETS, budget_cost
from reproduce.common import output_dir

DEFAULT = ",".join(f"{m}={t}" for m, t in COST_TARGETS.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=None, help="interleaved pairs (default 5; --smoke: 1)")
    ap.add_argument("--models", default=None, help=f"name=target pairs (default {DEFAULT})")
    ap.add_argument("--fixed-ratio", type=float, default=0.3)
    ap.add_argument("--smoke", action="store_true", help="resnet50 only, one pair, written to data/smoke/")
    ap.add_argument("--out", type=Path, default=None, help="default: data/bench_budget.csv (--smoke: data/smoke/)")
    args = ap.parse_args(argv)
    spec = args.models or ("resnet50=1.77G" if args.smoke else DEFAULT)
    targets = dict(item.split("=") for item in spec.split(","))
    repeat = args.repeat or (1 if args.smoke else 5)
    df = annotate(budget_cost(targets, repeat=repeat, fixed_ratio=args.fixed_ratio))
    out = write_table(df, args.out or output_dir(args.smoke) / "bench_budget.csv")
    print(df[["model", "target", "achieved_macs", "error_pct", "probes", "fixed_s", "fit_prune_s", "cost_ratio", "exact"]]
          .to_string(index=False))
    print(f"(fit + prune) / fixed prune: {df['cost_ratio'].min():.2f}-{df['cost_ratio'].max():.2f} (goal <= 2)")
    print(f"{machine_line()}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
