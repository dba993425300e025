"""Time to count a model's MACs: fvcore (jit trace + real forward) vs profile_macs (meta).

For each model, both counters run ``--repeat`` times on the same random-init model and
input (1x3x224x224, CPU) after one warm-up call; the best time of each is compared.
fvcore's time covers ``FlopCountAnalysis(...).by_operator()``; ours covers
``profile_macs(model)`` end to end. Also prints both counts (same operators: conv,
linear, matmul/bmm/einsum, with attention un-fused for fvcore). Goal: >= 10x each.
Usage: python benchmarks/bench_profile.py [--repeat N] [--models a,b,...]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from agentic_toolkit.models import create_model
from agentic_toolkit.profiling.profile import profile_macs
from agentic_toolkit.profiling.reference_counters import fvcore_macs

MODELS = ("resnet50", "resnet101", "convnext_small", "deit_base_patch16_224")
def best_time(fn, repeat: int) -> tuple[float, object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per counter (default 3)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    args = parser.parse_args()
    x = torch.randn(1, 3, 224, 224)
    print(f"{'model':24s} {'fvcore':>10s} {'ours':>9s} {'ratio':>7s}  {'fvcore MACs':>14s} {'our MACs':>14s}")
    ratios = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name)
        unfused = copy.deepcopy(model)
        for m in unfused.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        t_fv, fv = best_time(lambda: fvcore_macs(unfused, x, unfuse_attention=False), args.repeat)  # noqa: B023
        t_ours, profile = best_time(lambda: profile_macs(model), args.repeat)  # noqa: B023
        ratios.append(t_fv / t_ours)
        print(f"{name:24s} {t_fv * 1e3:8.1f}ms {t_ours * 1e3:7.1f}ms {t_fv / t_ours:6.1f}x  "
              f"{fv:14,d} {profile.total_macs:14,d}")
    print(f"smallest ratio fvcore/ours: {min(ratios):.1f}x  (goal >= 10x on every model)")


if __name__ == "__main__":
    main()
