"""How well does the default evaluator rank pruning candidates? Prints its Spearman rho.

Runs (or resumes, from its task store) the proxy fidelity study of
``reproduce.proxy_fidelity`` -- twelve strategies at 50% and 30% of the adapted
ResNet-56's MACs, each proxy against the fine-tuned test top-1 -- writes
``data/proxy_fidelity.csv`` and prints every proxy's rho with its bootstrap 95% interval and
seconds per candidate, then the toolkit's default evaluator (``at.default_evaluator``) and its
rho at each budget.

    python benchmarks/proxy_fidelity.py --workers 2   # the full study (resumes; ~1 h on 2 cores)
    python benchmarks/proxy_fidelity.py --smoke       # quick configuration -> data/smoke/
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from agentic_toolkit.training.proxy import DEFAULT_PROXY
from reproduce import at_budget_run
from reproduce.common import output_dir
from reproduce.proxy_fidelity import default_proxy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="quick configuration (minutes) -> data/smoke/")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    run = ["--quick"] if args.smoke else ["--workers", str(args.workers)]
    at_budget_run.main(run + ["--studies", "fidelity"])
    table = pd.read_csv(output_dir(args.smoke) / "proxy_fidelity.csv")
    best = default_proxy(table)
    print(f"\ncheapest proxy with rho >= 0.8 at every budget (else the best): {best}")
    print(f"toolkit default evaluator: {DEFAULT_PROXY['name']} ({DEFAULT_PROXY})")
    for r in table[table["proxy"] == DEFAULT_PROXY["name"]].itertuples():
        print(f"  {r.budget:.0%} of MACs: rho {r.spearman:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] over "
              f"{r.strategies} strategies, {r.seconds_per_candidate:.1f} s per candidate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
