"""Convergence study: how many revisions each proposer needs to land in the MAC band.

Models: the CIFAR-10 ResNet-20/56 with trained weights (1x3x32x32) and the paper's four
ImageNet models (timm ResNet-50, ResNet-101, ConvNeXt-Small, DeiT-Base; random init, no
ImageNet weights offline, 1x3x224x224). Targets: 30/40/50/60/70% of the baseline MACs plus
the paper's absolute targets. Backends: the grid (coarse-to-fine over the whole feasible
ratio range [0, max_layer_ratio]) and the offline analyst on every case, in the paper's
setting (solve_budget=False: the proposer's ratio is used as is) and ours (solve_budget=True:
fit_to_budget solves it); then the local-LLM column (the openai backend driven by
SmolLM2-135M-Instruct on a local llama-cpp-python server, started once) on the two CIFAR
ResNets x 30/50/70%, paper setting only. max_revisions=5, band +1%/-5%, MACs only (no
evaluator), CPU. The driver is :func:`reproduce.convergence.convergence_study`
(notebook 04 draws its figures from the tables written here).

Every finished case is appended to a cache (runs/convergence_cases.jsonl; --smoke:
data/smoke/convergence_cases.jsonl), so an interrupted run resumes where it stopped. Writes
data/convergence.csv (one row per case, with the per-revision proposers, ratios and errors
as JSON lists, and the machine, date and versions) and data/04_convergence_summary.csv
(success rate and revisions per backend x setting), and prints the summary.

    nice -n 5 python benchmarks/convergence.py            # the full study (LLM column last)
    python benchmarks/convergence.py --no-llm             # grid and analyst only
    python benchmarks/convergence.py --smoke              # ResNet-20, two targets -> data/smoke/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agentic_toolkit.tables import annotate, machine_line, write_table
from reproduce.common import output_dir
from reproduce.convergence import (
    STUDY_MODELS,
    convergence_study,
    default_cache,
    summarise_convergence,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="cifar_resnet20, two targets, no LLM unless --llm")
    ap.add_argument("--models", nargs="*", default=None, help=f"subset of {', '.join(m.name for m in STUDY_MODELS)}")
    ap.add_argument("--backends", nargs="*", default=None, help="planner backends (default: grid analyst, "
                    "+ anthropic with ANTHROPIC_API_KEY)")
    llm = ap.add_mutually_exclusive_group()
    llm.add_argument("--no-llm", action="store_true", help="skip the local-LLM column")
    llm.add_argument("--llm", action="store_true", help="run the local-LLM column in --smoke too (one case)")
    ap.add_argument("--llm-url", default=None, help="an OpenAI-compatible server already running (else one is started)")
    ap.add_argument("--fresh", action="store_true", help="ignore (delete) the cache of finished cases")
    ap.add_argument("--out", type=Path, default=None, help="folder of the tables (default: data/, --smoke: data/smoke/)")
    args = ap.parse_args(argv)
    backends = args.backends or (["grid", "analyst"] + (["anthropic"] if os.environ.get("ANTHROPIC_API_KEY") else []))
    use_llm = not args.no_llm and (args.llm or not args.smoke)
    cache = default_cache(args.smoke)
    if args.fresh:
        cache.unlink(missing_ok=True)
    df = annotate(convergence_study(args.models, backends, smoke=args.smoke, cache=cache,
                                    llm=(args.llm_url or True) if use_llm else False))
    out_dir = args.out or output_dir(args.smoke)
    out = write_table(df, out_dir / "convergence.csv")
    summary = summarise_convergence(df)
    summary_path = write_table(summary, out_dir / "04_convergence_summary.csv")
    print(f"\n{machine_line()}; wrote {out} ({len(df)} rows) and {summary_path}; cache {cache}")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
