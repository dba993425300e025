"""The Master loop on real models with the real profiler, pruner and budget solver."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from agentic_toolkit.agents.history import read_history
from agentic_toolkit.agents.master import run_agentic_pruning
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.models import create_model
from agentic_toolkit.profiling.profile import profile_macs
from agentic_toolkit.pruning.apply import get_plan

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def r20():
    model = create_model("cifar_resnet20")
    x = torch.randn(1, 3, 32, 32)
    plan = get_plan(model, x)
    return model, x, plan


class Tripwire(nn.Module):
    """A model that fails loudly if anything runs it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        raise AssertionError("work was done before the input was checked")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backend="gpt-free"), "unknown backend 'gpt-free'"),
        (dict(backend="anthropic"), "ANTHROPIC_API_KEY"),
        (dict(tolerance=(1.0, -5.0)), "tolerance percentages must be >= 0"),
        (dict(tolerance=(-1.0, 5.0)), "tolerance percentages must be >= 0"),
        (dict(max_revisions=0), "max_revisions must be an integer >= 1"),
        (dict(evaluator="top1"), "evaluator must be a callable"),
    ],
)
def test_bad_input_fails_before_any_work(kwargs, message, monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    log = tmp_path / "run.jsonl"
    with pytest.raises(ToolkitError, match=message.replace("(", r"\(")):
        run_agentic_pruning(Tripwire(), "1M", torch.randn(1, 3, 8, 8), log_path=log, **kwargs)
    assert not log.exists()
    with pytest.raises(ToolkitError, match="cannot read 'lots'"):
        run_agentic_pruning(Tripwire(), "lots", torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("fraction", [0.35, 0.5, 0.65])
def test_analyst_lands_in_band_paper_setting_and_with_the_solver(fraction, r20):
    model, x, plan = r20
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = int(fraction * plan.base_macs)
    free = run_agentic_pruning(model, target, x, solve_budget=False, plan=plan, progress=False)
    solved = run_agentic_pruning(model, target, x, solve_budget=True, plan=plan, progress=False)
    for res in (free, solved):
        assert res.converged and target * 0.95 <= res.macs <= target * 1.01
        assert profile_macs(res.model, example_inputs=x).total_macs == res.macs  # the returned model is the pruned one
        assert res.model(x).shape == (1, 10)
    assert free.revisions <= 3 and solved.revisions == 1
    assert solved.records[0]["budget"]["within_tolerance"]
    assert free.stop_reason == "converged" and free.history["in_band"].iloc[-1]
    after = model.state_dict()  # the input model is untouched
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_history_file_has_every_revision(r20, tmp_path):
    model, x, plan = r20
    log = tmp_path / "h.jsonl"
    res = run_agentic_pruning(model, int(0.3 * plan.base_macs), x, backend="grid", solve_budget=False,
                              log_path=log, plan=plan, progress=False, model_name="r20")
    recs = read_history(log)
    assert [r["type"] for r in recs] == ["header"] + ["revision"] * res.revisions + ["result"]
    assert recs[0]["model"] == "r20" and recs[0]["backend"]["backend"] == "grid"
    assert recs[0]["backend"]["low"] == 0.0 and recs[0]["backend"]["high"] == "max_layer_ratio"
    for i, r in enumerate(recs[1:-1], start=1):
        assert r["revision"] == i and r["prompt"].startswith("You are the Analysis agent")
        assert json.loads(r["raw_reply"])["pruning_ratio"] == r["strategy"]["pruning_ratio"]
        assert r["achieved_macs"] > 0 and r["error_pct"] == pytest.approx(100 * (r["achieved_macs"] / res.target_macs - 1), abs=1e-6)
    ratios = [r["strategy"]["pruning_ratio"] for r in recs[1:-1]]
    # the grid bisects [0, max_layer_ratio]: the midpoint first, then halving steps
    steps = [abs(b - a) for a, b in zip(ratios, ratios[1:], strict=False)]
    assert ratios[0] == pytest.approx(0.45) and all(s == pytest.approx(0.45 / 2 ** (k + 1)) for k, s in enumerate(steps))
    assert recs[-1]["revisions"] == res.revisions and recs[-1]["converged"] == res.converged
    assert list(res.history["revision"]) == list(range(1, res.revisions + 1))
    with pytest.raises(ToolkitError, match="already exists; pass resume=True"):
        run_agentic_pruning(model, int(0.3 * plan.base_macs), x, log_path=log, plan=plan, progress=False)
    with pytest.raises(ToolkitError, match="different settings"):
        run_agentic_pruning(model, int(0.4 * plan.base_macs), x, backend="grid", solve_budget=False,
                            log_path=log, resume=True, plan=plan, progress=False)


def test_oscillating_llm_is_detected_and_the_analyst_takes_over(r20):
    model, x, plan = r20
    ratios = iter([0.05, 0.7, 0.06, 0.69, 0.07])
    calls = []

    def seesaw(prompt: str) -> str:
        calls.append(prompt)
        return json.dumps({"pruning_ratio": next(ratios), "rationale": "swing"})

    res = run_agentic_pruning(model, int(0.5 * plan.base_macs), x, backend=seesaw, solve_budget=False,
                              max_revisions=6, plan=plan, progress=False)
    recs = res.records
    assert "oscillation" in recs[2]["divergence"] and len(calls) == 3
    assert all(r["proposer"] == "analyst" and r["takeover"] for r in recs[3:])
    assert res.converged and res.revisions <= 5 and res.backend == "seesaw"


def test_llm_repeating_itself_is_replaced_by_the_analyst(r20):
    model, x, plan = r20
    res = run_agentic_pruning(model, int(0.5 * plan.base_macs), x, backend=lambda p: '{"pruning_ratio": 0.6}',
                              solve_budget=False, max_revisions=4, plan=plan, progress=False)
    recs = res.records
    assert recs[0]["proposer"] == "callable" and recs[0]["strategy"]["pruning_ratio"] == 0.6
    assert recs[1]["proposer"] == "analyst" and recs[1]["llm_proposed"]["pruning_ratio"] == 0.6
    assert res.converged


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "started", "log_path", "seconds")} for r in records]


def test_killed_search_resumes_to_the_same_result(tmp_path):
    """SIGKILL a real search between revisions, resume it, compare with an uninterrupted run."""
    sys.path.insert(0, str(HERE))
    import search_job

    log, marker = tmp_path / "killed.jsonl", tmp_path / "marker"
    search_job.run_and_kill(log, marker)
    killed = read_history(log)
    # the default preset's sensitivity table and revision 1 were flushed, revision 2 was running
    assert [r["type"] for r in killed] == ["header", "sensitivity", "revision"]
    with open(log, "a") as fh:  # a half-written line, as a kill during a write leaves it
        fh.write('{"type": "revision", "revision": 2, "strat')

    model, x, evaluator = search_job.setup()
    plan = get_plan(model, x)
    resumed = search_job.search(model, x, evaluator, log, resume=True, plan=plan)
    model2, x2, evaluator2 = search_job.setup()
    straight = search_job.search(model2, x2, evaluator2, tmp_path / "straight.jsonl")

    a, b = read_history(log), read_history(tmp_path / "straight.jsonl")
    assert _strip(a) == _strip(b)  # same header, same revisions, same result
    assert [r["revision"] for r in a if r["type"] == "revision"] == list(range(1, resumed.revisions + 1))
    # revision 1 was not redone; only when it is the best, its model is rebuilt and re-scored once
    rescored = 1 if resumed.best_revision == 1 else 0
    evaluated = [r for r in a if r["type"] == "revision" and r["revision"] > 1 and r.get("duplicate_of") is None]
    assert resumed.revisions >= 3 and evaluator.calls == len(evaluated) + rescored
    assert resumed.strategy == straight.strategy and resumed.macs == straight.macs
    best = next(r for r in resumed.records if r["revision"] == resumed.best_revision)
    assert resumed.score == straight.score == best["score"]  # the noise-aware incumbent's score
    assert profile_macs(resumed.model, example_inputs=x).total_macs == resumed.macs
    assert resumed.score == evaluator(resumed.model)  # the returned model is the one scored
    # resuming a finished search redoes no revision: the best model is rebuilt and re-scored once
    calls = evaluator.calls
    again = search_job.search(model, x, evaluator, log, resume=True, plan=plan)
    assert evaluator.calls == calls + 1 and again.macs == resumed.macs and again.score == resumed.score
    assert again.score == evaluator(again.model)
    assert _strip(read_history(log)) == _strip(a)


def test_result_model_is_the_model_the_proxy_scored():
    """The proxy scores a copy with re-estimated BatchNorm statistics: that copy is returned."""
    sys.path.insert(0, str(HERE))
    import search_job

    from agentic_toolkit.training.evaluation import evaluate

    model, x, evaluator = search_job.setup()
    res = search_job.search(model, x, evaluator, None)
    assert res.score is not None and res.score == evaluator(res.model)
    # scored as it is: its own statistics give the score without any re-estimation
    assert evaluate(res.model, evaluator.eval_batches)["top1"] == res.score
    bns = [m for m in res.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 for m in bns)  # fine-tunes like the original
    assert res.model.training == model.training
    scored, copy = evaluator.scored(res.model)
    assert scored == res.score and copy is not res.model


def test_timm_resnet50_paper_target():
    model = create_model("resnet50")
    x = torch.randn(1, 3, 224, 224)
    res = run_agentic_pruning(model, "1.77G", x, solve_budget=False, progress=False)
    assert res.converged and 0.95 * 1.77e9 <= res.macs <= 1.01 * 1.77e9 and res.revisions <= 2


def test_cli_search_json(tmp_path, capsys):
    from agentic_toolkit.cli import main

    log = tmp_path / "cli.jsonl"
    rc = main(["search", "cifar_resnet20", "--target-macs", "20M", "--no-solve-budget", "--log", str(log), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["model"] == "cifar_resnet20" and out["target_macs"] == 20_000_000
    assert out["converged"] and 19_000_000 <= out["achieved_macs"] <= 20_200_000 and out["revisions"] >= 1
    assert log.exists()
    rc = main(["search", "cifar_resnet20", "--target-macs", "20M", "--log", str(log), "--resume", "--no-solve-budget", "--json"])
    again = json.loads(capsys.readouterr().out)
    assert rc == 0 and again["achieved_macs"] == out["achieved_macs"] and again["revisions"] == out["revisions"]
    assert main(["search", "cifar_resnet20", "--target-macs", "20M", "--backend", "nope"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err
