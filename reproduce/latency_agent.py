"""Does the agent's latency view help under a latency budget? (``benchmarks/latency_agent.py``)

The adapted CIFAR-10 ResNet-56 (:mod:`.kd`'s teacher) must run at each of ``latencies`` of its unpruned
latency on this CPU (batch 1). Three arms, every one solved by the budget solver onto the same
latency budget and scored by the default proxy on held-out ``val`` images:

- ``fit``: the default strategy, ratio solved (no search);
- ``search_blind``: the agent search (analyst + proxy) with the latency budget, the prompt's
  scope table *without* the latency columns (the analyst then probes scopes by MAC share);
- ``search_latency_view``: the same search with the latency view (:mod:`..agents.latency_view`:
  latency share and latency per MAC per scope; the analyst releases slow scopes first).

Each arm's best candidate is then timed against the unpruned model (interleaved pairs):
MACs kept, predicted and measured speedup, proxy score and search seconds.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import pandas as pd
import torch

from agentic_toolkit.agents.search import AgenticSearch
from agentic_toolkit.agents.settings import SearchBudget, SearchLogging, SearchStart
from agentic_toolkit.benchmarking import benchmark
from agentic_toolkit.benchmarking.latency import torch_threads
from agentic_toolkit.pruning import Strategy, fit_to_budget, get_plan
from agentic_toolkit.pruning.latency_model import build_latency_model
from agentic_toolkit.tables import annotate
from agentic_toolkit.training.proxy import default_evaluator

from .common import StudyResult
from .kd import load_teacher

ARMS = ("fit", "search_blind", "search_latency_view")


class LatencyAgentResult(StudyResult):
    """One row per arm (``frame``) and the settings (``report``)."""

    def summary(self) -> str:
        return "\n".join(f"latency {r.latency_target} {r.arm}: {r.mac_fraction:.1%} of the MACs, proxy {r.score:.2f}, speedup "
                         f"{r.speedup:.2f}x (predicted {r.predicted_speedup:.2f}x), {r.search_seconds:.0f} s"
                         for r in self.frame.itertuples())


def _search(model, x, plan, lat, evaluator, latency: str, threads: int, revisions: int, view: bool):
    target = int(0.99 * plan.base_macs)  # MACs are not what binds: the latency budget is
    # the ablation (view=False): the prompt and the analyst do not see where the latency is
    budget = SearchBudget(constraints={"latency": latency}, latency_model=lat, threads=threads, latency_view=view)
    search = AgenticSearch(model, target, x, evaluator=evaluator, max_revisions=revisions,
                           patience=max(3, revisions // 2), budget=budget, logging=SearchLogging(progress=False),
                           start=SearchStart(plan=plan, sensitivity=False))  # the latency view alone is measured
    res = search.run()
    best = next(r for r in res.records if r["revision"] == res.best_revision)
    return Strategy.from_dict(best["strategy"]), res.score, res.revisions


def _arm(arm, model, x, plan, lat, evaluator, latency, threads, revisions, repeats) -> dict[str, Any]:
    t0 = time.perf_counter()
    strategy, score, revs = Strategy(), None, 0
    if arm != "fit":
        strategy, score, revs = _search(model, x, plan, lat, evaluator, latency, threads, revisions,
                                        view=arm == "search_latency_view")
    fit = fit_to_budget(model, strategy, example_inputs=x, plan=plan, latency_model=lat, threads=threads,
                        constraints={"latency": latency})
    seconds = time.perf_counter() - t0
    pruned = fit.prune().model
    score = evaluator(pruned) if score is None else score
    r = benchmark(pruned, tuple(x.shape), baseline=model, batch_sizes=(1,), threads=threads, repeats=repeats,
                  measure_memory=False).rows[0]
    return {"arm": arm, "latency_target": latency, "macs": fit.predicted_macs,
            "mac_fraction": fit.predicted_macs / fit.base_macs, "score": score, "revisions": revs,
            "predicted_speedup": lat.base_ms / fit.predicted_latency_ms, "speedup": r["speedup_median"],
            "speedup_min": r["speedup_min"], "speedup_max": r["speedup_max"], "search_seconds": seconds,
            "strategy_json": fit.strategy.to_json()}


def teacher_latency_setup(threads: int, **table: Any):
    """The adapted ResNet-56 (eval), its weights' description, a seeded 32x32 example input, its
    plan, and a latency table on this CPU with ``threads`` threads (``table``: keywords of
    :func:`~agentic_toolkit.pruning.latency_model.build_latency_model`)."""
    model, weights = load_teacher()
    model.eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = get_plan(model, x)
        lat = build_latency_model(plan, "cpu", threads, progress=False, **table)
    return model, weights, x, plan, lat


def latency_agent_study(latencies: tuple[str, ...] = ("80%", "65%"), threads: int | None = None,
                        revisions: int = 16, repeats: int = 20) -> LatencyAgentResult:
    """Run the three arms at each latency budget (see the module docstring; each search stops
    after ``revisions`` or half as many without a kept move) and time their best candidates."""
    with torch_threads(threads or torch.get_num_threads()) as threads:
        model, weights, x, plan, lat = teacher_latency_setup(threads)
        evaluator = default_evaluator()
        rows = [_arm(arm, model, x, plan, lat, evaluator, latency, threads, revisions, repeats)
                for latency in latencies for arm in ARMS]
    frame = annotate(pd.DataFrame(rows), threads=threads)
    return LatencyAgentResult(frame, {"latencies": list(latencies), "threads": threads, "revisions": revisions,
                                      "weights": weights, "evaluator": "default_evaluator() on val"})
