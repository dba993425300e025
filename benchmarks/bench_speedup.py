"""Measured speedup of timm ResNet-50 pruned to ~50% of its MACs, against the unpruned model.

Both models are timed interleaved in one run (``agentic_toolkit.benchmark`` with a
baseline), so load changes on a shared machine affect both alike. Prints, per batch size,
the median latency of each, the speedup as median with its min-max spread over the
interleaved pairs, and the efficiency = speedup / MAC ratio (1.0: latency fell exactly as
much as the MACs). Random weights: latency does not depend on them.

The pruned model comes from the budget solver with a uniform strategy (every layer loses
the same fraction of channels, L2 magnitude), without the agent loop.

    .venv/bin/python benchmarks/bench_speedup.py                       # torch's threads
    .venv/bin/python benchmarks/bench_speedup.py --threads 1 --repeats 15 --json runs/speedup.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from agentic_toolkit import Strategy, benchmark, create_model, fit_to_budget
from agentic_toolkit.profiling.profile import profile_macs

INPUT = (1, 3, 224, 224)


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
    x = torch.randn(INPUT)
    fit = fit_to_budget(base, Strategy(isomorphic=False, global_pruning=False), int(args.fraction * profile_macs(base, x).total_macs), x)
    result = fit.prune()
    pruned, ratio, frac = result.model, fit.ratio, result.macs / result.base_macs
    print(f"{args.model}: uniform ratio {ratio:.4f} -> {result.macs / 1e9:.3f} GMACs = "
          f"{100 * frac:.1f}% of {result.base_macs / 1e9:.3f} GMACs (fitted and pruned in {time.perf_counter() - t0:.0f}s)")
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
