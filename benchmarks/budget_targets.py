"""Budget accuracy: the paper's MAC targets and 30/50/80% of each baseline.

For each model (random init, 1x3x224x224, default strategy: magnitude_l2, isomorphic,
global) one plan serves all targets; every fit is pruned and its measured MACs compared
with the target and with the prediction. Acceptance: |error| <= 0.5% everywhere, and the
pruned model's MACs equal the prediction always. ``--counter torch_pruning`` meets the
targets in ``torch_pruning.utils.count_ops_and_params``'s count (the paper's) and also
counts every pruned model with it (column ``count_ops_macs``). The driver is
:func:`reproduce.budget.budget_targets`. Writes data/budget_targets.csv (one
row per counter x model x target, with the machine, date and versions); rows of the
other counter already in the file are kept.

    python benchmarks/budget_targets.py [--models name=t1/t2,...] [--fractions 0.3,0.5,0.8] [--counter C]
    python benchmarks/budget_targets.py --smoke    # resnet50: 1.77G and 50% -> data/smoke/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import timm  # noqa: F401  (before torch_pruning: count_ops_and_params counts timm attention only then)

from agentic_toolkit.tables import annotate, machine_line, write_table
from reproduce.budget import budget_targets
from reproduce.common import output_dir
from reproduce.paper import PAPER_TARGETS

DEFAULT = ",".join(f"{m}={'/'.join(t)}" for m, t in PAPER_TARGETS.items())


def merge(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``df`` after the rows of ``path`` (if it exists) that ``df`` does not redo: another
    counter, or a model ``df`` does not have (rows without a ``counter`` are ``"macs"``)."""
    if not path.is_file():
        return df
    old = pd.read_csv(path)
    if "counter" not in old.columns:
        old.insert(1, "counter", "macs")
    redone = set(zip(df["counter"], df["model"], strict=True))
    keep = old[[(c, m) not in redone for c, m in zip(old["counter"], old["model"], strict=True)]]
    if keep.empty:
        return df
    out = pd.concat([keep, df], ignore_index=True)[list(df.columns) + [c for c in keep.columns if c not in df.columns]]
    return out.sort_values("counter", kind="stable", key=lambda s: s != "macs").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help=f"name=t1/t2 pairs (default {DEFAULT})")
    ap.add_argument("--fractions", default=None, help="fractions of each baseline (default 0.3,0.5,0.8)")
    ap.add_argument("--counter", default="macs", choices=("macs", "torch_pruning"),
                    help="MAC convention of the targets (default macs; torch_pruning: count_ops_and_params)")
    ap.add_argument("--smoke", action="store_true", help="resnet50 at 1.77G and 50%%, written to data/smoke/")
    ap.add_argument("--out", type=Path, default=None, help="default: data/budget_targets.csv (--smoke: data/smoke/)")
    args = ap.parse_args(argv)
    spec = args.models or ("resnet50=1.77G" if args.smoke else DEFAULT)
    targets = {name: [t for t in ts.split("/") if t] for name, ts in (item.split("=") for item in spec.split(","))}
    fractions = [float(f) for f in (args.fractions or ("0.5" if args.smoke else "0.3,0.5,0.8")).split(",") if f]
    df = annotate(budget_targets(targets, fractions, counter=args.counter))
    path = args.out or output_dir(args.smoke) / "budget_targets.csv"
    out = write_table(merge(df, path), path)
    cols = ["model", "counter", "target", "base_macs", "target_macs", "achieved_macs", "error_pct", "probes", "ratio", "exact"]
    if args.counter != "macs":
        cols += ["counts", "analytic_exact", "count_ops_macs"]
    print(df[cols].to_string(index=False))
    paper = df[df["kind"] == "paper"]
    if len(paper):
        print(f"largest |error| on the paper targets ({args.counter}): {paper['error_pct'].abs().max():.4f}%")
    print(f"largest |error| overall: {df['error_pct'].abs().max():.4f}%; pruned MACs == prediction: {bool(df['exact'].all())}")
    if args.counter != "macs":
        ops = df["count_ops_macs"].astype("int64")
        worst = (100.0 * (ops - df["target_macs"]) / df["target_macs"]).abs().max()
        print(f"count_ops_and_params == our count: {bool((ops == df['achieved_macs']).all())}; "
              f"largest |error| by count_ops_and_params: {worst:.4f}%")
    print(f"{machine_line()}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
