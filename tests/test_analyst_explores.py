"""The offline analyst explores strategy shapes: criterion, grouping and multipliers, noise-aware."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from agentic_toolkit.agents.backends import AnalystBackend, ProposalContext
from agentic_toolkit.agents.backends.analyst import EXHAUSTED, scope_families, scope_kinds
from agentic_toolkit.agents.decisions import default_patience, default_revision_budget
from agentic_toolkit.agents.incumbent import (
    beats,
    incumbent_revision,
    record_se,
    replay,
    score_se,
    verdict,
)
from agentic_toolkit.agents.keys import (
    cuts_key,
    fit_widths_key,
    shape_key,
    solved_shape_key,
    widths_key,
)
from agentic_toolkit.pruning.budget import fit_to_budget
from agentic_toolkit.pruning.strategy import Strategy

BASE = 125_000_000
TARGET = int(0.4 * BASE)
SCOPES = pd.DataFrame({
    "name": ["stage1", "stage2", "stage3", "residual", "basicblock.inner"],
    "kind": ["stage", "stage", "stage", "residual", "block"],
    "mac_share": [0.35, 0.34, 0.33, 1.0, 0.996],
})


def synthetic_score(s: Strategy) -> float:
    """Shaped like the adapted ResNet-56 at 40%: protecting the residual stream pays, protecting
    stage1 costs, other criteria and groupings cost a little, LAMP a lot."""
    v = 80.35 + {"magnitude_l2": 0.0, "taylor": -1.7, "lamp": -5.8, "magnitude_l1": -0.3}[s.importance]
    if not s.isomorphic:
        v -= 1.76 if s.global_pruning else 1.66
    lr = math.log(s.multipliers.get("residual", 1.0))
    v += -4.5 * lr - 2.0 * lr * lr + 6.3 * math.log(s.multipliers.get("stage1", 1.0))
    return round(v + 1.0 * math.log(s.multipliers.get("stage3", 1.0)), 2)


def record(rev: int, s: Strategy, score: float | None, **extra) -> dict:
    d = s.to_dict()
    return {"type": "revision", "revision": rev, "proposed": d, "strategy": d, "achieved_macs": TARGET,
            "error_pct": 0.0, "in_band": True, "score": score, **extra}


def ctx_of(records, solve_budget=True, max_revisions=40) -> ProposalContext:
    return ProposalContext(TARGET, BASE, (1.0, 5.0), SCOPES, tuple(records), None, len(records) + 1,
                           max_revisions, solve_budget)


def drive(scorer=synthetic_score, n=40, **extra):
    """Run the analyst against ``scorer`` until it repeats itself (the Master's stop) or ``n``."""
    records, last_why = [], ""
    for rev in range(1, n + 1):
        s, why = AnalystBackend().propose(ctx_of(records))
        if any(shape_key(s) == shape_key(r["proposed"]) for r in records):
            return records, why
        records.append(record(rev, s, scorer(s), **extra))
        records[-1]["rationale"] = last_why = why
    return records, last_why


# --- noise, keys and budgets -------------------------------------------------------------------------
def test_noise_helpers():
    assert score_se(80.0, 512) == pytest.approx(math.sqrt(0.8 * 0.2 / 512) * 100)
    assert score_se(80.0, 2048) == pytest.approx(score_se(80.0, 512) / 2)
    assert score_se(1234.5, 512) == 0.0 and score_se(-1.0, 512) == 0.0  # not a percentage: no noise model
    assert record_se({"score": 80.0}) == score_se(80.0, 512)  # no count given: 512 images assumed
    assert record_se({"score": 80.0, "eval_images": 2048}) == score_se(80.0, 2048)
    assert record_se({"score": 80.0, "score_se": 0.5, "eval_images": 2048}) == 0.5
    assert beats(83.1, 80.0, 1.0) and not beats(80.8, 80.0, 1.0) and beats(80.01, 80.0, 0.0)
    assert verdict(83.1, 80.0, 1.0) == "kept: +3.1 > 2·SE 2"
    assert verdict(80.8, 80.0, 1.0).startswith("not kept: +0.8 within noise")
    assert "worse" in verdict(75.0, 80.0, 1.0)


def test_budget_helpers():
    assert default_revision_budget(5) == 25 and default_revision_budget(60) == 15
    assert default_revision_budget(600) == 5 and default_revision_budget(None) == 25
    assert default_patience(25) == 9 and default_patience(5) == 3


def test_replay_keeps_only_what_beats_the_noise():
    base = Strategy()
    recs = [record(1, base, 80.0), record(2, base.replace(importance="taylor"), 80.8),
            record(3, base.replace(importance="lamp"), 85.0), record(4, base.replace(isomorphic=False), 86.0)]
    steps = replay(recs)
    assert [s.outcome for s in steps] == ["reference", "noise", "kept", "noise"]
    assert steps[3].parent == 3 and incumbent_revision(recs) == 3
    assert [s.outcome for s in replay([{**r, "eval_images": 100_000} for r in recs])] == ["reference", "kept", "kept", "kept"]


# --- the analyst on a synthetic history ------------------------------------------------------------------
def test_revision_one_is_the_base_strategy():
    base = Strategy(importance="taylor", multipliers={"stage2": 1.1})
    ctx = ProposalContext(TARGET, BASE, (1.0, 5.0), SCOPES, (), None, 1, 5, True, base)
    s, why = AnalystBackend().propose(ctx)
    assert shape_key(s) == shape_key(base) and "base strategy" in why


def test_exploration_covers_criterion_grouping_and_both_directions():
    records, last_why = drive(eval_images=2048)  # 2·SE = 1.7 points
    shapes = [shape_key(r["proposed"]) for r in records]
    assert len(set(shapes)) == len(shapes)  # never proposes a shape twice
    assert EXHAUSTED in last_why and len(records) < 40  # it says when it runs out
    strategies = [Strategy.from_dict(r["proposed"]) for r in records]
    assert shape_key(strategies[0]) == shape_key(Strategy())
    assert {"taylor", "magnitude_l1", "lamp"} <= {s.importance for s in strategies}
    assert {(False, True), (False, False)} <= {(s.isomorphic, s.global_pruning) for s in strategies}
    # moves relative to the incumbent of their time, in both directions and several sizes
    steps = replay(records)
    factors = set()
    for st, s in zip(steps, strategies, strict=True):
        if st.parent is not None:
            parent = strategies[st.parent - 1]
            for k in set(s.multipliers) | set(parent.multipliers):
                f = s.multipliers.get(k, 1.0) / parent.multipliers.get(k, 1.0)
                if abs(f - 1) > 1e-9:
                    factors.add(round(f, 3))
    assert {0.5, 0.75, 1.25} <= factors
    # the protected residual stream paid off, was kept and protected further; stage1's
    # protection cost score, so stage1 was released next
    kept = [st.revision for st in steps if st.outcome == "kept"]
    assert strategies[kept[0] - 1].multipliers == {"residual": 0.5}
    assert "kept: +2.16 > 2·SE" in records[kept[0]]["rationale"]
    assert strategies[kept[0]].multipliers == {"residual": 0.375}
    hurt = next(i for i, s in enumerate(strategies) if s.multipliers.get("stage1") == 0.5)
    assert strategies[hurt + 1].multipliers.get("stage1") == 1.25 and "release 'stage1'" in records[hurt + 1]["rationale"]
    assert drive(eval_images=2048)[0] == records  # deterministic: same history, same proposals


def test_a_small_gain_within_noise_is_not_kept_a_big_one_is():
    base = Strategy()
    analyst = AnalystBackend()
    moved = analyst.propose(ctx_of([record(1, base, 80.0)]))[0]
    assert moved.multipliers == {"residual": 0.5}
    small = [record(1, base, 80.0), record(2, moved, 80.8)]
    s, why = analyst.propose(ctx_of(small))
    assert "not kept: +0.8 within noise" in why and "residual" not in s.multipliers
    big = [record(1, base, 80.0), record(2, moved, 83.6)]
    s, why = analyst.propose(ctx_of(big))
    assert "kept: +3.6 > 2·SE 3.54" in why and s.multipliers == {"residual": 0.375}
    # the noise comes from the scored image count: +2.2 is noise on 512 images, a gain on 2048
    mid = [record(1, base, 80.0, eval_images=2048), record(2, moved, 82.2, eval_images=2048)]
    assert "kept: +2.2 > 2·SE 1.77" in analyst.propose(ctx_of(mid))[1]
    assert "within noise" in analyst.propose(ctx_of([{**r, "eval_images": 512} for r in mid]))[1]


def test_without_the_solver_an_out_of_band_shape_gets_its_ratio_corrected():
    s1, _ = AnalystBackend().propose(ctx_of([], solve_budget=False))
    far = {**record(1, s1, None), "achieved_macs": int(TARGET * 1.2), "error_pct": 20.0, "in_band": False}
    s2, why = AnalystBackend().propose(ctx_of([far], solve_budget=False))
    assert shape_key(s2) == shape_key(s1) and s2.pruning_ratio > s1.pruning_ratio and "correct the ratio" in why


# --- real model: keys and a real search --------------------------------------------------------------
@pytest.fixture(scope="module")
def r20(r20_calibrated):
    return r20_calibrated


def test_widths_and_cuts_keys(r20):
    model, x, _, plan = r20
    target = int(0.5 * plan.base_macs)
    a = fit_to_budget(model, Strategy(), target, x, plan=plan)
    b = fit_to_budget(model, Strategy(multipliers={"residual": 0.5}), target, x, plan=plan)
    assert fit_widths_key(a) == widths_key(plan, a.strategy) == widths_key(plan, a.strategy.to_dict())
    assert widths_key(plan, a.strategy) != widths_key(plan, b.strategy)
    assert cuts_key(plan, a.strategy, a.selection) == cuts_key(plan, a.strategy)
    # scaling every kind scope (or every stage) by one factor only rescales the solved ratio:
    # the same model, and the analyst's solved_shape_key knows it
    fams = scope_families(plan.describe(), scope_kinds(plan.describe()))
    for mult in ({"residual": 0.5, "basicblock.inner": 0.5}, {"stage1": 0.7, "stage2": 0.7, "stage3": 0.7}):
        c = fit_to_budget(model, Strategy(multipliers=mult), target, x, plan=plan)
        assert widths_key(plan, c.strategy) == widths_key(plan, a.strategy)
        assert solved_shape_key(c.strategy, *fams) == solved_shape_key(a.strategy, *fams) != shape_key(c.strategy)
    assert solved_shape_key(b.strategy, *fams) != solved_shape_key(a.strategy, *fams)
    # the same widths, other channels: uniform L1 vs uniform L2 at one ratio
    u1, u2 = Strategy(importance="magnitude_l1", isomorphic=False, global_pruning=False, pruning_ratio=0.3), \
        Strategy(isomorphic=False, global_pruning=False, pruning_ratio=0.3)
    assert widths_key(plan, u1) == widths_key(plan, u2) and cuts_key(plan, u1) != cuts_key(plan, u2)


# a real analyst search (never the same model scored twice, default vs best): tests/test_search_dedup.py
