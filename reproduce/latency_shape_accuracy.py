"""What do latency-shaped ratios cost in accuracy? (``benchmarks/latency_shape_accuracy.py``)

:func:`~agentic_toolkit.pruning.latency_shape.latency_shaped_fit` spends a MAC budget where
the device is slow; that changes which channels go. On the adapted CIFAR-10 ResNet-56 (the
accuracy-at-budget study's reference and teacher) at ``fraction`` of its MACs, with a latency
table measured on this CPU in NHWC at batch 1, three fits land on the same MACs:
``round_to=None``, ``"auto"`` and ``"auto"`` latency-shaped. Each is timed against the unpruned
model (NHWC, interleaved) and fine-tuned with the accuracy-at-budget recipe
(:data:`~.at_budget.Config`: KD, ``train_images`` per seed), then top-1 on the JPEG test set.
One JSON line per finished (variant, seed) in the task store ``cache`` (a directory,
:class:`~agentic_toolkit.parallel.ResultStore`; a re-run with the same settings skips it).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agentic_toolkit.benchmarking import benchmark
from agentic_toolkit.benchmarking.latency import torch_threads
from agentic_toolkit.data import cifar10
from agentic_toolkit.parallel import ResultStore
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.pruning import Strategy, fit_to_budget
from agentic_toolkit.pruning.latency_shape import latency_shaped_fit
from agentic_toolkit.tables import annotate
from agentic_toolkit.training.evaluation import evaluate

from .at_budget import Config, kd_finetune
from .common import StudyResult
from .latency_agent import teacher_latency_setup

VARIANTS = ("none", "auto", "auto+shape")
CACHE = PROJECT_ROOT / "runs" / "latency_shape_accuracy"


class ShapeAccuracyResult(StudyResult):
    """One row per (variant, seed): MACs, measured speedup and efficiency, test top-1."""

    def summary(self) -> str:
        g = self.frame.groupby("variant", sort=False)
        return "\n".join(f"{v}: efficiency {d['efficiency'].iloc[0]:.2f}, top-1 {d['test_top1'].mean():.2f} +- "
                         f"{d['test_top1'].std(ddof=1) if len(d) > 1 else float('nan'):.2f} over {len(d)} seed(s)"
                         for v, d in g)


def _fits(model, x, plan, lat, fraction: float, threads: int) -> dict[str, Any]:
    target = f"{100 * fraction:g}%"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"none": fit_to_budget(model, Strategy(), target, x, plan=plan),
                "auto": fit_to_budget(model, Strategy(round_to="auto"), target, x, plan=plan, latency_model=lat,
                                      threads=threads),
                "auto+shape": latency_shaped_fit(model, Strategy(round_to="auto"), target, x, lat, plan=plan,
                                                 threads=threads).fit}


def latency_shape_accuracy(fraction: float = 0.5, seeds: tuple[int, ...] = (0, 1), threads: int | None = None,
                           train_images: int | None = None, repeats: int = 20,
                           cache: Path = CACHE, test_images: int | None = None) -> ShapeAccuracyResult:
    """Run the study (see the module docstring); ``train_images`` defaults to the
    accuracy-at-budget study's; ``test_images`` limits the test set (smoke runs; default all)."""
    cfg = Config()
    n = train_images or cfg.train_images
    store = ResultStore(cache, {"fraction": fraction, "train_images": n, "test_images": test_images})
    with torch_threads(threads or torch.get_num_threads()) as threads:
        model, _, x, plan, lat = teacher_latency_setup(threads, auto_round=True, channels_last=True)
        test = cifar10("test", batch_size=500, limit=test_images)
        for variant, fit in _fits(model, x, plan, lat, fraction, threads).items():
            todo = [seed for seed in seeds if _key(variant, seed) not in store]
            if not todo:
                continue
            pruned = fit.prune().model
            timing = benchmark(pruned, (1, 3, 32, 32), baseline=model, batch_sizes=(1,), threads=threads,
                               repeats=repeats, measure_memory=False, channels_last=True).rows[0]
            for seed in todo:
                student, _, _ = kd_finetune(pruned, model, cfg.recipe, n, seed)
                row = {"variant": variant, "seed": seed, "fraction": fraction, "train_images": n,
                       **({"test_images": test_images} if test_images else {}),
                       "macs": fit.predicted_macs, "mac_ratio": fit.base_macs / fit.predicted_macs,
                       "speedup": timing["speedup_median"],
                       "efficiency": timing["speedup_median"] * fit.predicted_macs / fit.base_macs,
                       "test_top1": evaluate(student, test)["top1"], "strategy_json": fit.strategy.to_json()}
                store.put(_key(variant, seed), row)
                print(f"{variant} seed {seed}: top-1 {row['test_top1']:.2f}, speedup {row['speedup']:.2f}x", flush=True)
    rows = [store.get(_key(v, s)) for v in VARIANTS for s in seeds if _key(v, s) in store]
    return ShapeAccuracyResult(annotate(pd.DataFrame(rows), threads=threads),
                               {"fraction": fraction, "seeds": list(seeds), "train_images": n, "threads": threads})


def _key(variant: str, seed: int) -> str:
    return f"{variant}/seed{seed}"
