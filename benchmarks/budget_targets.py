"""Budget accuracy: the paper's MAC targets and 30/50/80% of each baseline.

For each model (random init, 1x3x224x224, default strategy: magnitude_l2, isomorphic,
global) one plan serves all targets; every fit is pruned and its measured MACs compared
with the target and with the prediction. Acceptance: |error| <= 0.5% everywhere, and the
pruned model's MACs equal the prediction always. The driver is
:func:`agentic_toolkit.studies.budget.budget_targets`. Writes data/budget_targets.csv (one
row per model x target, with the machine, date and versions).

    python benchmarks/budget_targets.py [--models name=t1/t2,...] [--fractions 0.3,0.5,0.8]
    python benchmarks/budget_targets.py --smoke    # resnet50: 1.77G and 50% -> data/smoke/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentic_toolkit.studies.budget import budget_targets
from agentic_toolkit.studies.machine import annotate, machine_line, output_dir, write_table
from agentic_toolkit.studies.paper import PAPER_TARGETS

DEFAULT = ",".join(f"{m}={'/'.join(t)}" for m, t in PAPER_TARGETS.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help=f"name=t1/t2 pairs (default {DEFAULT})")
    ap.add_argument("--fractions", default=None, help="fractions of each baseline (default 0.3,0.5,0.8)")
    ap.add_argument("--smoke", action="store_true", help="resnet50 at 1.77G and 50%%, written to data/smoke/")
    ap.add_argument("--out", type=Path, default=None, help="default: data/budget_targets.csv (--smoke: data/smoke/)")
    args = ap.parse_args(argv)
    spec = args.models or ("resnet50=1.77G" if args.smoke else DEFAULT)
    targets = {name: [t for t in ts.split("/") if t] for name, ts in (item.split("=") for item in spec.split(","))}
    fractions = [float(f) for f in (args.fractions or ("0.5" if args.smoke else "0.3,0.5,0.8")).split(",") if f]
    df = annotate(budget_targets(targets, fractions))
    out = write_table(df, args.out or output_dir(args.smoke) / "budget_targets.csv")
    print(df[["model", "target", "base_macs", "target_macs", "achieved_macs", "error_pct", "probes", "ratio", "exact"]]
          .to_string(index=False))
    paper = df[df["kind"] == "paper"]
    if len(paper):
        print(f"largest |error| on the paper targets: {paper['error_pct'].abs().max():.4f}%")
    print(f"largest |error| overall: {df['error_pct'].abs().max():.4f}%; pruned MACs == prediction: {bool(df['exact'].all())}")
    print(f"{machine_line()}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
