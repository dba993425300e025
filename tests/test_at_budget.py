"""Per-group scopes, the sensitivity baseline, the resumable task store and the fidelity table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import agentic_toolkit as at
from agentic_toolkit.agents.sensitivity import measure_sensitivity, sensitivity_search
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.parallel import ResultStore, Task, run_tasks
from agentic_toolkit.pruning.strategy import StrategyError
from reproduce import proxy_fidelity as P


def test_group_scope_multiplies_one_group_only(r20):
    model, x, plan = r20
    keys = list(plan.group_scopes())
    assert keys and all(k.startswith("group:") for k in keys)
    target = keys[0]
    base = at.Strategy(isomorphic=False, global_pruning=False, pruning_ratio=0.25)
    plain = plan.removed_channels(plan.select(base))
    shaped = plan.removed_channels(plan.select(base.replace(multipliers={target: 2.0})))
    g = plan.group_scopes()[target]
    assert shaped[g.index] > plain[g.index]  # that group loses about twice as many
    assert {i: n for i, n in shaped.items() if i != g.index} == {i: n for i, n in plain.items() if i != g.index}
    with pytest.raises(StrategyError, match="unknown scope 'group:nope'"):
        plan.check_strategy(base.replace(multipliers={"group:nope": 0.5}))


@pytest.fixture(scope="module")
def small_proxy():
    loader = at.cifar10("val", batch_size=128, shuffle=True, seed=0)
    return at.proxy_accuracy(loader, batches=1, bn_batches=1)


def test_sensitivity_allocation_lands_and_spares_sensitive_groups(r20_calibrated, small_proxy):
    model, x, calib, plan = r20_calibrated
    table = measure_sensitivity(model, x, small_proxy, fractions=(0.5,), plan=plan, progress=False)
    assert len(table.frame) == len(plan.group_scopes())
    assert table.frame["drop"].max() > 5  # some group matters on a real pretrained model
    target = int(0.6 * plan.base_macs)
    res = sensitivity_search(model, target, x, table, plan=plan)
    assert res.fit.within_tolerance and -5 <= res.fit.error_pct <= 1
    drops = table.frame.set_index("group")["drop"].clip(lower=0)
    for key, share in res.allocation.items():
        assert (share > 0) == (drops[key] <= res.tau)  # exactly the groups within the threshold are cut
    assert "sensitivity allocation" in res.summary()


def _ok(value):
    return lambda store: {"value": value}


def test_task_queue_respects_deps_and_resumes(tmp_path):
    calls = []

    def boom(store):
        raise RuntimeError("interrupted")

    def needs_a(store):
        calls.append("b")
        return {"value": store.get("a")["value"] + 1}

    store = ResultStore(tmp_path, {"v": 1})
    with pytest.raises(RuntimeError):
        run_tasks([Task("a", _ok(1)), Task("c", boom), Task("b", needs_a, deps=("a",))], store, log=print)
    assert "a" in store and "b" not in store  # finished work is kept
    again = ResultStore(tmp_path, {"v": 1})
    assert again.get("a") == {"value": 1, "task_seconds": pytest.approx(0, abs=1)}
    ran = run_tasks([Task("a", _ok(99)), Task("c", _ok(3)), Task("b", needs_a, deps=("a",))], again, log=print)
    assert ran == 2 and again.get("b")["value"] == 2 and again.get("a")["value"] == 1
    assert ResultStore(tmp_path, {"v": 2}).records == {}  # other settings: nothing reused


def test_searches_survive_a_longer_fine_tune(tmp_path):
    import dataclasses

    from reproduce import at_budget as A

    short = A.Config()
    store = ResultStore(tmp_path, short.settings(), scope=A.record_scope)
    run_tasks([Task("sensitivity", _ok(1)), Task(A.search_key("agent", 0.5), _ok(2)),
               Task(A.cell_key(0.5, "agent", 0), _ok(3))], store, log=print)
    longer = dataclasses.replace(short, train_images=45_000)
    again = ResultStore(tmp_path, longer.settings(), scope=A.record_scope)
    assert set(again.records) == {"sensitivity", "search/agent/0.5"}  # the cell is fine-tuned again
    other_proxy = dataclasses.replace(short, eval_images=512)
    assert ResultStore(tmp_path, other_proxy.settings(), scope=A.record_scope).records == {}
    assert set(ResultStore(tmp_path, short.settings(), scope=A.record_scope).records) == set(store.records)


def test_fidelity_table_and_default_proxy():
    x = np.arange(12.0)
    rho, lo, hi = P._spearman_ci(x, x ** 2, np.random.default_rng(0), 200)
    assert rho == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    rho, lo, hi = P._spearman_ci(x, -x, np.random.default_rng(0), 200)
    assert rho == pytest.approx(-1.0)
    df = pd.DataFrame([
        {"proxy": "cheap_bad", "budget": b, "spearman": 0.5, "seconds_per_candidate": 1.0} for b in (0.5, 0.3)
    ] + [
        {"proxy": "good", "budget": b, "spearman": 0.85, "seconds_per_candidate": 5.0} for b in (0.5, 0.3)
    ] + [
        {"proxy": "good_slow", "budget": b, "spearman": 0.95, "seconds_per_candidate": 50.0} for b in (0.5, 0.3)
    ])
    assert P.default_proxy(df) == "good"
    assert P.default_proxy(df[df["proxy"] == "cheap_bad"]) == "cheap_bad"  # none >= 0.8: the best one


def test_fixed_strategies_are_distinct_shapes():
    from reproduce.at_budget import BASELINES

    assert len(P.FIDELITY_STRATEGIES) >= 12 and set(BASELINES) <= set(P.FIDELITY_STRATEGIES)
    shapes = [at.strategy_preset(n).to_json() for n in BASELINES] + [s.to_json() for s in P.EXTRAS.values()]
    assert len(set(shapes)) == len(shapes)


def test_search_seeded_by_the_profiling_agents_sensitivity(r20_calibrated, small_proxy):
    model, x, calib, plan = r20_calibrated
    table = measure_sensitivity(model, x, small_proxy, fractions=(0.5,), plan=plan, progress=False)
    target = int(0.5 * plan.base_macs)
    res = at.AgenticSearch(model, target, x, evaluator=small_proxy, max_revisions=4,
                           start=at.SearchStart(plan=plan, sensitivity=table),
                           logging=at.SearchLogging(progress=False)).run()
    assert [r["proposer"] for r in res.records] == ["analyst", "profiling", "profiling", "analyst"]
    per_mac, threshold = res.records[1], res.records[2]
    assert "per MAC saved" in per_mac["rationale"] and "threshold" in threshold["rationale"]
    for seed in (per_mac, threshold):
        assert all(k.startswith("group:") for k in seed["proposed"]["multipliers"])
        assert seed["in_band"]  # landed by the solver like any revision
        assert seed["score"] is not None or seed.get("duplicate_of") is not None  # scored, or the same widths


def test_efficiency_allocation_meets_the_target_exactly(r20_calibrated, small_proxy):
    from agentic_toolkit.agents.sensitivity import _alloc_macs, efficiency_allocation

    model, x, calib, plan = r20_calibrated
    table = measure_sensitivity(model, x, small_proxy, fractions=(0.25, 0.5), plan=plan, progress=False)
    target = int(0.6 * plan.base_macs)
    _, alloc = efficiency_allocation(plan, table, target)
    assert _alloc_macs(plan, alloc) <= target  # greedy steps stop once the target is met ...
    least = min(alloc.items(), key=lambda kv: kv[1])
    assert _alloc_macs(plan, {**alloc, least[0]: 0.0}) > _alloc_macs(plan, alloc) or least[1] == 0.0
    with pytest.raises(ToolkitError, match="evaluator"):
        at.AgenticSearch(model, target, x, start=at.SearchStart(plan=plan, sensitivity=True))


def test_results_doc_table_is_generated_from_the_committed_csv():
    from pathlib import Path

    from reproduce import at_budget_run as R

    root = Path(__file__).resolve().parent.parent
    cells = pd.read_csv(root / "data" / "05_accuracy_at_budget.csv")
    assert cells.groupby(["budget", "strategy"])["seed"].nunique().min() >= 3
    assert {"uniform_l1", "global_magnitude", "isomorphic_taylor", "fastnas_sensitivity", "agent"} <= set(
        cells["strategy"])
    block = R.readme_block(R.summary_frame(cells), cells)
    start, end = R.README_MARKERS
    doc = (root / "docs" / "results.md").read_text()
    assert doc.split(start, 1)[1].split(end, 1)[0].strip() == block.strip()


def test_sensitivity_tables_combine_in_the_plans_group_order():
    from agentic_toolkit.agents.sensitivity import SensitivityTable

    def table(fracs, importance="magnitude_l2", base=90.0, seconds=1.0):
        rows = [{"group": g, "units": 16, "fraction": f, "score": base - f * i, "drop": f * i}
                for i, g in enumerate(["group:conv1", "group:layer1.0.conv1", "group:a"]) for f in fracs]
        return SensitivityTable(pd.DataFrame(rows), base, importance, seconds)

    both = SensitivityTable.combine(table((0.25, 0.5)), table((0.125, 0.5), seconds=2.0))
    assert list(dict.fromkeys(both.frame["group"])) == ["group:conv1", "group:layer1.0.conv1", "group:a"]
    assert both.frame.groupby("group")["fraction"].apply(list).to_dict()["group:a"] == [0.125, 0.25, 0.5]
    assert both.seconds == 3.0 and len(both.frame) == 9  # the shared 0.5 share once
    with pytest.raises(ToolkitError, match="same importance"):
        SensitivityTable.combine(table((0.25,)), table((0.5,), importance="taylor"))
    with pytest.raises(ToolkitError, match="same evaluator"):
        SensitivityTable.combine(table((0.25,)), table((0.5,), base=80.0))


def test_full_recipe_rerank_scores_with_the_studys_own_recipe():
    from reproduce import at_budget as A

    ctx = A.Context(A.Config.quick())
    proxy, record = A._rerank_proxy(ctx, fine=True, full_recipe=True)
    assert proxy.recipe == ctx.cfg.recipe and proxy.seed == A.FT_RERANK_SEED not in ctx.cfg.seeds
    assert record["rerank_images"] == ctx.cfg.ft_rerank_images == len(proxy.train_batches.dataset)
    assert proxy.eval_images == ctx.cfg.rerank_val_images  # the val images agent_fine re-ranks on
    short, record = A._rerank_proxy(ctx, fine=False, full_recipe=False)
    assert record == {"rerank_steps": ctx.cfg.rerank_steps} and len(short.train_batches) == ctx.cfg.rerank_steps
    assert "agent_ft_rerank" in A.SEARCHED and "agent_ft_rerank" not in P.FIDELITY_STRATEGIES
