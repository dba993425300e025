"""Measured speedup of timm ResNet-50 pruned to ~50% of its MACs, against the unpruned model.

Both models are timed interleaved in one run (``agentic_toolkit.benchmark`` with a
baseline), so load changes on a shared machine affect both alike. Prints, per batch size,
the median latency of each, the speedup as median with its min-max spread over the
interleaved pairs, and the efficiency = speedup / MAC ratio (1.0: latency fell exactly as
much as the MACs). Random weights: latency does not depend on them.

The pruned model comes from torch-pruning directly (uniform channel ratio found by
bisection, L2 magnitude), so the script does not depend on the agent loop.

    .venv/bin/python benchmarks/bench_speedup.py                       # torch's threads
    .venv/bin/python benchmarks/bench_speedup.py --threads 1 --repeats 15 --json runs/speedup.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from agentic_toolkit import benchmark, create_model
from agentic_toolkit.profiling import profile_macs

INPUT = (1, 3, 224, 224)


def macs(model: torch.nn.Module) -> int:
    return int(profile_macs(model, input_size=INPUT).total_macs)


def prune_uniform(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    tp.pruner.MetaPruner(
        pruned, torch.randn(INPUT), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[pruned.get_classifier()],
        in_channel_groups={}, out_channel_groups={}, num_heads={},  # tp mutates these: fresh dicts
    ).step()
    return pruned.eval()


def prune_to_fraction(model: torch.nn.Module, fraction: float, tol: float = 0.01):
    """Bisect the uniform ratio until MACs land in ``[fraction - tol, fraction]`` of the model's."""
    base, lo, hi, best = macs(model), 0.0, 0.9, None
    for _ in range(12):
        mid = (lo + hi) / 2
        cand = prune_uniform(model, mid)
        frac = macs(cand) / base
        if frac > fraction:
            lo = mid
        else:
            hi, best = mid, (cand, mid, frac)
            if frac >= fraction - tol:
                break
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--onnx", action="store_true", help="also time with onnxruntime (onnx extra)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    base = create_model(args.model)
    t0 = time.perf_counter()
    pruned, ratio, frac = prune_to_fraction(base, args.fraction)
    print(f"{args.model}: uniform ratio {ratio:.4f} -> {macs(pruned) / 1e9:.3f} GMACs = "
          f"{100 * frac:.1f}% of {macs(base) / 1e9:.3f} GMACs (pruned in {time.perf_counter() - t0:.0f}s)")
    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    res = benchmark(pruned, INPUT, baseline=base, batch_sizes=sizes, threads=args.threads,
                    warmup=args.warmup, repeats=args.repeats, channels_last=args.channels_last,
                    onnx=args.onnx, progress=True)
    print(res.summary())
    for r in res.rows:
        print(f"batch {r['batch_size']}: speedup {r['speedup_median']:.2f}x "
              f"(min-max {r['speedup_min']:.2f}-{r['speedup_max']:.2f} over {res.repeats} pairs), "
              f"MAC ratio {res.mac_ratio:.2f}x, efficiency {r['efficiency']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "uniform_ratio": ratio,
                                         "mac_fraction": frac, **res.to_dict()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
