"""Cost of hitting a MAC budget vs one plain prune: (fit + final prune) / (prune at a fixed ratio).

For each model (random init, 1x3x224x224, CPU, magnitude_l2 isomorphic strategy):
- *fixed*: ``apply_isomorphic_prune(model, strategy(pruning_ratio=0.3), x)`` from scratch;
- *fit*: ``fit_to_budget(model, strategy, target, x)`` then ``fit.prune()`` from scratch.
Both include building the dependency graph, the importance scores and the MAC profile;
the fit then probes ratios on the cached scores and prunes once. The two are interleaved
``--repeat`` times after a warm-up and the medians compared. Also prints the achieved
MACs, the error against the target and the number of probes. Goal: ratio <= 2 on
ResNet-50, ConvNeXt-Small and DeiT-Base.
Usage: python benchmarks/bench_budget.py [--repeat N] [--models name=target,...]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from agentic_toolkit import Strategy, apply_isomorphic_prune, create_model, fit_to_budget
from agentic_toolkit.units import format_macs, parse_macs

DEFAULT = "resnet50=1.77G,convnext_small=8.17G,deit_base_patch16_224=4.16G"


def _fixed(model, strategy, x) -> float:
    start = time.perf_counter()
    apply_isomorphic_prune(model, strategy, x)
    return time.perf_counter() - start


def _fit_and_prune(model, strategy, target, x):
    start = time.perf_counter()
    fit = fit_to_budget(model, strategy, target, x)
    result = fit.prune()
    return time.perf_counter() - start, fit, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--models", default=DEFAULT, help=f"name=target pairs (default {DEFAULT})")
    ap.add_argument("--fixed-ratio", type=float, default=0.3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    strategy = Strategy()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    warm = create_model("cifar_resnet20")
    fit_to_budget(warm, strategy, 20e6, torch.randn(1, 3, 32, 32)).prune()
    print(f"{'model':<24}{'target':>8}{'achieved':>10}{'error%':>9}{'probes':>8}"
          f"{'fixed s':>9}{'fit+prune s':>13}{'ratio':>7}")
    for item in args.models.split(","):
        name, target = item.split("=")
        target_macs = parse_macs(target)
        model = create_model(name)
        fixed, fitted = [], []
        for _ in range(args.repeat):
            fixed.append(_fixed(model, strategy.replace(pruning_ratio=args.fixed_ratio), x))
            t, fit, result = _fit_and_prune(model, strategy, target_macs, x)
            fitted.append(t)
        t_fixed, t_fit = statistics.median(fixed), statistics.median(fitted)
        err = 100.0 * (result.macs - target_macs) / target_macs
        print(f"{name:<24}{format_macs(target_macs):>8}{format_macs(result.macs):>10}{err:>+9.4f}"
              f"{fit.probes:>8}{t_fixed:>9.2f}{t_fit:>13.2f}{t_fit / t_fixed:>7.2f}")
        assert result.macs == fit.predicted_macs, "pruned MACs differ from the prediction"


if __name__ == "__main__":
    main()
