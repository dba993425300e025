"""Convergence study: how many revisions each proposer needs to land in the MAC band.

Grid baseline vs the offline analyst (vs Claude when ANTHROPIC_API_KEY is set) on the
paper's four models (timm ResNet-50, ResNet-101, ConvNeXt-Small, DeiT-Base; random init,
1x3x224x224) x targets at 30/40/50/60/70% of the baseline MACs plus the paper's absolute
targets, max_revisions=5, band +1%/-5%, with solve_budget off (the proposer's ratio is
used as is) and on (fit_to_budget sets it). No evaluator: MACs only, so it runs on CPU.
The driver is :func:`agentic_toolkit.studies.convergence.convergence_study` (notebook 04 uses it too).

Writes data/convergence.csv (one row per case x backend x solve_budget, with the
per-revision ratios and errors as JSON lists for trajectory plots, and the machine, date
and versions) and prints the success rate and mean revisions per backend.

    python benchmarks/convergence.py            # the full study
    python benchmarks/convergence.py --smoke    # one model, two targets -> data/smoke/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agentic_toolkit.studies.convergence import convergence_study, summarise_convergence
from agentic_toolkit.studies.machine import annotate, machine_line, output_dir, write_table
from agentic_toolkit.studies.paper import PAPER_MODELS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="one model (resnet50), two targets")
    ap.add_argument("--models", nargs="*", default=None, help=f"subset of {', '.join(PAPER_MODELS)}")
    ap.add_argument("--backends", nargs="*", default=None, help="default: grid analyst (+ anthropic with a key)")
    ap.add_argument("--out", type=Path, default=None, help="default: data/convergence.csv (--smoke: data/smoke/convergence.csv)")
    args = ap.parse_args(argv)
    models = args.models or (PAPER_MODELS[:1] if args.smoke else PAPER_MODELS)
    backends = args.backends or (["grid", "analyst"] + (["anthropic"] if os.environ.get("ANTHROPIC_API_KEY") else []))
    df = annotate(convergence_study(models, backends, smoke=args.smoke))
    out = write_table(df, args.out or output_dir(args.smoke) / "convergence.csv")
    print(f"\n{machine_line()}; wrote {out} ({len(df)} rows)")
    print(summarise_convergence(df).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
