"""Budgets besides MACs in the agent search (``AgenticSearch(constraints=...)``, ``search
--constraint``) and the latency view the Analysis agent gets. Latency tables are measured with
the deterministic clock of :mod:`latency_fakes` (no timing in any assertion)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from latency_fakes import fake_latency_model

import agentic_toolkit as at
from agentic_toolkit.agents.analysis import build_context
from agentic_toolkit.agents.backends.analyst import AnalystBackend
from agentic_toolkit.agents.latency_view import add_latency_columns, latency_profile_text, slowness
from agentic_toolkit.agents.settings import grouped_options
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.paths import CACHE_ENV

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def r20(tmp_path_factory, one_thread):
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("latency_cache")))
    torch.manual_seed(0)
    model = at.create_model("cifar_resnet20")
    plan = at.get_plan(model, X32)
    # stage 3 (64-channel convolutions) is 3x slower per MAC than the rest
    lat = fake_latency_model(plan, slow_out=64, slow=3.0, cache=False)
    yield model, plan, lat
    mp.undo()


def _search(r20, target="90%", **kw):
    model, plan, lat = r20
    return at.AgenticSearch(model, int(float(target.rstrip("%")) / 100 * plan.base_macs), X32,
                            **grouped_options(plan=plan, latency_model=lat, threads=1, progress=False, **kw))


def test_latency_columns_show_where_macs_are_slow(r20):
    _, plan, lat = r20
    shares = lat.scope_shares(plan)
    assert set(shares) == set(plan.describe()["name"])
    df = add_latency_columns(plan.describe(), shares)
    slow = slowness(df)
    assert slow["stage3"] > 1.3 > 1 / 1.3 > slow["stage1"]  # measured 3x slower per MAC in stage 3
    text = latency_profile_text(df, {"device": "cpu", "threads": 1, "batch": 1, "base_ms": 1.0, "layer_share": 0.9})
    assert "stage3 x" in text.split("Slow MACs")[1].split("Cheap")[0]
    assert "no latency budget" in latency_profile_text(plan.describe(), None)


def test_latency_budget_search_meets_every_budget(r20):
    search = _search(r20, constraints={"latency": "45%"}, max_revisions=3)
    res = search.run()
    assert res.converged
    scored = [r for r in search.records if r.get("in_band")]
    assert scored
    for r in scored:
        cons = r["budget"]["constraints"]
        assert r["budget"]["binding"] == "latency" and cons["latency"]["met"] and cons["macs"]["met"]
        assert abs(cons["latency"]["error_pct"]) <= 5.0
        assert r["achieved_macs"] < search.band[0]  # the latency budget binds: MACs end below their band
    prompt = search.records[-1]["prompt"]
    assert "latency <= 45%" in prompt and "latency_per_mac" in prompt and "Slow MACs" in prompt
    header = search.log.records[0]
    assert header["constraints"] == {"latency": "45%"} and header["latency"]["threads"] == 1


def test_without_constraints_the_prompt_says_macs_only(r20):
    search = _search(r20, target="60%", max_revisions=1)
    search.step()
    prompt = search.records[0]["prompt"]
    assert "none (MACs only)" in prompt and "latency_share" in prompt  # a given table is shown
    assert search.log.records[0]["constraints"] is None
    blind = _search(r20, target="60%", max_revisions=1, latency_view=False)  # the ablation of the latency view
    assert "latency_share" not in blind.scopes and blind.latency is not None
    blind.step()
    assert "latency_share" not in blind.records[0]["prompt"] and "no latency budget" in blind.records[0]["prompt"]


def test_params_budget_search(r20):
    model, plan, _ = r20
    res = at.AgenticSearch(model, int(0.9 * plan.base_macs), X32, max_revisions=2, start=at.SearchStart(plan=plan),
                           budget=at.SearchBudget(constraints={"params": "50%"}),
                           logging=at.SearchLogging(progress=False)).run()
    assert res.converged
    best = next(r for r in res.records if r["revision"] == res.best_revision)
    params = best["budget"]["constraints"]["params"]
    assert best["budget"]["binding"] == "params" and params["met"]
    assert best["params"] == params["achieved"] <= 0.505 * params["base"]  # the pruned model's count


def test_bad_constraints_fail_before_work(r20):
    model, plan, _ = r20
    with pytest.raises(ToolkitError, match="target_macs"):
        at.SearchBudget(constraints={"macs": "40%"})
    with pytest.raises(ToolkitError, match="unknown constraint"):
        at.AgenticSearch(model, int(0.5 * plan.base_macs), X32, start=at.SearchStart(plan=plan),
                         budget=at.SearchBudget(constraints={"energy": "1J"}))
    with pytest.raises(ToolkitError, match="solve_budget"):
        at.SearchBudget(constraints={"params": "50%"}, solve_budget=False)


def _ctx(scopes, constraints, history=()):
    return build_context(None, scopes, list(history), 1000, base_macs=2000, solve_budget=True,
                         constraints=constraints, latency={"device": "cpu", "threads": 1, "batch": 1})


def test_analyst_releases_slow_scopes_first_under_a_latency_budget():
    scopes = pd.DataFrame({"name": ["stage1", "stage2", "stage3"], "kind": ["stage"] * 3,
                           "mac_share": [0.34, 0.33, 0.33], "latency_per_mac": [0.6, 0.9, 1.8]})
    ref = {"type": "revision", "revision": 1, "strategy": at.Strategy().to_dict(), "in_band": True,
           "score": 50.0, "eval_images": 512, "achieved_macs": 1000, "error_pct": 0.0}
    analyst = AnalystBackend()
    with_latency, why = analyst.propose(_ctx(scopes, {"latency": "60%"}, [ref]))
    assert with_latency.multipliers == {"stage3": 1.25} and "slow" in why
    macs_only, _ = analyst.propose(_ctx(scopes, {}, [ref]))
    assert macs_only.multipliers.get("stage3", 1.0) <= 1.0 and macs_only.multipliers != {"stage3": 1.25}


def test_search_cli_constraint(r20, capsys, monkeypatch):
    from agentic_toolkit.cli import main

    code = main(["search", "cifar_resnet20", "--target-macs", "36M", "--constraint", "params=50%",
                 "--max-revisions", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["converged"]
    assert main(["search", "cifar_resnet20", "--target-macs", "36M", "--constraint", "macs=50%"]) == 2
    assert "--target-macs" in capsys.readouterr().err


def test_latency_shaped_fit_spends_the_mac_budget_where_macs_are_slow(r20):
    from agentic_toolkit.pruning.latency_shape import (
        group_slowness,
        latency_shaped_fit,
        tilt_strategy,
    )

    model, plan, lat = r20
    slow = group_slowness(plan, lat)
    stage3 = [k for k in slow if k.startswith("group:layer3")]
    assert stage3 and min(slow[k] for k in stage3) > 1.5 > max(v for k, v in slow.items() if k not in stage3)
    assert tilt_strategy(at.Strategy(), slow, 0.0) == at.Strategy()
    target = int(0.5 * plan.base_macs)
    with pytest.warns(UserWarning, match="over-count"):  # the fake table's slow stage exceeds its whole model
        shaped = latency_shaped_fit(model, at.Strategy(isomorphic=False), target, X32, lat, plan=plan, threads=1)
    frame = shaped.to_frame()
    assert shaped.gamma > 0 and frame["within_tolerance"].all()  # every gamma lands on the same MAC budget
    flat = frame.loc[frame["gamma"] == 0, "predicted_ms"].iloc[0]
    assert shaped.fit.predicted_latency_ms < 0.95 * flat  # stage 3 pruned harder: faster at equal MACs
    assert "gamma" in shaped.summary()
