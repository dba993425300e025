"""Budget accuracy: the paper's MAC targets and 30..80% of each baseline.

For each model (random init, 1x3x224x224, default strategy: magnitude_l2, isomorphic,
global) one plan serves all targets; every fit is pruned and its measured MACs compared
with the prediction. Prints target, achieved MACs, error %, probes and whether the pruned
model's MACs equal the prediction. Acceptance: |error| <= 0.5% everywhere, exact always.
Usage: python benchmarks/budget_targets.py [--models name=t1/t2,...] [--fractions 0.3,0.5,0.8]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from agentic_toolkit import Strategy, create_model, fit_to_budget
from agentic_toolkit.units import format_macs, parse_macs

DEFAULT = "resnet50=1.77G,resnet101=4.22G,convnext_small=8.17G,deit_base_patch16_224=4.16G/2.61G"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--fractions", default="0.3,0.5,0.8")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    fractions = [float(f) for f in args.fractions.split(",") if f]
    print(f"{'model':<24}{'base':>8}{'target':>9}{'achieved':>16}{'error%':>9}{'probes':>7}{'ratio':>9}  exact")
    worst = 0.0
    for item in args.models.split(","):
        name, targets = item.split("=")
        model = create_model(name)
        plan = None
        wanted = [parse_macs(t) for t in targets.split("/") if t]
        for i, target in enumerate(wanted + [None] * len(fractions)):
            if target is None:
                target = int(plan.base_macs * fractions[i - len(wanted)])
            fit = fit_to_budget(model, Strategy(), target, x, plan=plan)
            plan = fit.plan
            result = fit.prune()
            err = 100.0 * (result.macs - target) / target
            worst = max(worst, abs(err))
            label = format_macs(target) if i < len(wanted) else f"{target / plan.base_macs:.0%}"
            print(f"{name:<24}{format_macs(plan.base_macs):>8}{label:>9}{result.macs:>16,}{err:>+9.4f}"
                  f"{fit.probes:>7}{fit.ratio:>9.5f}  {result.macs == fit.predicted_macs}")
    print(f"largest |error|: {worst:.4f}%")


if __name__ == "__main__":
    main()
