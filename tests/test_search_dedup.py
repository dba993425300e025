"""The Master spends evaluations only on new models, reports the noise-aware best against the
default strategy, and sizes its revision budget from the measured cost of one candidate."""

from __future__ import annotations

import json

import pytest

import agentic_toolkit as at
from agentic_toolkit.agents.backends import AnalystBackend
from agentic_toolkit.agents.backends.analyst import EXHAUSTED
from agentic_toolkit.agents.decisions import (
    best_record,
    default_patience,
    default_revision_budget,
    stop_reason,
)
from agentic_toolkit.agents.history import read_history
from agentic_toolkit.agents.incumbent import score_se
from agentic_toolkit.agents.keys import cuts_key, shape_key, widths_key
from agentic_toolkit.agents.presets import SearchPreset
from agentic_toolkit.agents.settings import grouped_options
from agentic_toolkit.pruning.strategy import Strategy

#: No sensitivity table and no revision budget: the search times one evaluator call to size it.
TIMED = SearchPreset("timed", "the analyst alone, timed budget", sensitivity=False, max_revisions=None)


@pytest.fixture(scope="module")
def r20(r20_calibrated):
    return r20_calibrated


def make_proxy(batches: int = 4):
    loader = at.cifar10("val", batch_size=128, augment=False, shuffle=True, seed=0)  # val is sorted by class
    return at.proxy_accuracy(loader, batches=batches, bn_batches=2)


# --- pure decisions ------------------------------------------------------------------------------------
def rec(rev: int, score: float | None, in_band: bool = True, **extra) -> dict:
    return {"type": "revision", "revision": rev, "in_band": in_band, "score": score,
            "achieved_macs": 100, "error_pct": 0.0, "eval_images": 512, **extra}


def test_best_is_the_incumbent_and_patience_counts_from_the_last_kept_move():
    # +0.5 and +0.3 are within 2 SE (3.5 points) of 80 on 512 images: revision 1 stays the best
    recs = [rec(1, 80.0), rec(2, 80.5), rec(3, 80.3)]
    assert best_record(recs, scored=True)["revision"] == 1
    assert best_record(recs, scored=False)["revision"] == 2  # without an evaluator's noise model: the max
    kw = dict(max_revisions=25, has_evaluator=True)
    assert stop_reason(recs, patience=3, **kw) is None
    assert stop_reason([*recs, rec(4, 79.9)], patience=3, **kw) == "converged; no kept move in the last 3 revision(s)"
    # a clear gain is kept and restarts the count
    recs = [rec(1, 80.0), rec(2, 80.5), rec(3, 84.0), rec(4, 84.1), rec(5, 83.0)]
    assert best_record(recs, scored=True)["revision"] == 3
    assert stop_reason(recs, patience=3, **kw) is None
    # scores that are not percentages have no noise model: any improvement counts
    assert best_record([rec(1, 500.0), rec(2, 500.5)], scored=True)["revision"] == 2


# --- duplicates ------------------------------------------------------------------------------------------
def test_a_candidate_with_the_same_widths_is_not_evaluated(r20):
    """Scaling every stage by one factor under the solver only rescales the solved ratio: the
    same model. The second proposal is recorded as a duplicate, with the first one's score."""
    model, x, calib, plan = r20
    answers = {
        1: {"pruning_ratio": 0.3},
        2: {"pruning_ratio": 0.3, "multipliers": {"stage1": 0.7, "stage2": 0.7, "stage3": 0.7}},
        3: {"pruning_ratio": 0.3, "multipliers": {"residual": 0.5}},
    }

    def scripted(prompt: str) -> str:
        return json.dumps(answers[int(prompt.split("This is revision ")[1].split()[0])])

    proxy = make_proxy(batches=2)
    res = at.run_agentic_pruning(model, int(0.5 * plan.base_macs), x, backend=scripted, evaluator=proxy,
                                 calibration=calib, plan=plan, max_revisions=3, patience=3, progress=False,
                                 sensitivity=False)
    r1, r2, r3 = res.records
    assert r1["proposed"]["multipliers"] != r2["proposed"]["multipliers"]  # different dicts...
    assert r2["widths_key"] == r1["widths_key"] and r2["cuts_key"] == r1["cuts_key"]  # ...the same model
    assert r2["duplicate_of"] == 1 and "duplicate_of" not in r1 and "duplicate_of" not in r3
    assert r2["score"] == r1["score"] and r2["achieved_macs"] == r1["achieved_macs"] and r2["in_band"]
    assert r3["widths_key"] != r1["widths_key"] and r3["score"] is not None
    assert proxy.calls == 2  # revisions 1 and 3; the duplicate was neither pruned nor scored
    assert widths_key(plan, r2["strategy"]) == r2["widths_key"] and cuts_key(plan, r2["strategy"]) == r2["cuts_key"]


@pytest.fixture(scope="module")
def analyst_search(r20):
    model, x, calib, plan = r20
    proxy = make_proxy()
    res = at.run_agentic_pruning(model, int(0.5 * plan.base_macs), x, max_revisions=8, patience=8, evaluator=proxy,
                                 calibration=calib, plan=plan, progress=False, sensitivity=False)
    return res, proxy, plan


def test_the_analyst_never_scores_the_same_model_twice(analyst_search):
    res, proxy, plan = analyst_search
    scored = [r for r in res.records if r.get("score") is not None and "duplicate_of" not in r]
    assert len(scored) >= 5 and shape_key(res.records[0]["strategy"]) == shape_key(Strategy())
    assert proxy.calls == len(scored)  # one call per new model, the best one held (not re-scored)
    cuts = [r["cuts_key"] for r in scored]
    assert len(set(cuts)) == len(cuts), [(r["revision"], r["proposed"]) for r in scored]
    # identical widths only where the criterion differs (the same widths, other channels)
    widths = [(r["widths_key"], r["strategy"]["importance"]) for r in scored]
    assert len(set(widths)) == len(widths)
    assert all(r["widths_key"] == widths_key(plan, r["strategy"]) for r in scored)
    assert all(r["eval_images"] == proxy.eval_images == 512 for r in scored)
    assert all(r["score_se"] == pytest.approx(score_se(r["score"], 512), abs=1e-6) for r in scored)
    assert all("2·SE" in r["rationale"] for r in res.records[2:])


def test_the_result_reports_default_vs_best(analyst_search):
    res, proxy, _ = analyst_search
    first = res.records[0]
    assert res.default_revision == 1 and res.default_score == first["score"]
    assert res.default_se == pytest.approx(score_se(first["score"], 512), abs=1e-6)
    assert res.score_se == pytest.approx(score_se(res.score, 512), abs=1e-6) and res.eval_images == 512
    assert res.gain == pytest.approx(res.score - first["score"])
    assert res.gain_significant == (res.gain > 2 * res.default_se)
    best = next(r for r in res.records if r["revision"] == res.best_revision)
    assert res.score == best["score"]  # the incumbent, not necessarily the highest score
    if res.best_revision != 1:  # only a move that beat the noise replaces the default
        assert res.gain_significant
    d = res.to_dict()
    assert {k: d[k] for k in ("default_score", "default_se", "gain", "gain_significant", "score_se")} == {
        "default_score": res.default_score, "default_se": res.default_se, "gain": res.gain,
        "gain_significant": res.gain_significant, "score_se": res.score_se}
    assert "vs default (revision 1)" in res.summary() and "gain" in res.summary()


# --- stopping and budgets -----------------------------------------------------------------------------------
def test_the_search_stops_when_the_analyst_has_no_untried_move(r20):
    class Tired(AnalystBackend):
        def propose(self, ctx):
            if ctx.history:
                return Strategy(importance="taylor"), f"incumbent: revision 1. {EXHAUSTED} around the incumbent"
            return super().propose(ctx)

    model, x, _, plan = r20
    search = at.AgenticSearch(model, int(0.5 * plan.base_macs), x, backend=Tired(), evaluator=lambda m: 50.0,
                              max_revisions=5, patience=5, **grouped_options(plan=plan, progress=False, sensitivity=False))
    assert search.step()["type"] == "revision" and not search.done
    out = search.step()
    assert out["type"] == "stop" and out["stop_reason"] == "the analyst has no untried move left"
    assert search.done and len(search.records) == 1 and search.result.stop_reason == out["stop_reason"]


def test_the_default_budget_is_timed_recorded_and_kept_on_resume(r20, tmp_path):
    model, x, calib, plan = r20
    log = tmp_path / "budget.jsonl"
    target = int(0.5 * plan.base_macs)
    proxy = make_proxy(batches=2)
    start = at.SearchStart(plan=plan, calibration=calib)
    search = at.AgenticSearch(model, target, x, evaluator=proxy, preset=TIMED, start=start,
                              logging=at.SearchLogging(log_path=log, progress=False))
    header = read_history(log)[0]
    chosen = header["revision_budget"]
    assert proxy.calls == 1 and chosen["chosen"].startswith("timed") and chosen["evaluator_seconds"] > 0
    per = 1.5 * chosen["evaluator_seconds"] + 1.0
    assert header["max_revisions"] == search.max_revisions == default_revision_budget(per)
    assert header["patience"] == search.patience == default_patience(search.max_revisions)
    assert chosen["base_score"] > 80  # the pretrained ResNet-20, unpruned
    search.step()
    del search

    # resumed: the logged budget, not a new timing (which could differ and refuse the resume)
    proxy2 = make_proxy(batches=2)
    again = at.SearchLogging(log_path=log, resume=True, progress=False)
    resumed = at.AgenticSearch(model, target, x, evaluator=proxy2, preset=TIMED, start=start, logging=again)
    assert proxy2.calls == 0 and len(resumed.records) == 1
    assert (resumed.max_revisions, resumed.patience) == (header["max_revisions"], header["patience"])
    resumed.close()
    other = header["max_revisions"] + 1  # a larger budget on resume extends the search (logged)
    extended = at.AgenticSearch(model, target, x, evaluator=proxy2, preset=TIMED, max_revisions=other, start=start,
                                logging=again)
    assert extended.max_revisions == other and proxy2.calls == 0
    extended.close()
    # without an evaluator nothing is timed: 5 revisions
    plain = at.AgenticSearch(model, target, x, start=at.SearchStart(plan=plan), logging=at.SearchLogging(progress=False))
    assert plain.max_revisions == 5 and plain.budget_choice["chosen"] == "default without an evaluator"
    assert plain.patience == default_patience(5)
