"""The search's grouped settings (:mod:`agentic_toolkit.agents.settings`), the flat shortcuts of
``run_agentic_pruning``, and the score-with-standard-error of the convergence plot."""

from __future__ import annotations

import inspect

import matplotlib
import pandas as pd
import pytest

import agentic_toolkit as at
from agentic_toolkit.agents.settings import SHORTCUTS, grouped_options
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.parallel import RayExecutor
from agentic_toolkit.plots import plot_convergence, score_errors

matplotlib.use("Agg")


def test_the_search_takes_at_most_twelve_parameters():
    params = [p for p in inspect.signature(at.AgenticSearch.__init__).parameters if p != "self"]
    assert len(params) <= 12
    assert {"budget", "start", "prompts", "logging"} <= set(params)


def test_groups_validate_their_fields():
    assert at.SearchBudget(tolerance=[2, 3]).tolerance == (2.0, 3.0)
    assert at.SearchBudget(executor="ray").executor == "ray" and at.SearchBudget().executor is None
    ray2 = RayExecutor(workers=2, threads=1)  # the workers and threads a user picks
    assert at.SearchBudget(executor=ray2).executor is ray2
    for bad, words in [(dict(executor="dask"), "executor"), (dict(counter="flops"), "counter"),
                       (dict(tolerance=(1, 100)), "tolerance"), (dict(threads=0), "threads"),
                       (dict(constraints={"macs": "1G"}), "target_macs"),
                       (dict(constraints={"params": "50%"}, solve_budget=False), "solve_budget"),
                       (dict(latency_model="table"), "LatencyModel")]:
        with pytest.raises(ToolkitError, match=words):
            at.SearchBudget(**bad)
    with pytest.raises(ToolkitError, match="base_strategy"):
        at.SearchStart(base_strategy={"pruning_ratio": 0.3})
    with pytest.raises(ToolkitError, match="sensitivity"):
        at.SearchStart(sensitivity="yes")
    with pytest.raises(ToolkitError, match="not found"):
        at.SearchPrompts(system=at.SearchLogging.to("nope.txt").log_path)
    with pytest.raises(ToolkitError, match="on_revision"):
        at.SearchLogging(on_revision="print")
    with pytest.raises(ToolkitError, match="no field"):
        at.SearchBudget().replace(tolerence=(1, 1))
    assert at.SearchBudget.paper() == at.SearchBudget(solve_budget=False, counter="torch_pruning")


def test_flat_shortcuts_fold_into_their_groups():
    assert set(SHORTCUTS) >= {"tolerance", "plan", "prompt", "repair_prompt", "system", "log_path", "executor"}
    opts = grouped_options(tolerance=(2, 2), prompt="P $history", progress=False, backend="grid",
                           budget=at.SearchBudget(counter="torch_pruning"))
    assert opts["backend"] == "grid" and opts["prompts"].analysis == "P $history"
    assert (opts["budget"].tolerance, opts["budget"].counter) == ((2.0, 2.0), "torch_pruning")  # given group kept
    assert opts["logging"].progress is False and "start" not in opts
    with pytest.raises(ToolkitError, match="budget must be a SearchBudget"):
        grouped_options(budget={"tolerance": (1, 1)}, threads=2)
    with pytest.raises(ToolkitError, match="logging must be a SearchLogging"):
        at.AgenticSearch(at.create_model("cifar_resnet20"), "50%", None, logging="runs/h.jsonl")


def test_scores_are_drawn_with_their_standard_errors():
    frame = pd.DataFrame({"revision": [1, 2, 3, 4], "error_pct": [3.0, 0.5, 0.2, None],
                          "score": [None, 80.0, 0.5, 60.0], "score_se": [None, None, 0.1, None],
                          "eval_images": [None, 400, None, None]})
    assert score_errors(frame) == [(2, 80.0, 2.0), (3, 0.5, 0.1), (4, 60.0, 0.0)]  # binomial, logged, unknown n
    fig = plot_convergence(frame.head(1), (1.0, 5.0))
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if fig.axes[0].get_xlim()[0] <= t <= fig.axes[0].get_xlim()[1]]
    assert ticks == [1.0]  # one revision: an integer tick, not 0.95, 1.0, 1.05
    fig = plot_convergence(frame, (1.0, 5.0))
    assert "score ± SE" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
