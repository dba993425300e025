"""AgenticSearch step by step: the same records as one run(), done handling, resume mid-search."""

from __future__ import annotations

import pytest
import torch

import agentic_toolkit as at
from agentic_toolkit.agents.backends import PlannerBackend
from agentic_toolkit.agents.history import history_frame, read_history
from agentic_toolkit.agents.settings import grouped_options
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.pruning.strategy import Strategy

TIMING = ("elapsed_s", "started", "log_path")


def weight_mass(model) -> float:
    """A cheap deterministic score: the absolute weight mass the pruned model kept."""
    return float(sum(p.detach().abs().sum() for p in model.parameters()))


# two searches that both run three revisions: the grid walking toward a far target (paper
# setting), and the analyst exploring around an in-band candidate with an evaluator
CASES = {
    "grid": dict(backend="grid", solve_budget=False, fraction=0.25),
    "analyst_scored": dict(backend="analyst", solve_budget=True, fraction=0.5, evaluator=weight_mass, patience=5),
}


def _search(r20, case, **kw):
    model, x, plan = r20
    opts = dict(CASES[case])
    target = int(opts.pop("fraction") * plan.base_macs)
    kw.setdefault("sensitivity", False)  # the backends' own proposals from revision 2 on (no sensitivity seeds)
    return at.AgenticSearch(model, target, x, max_revisions=3, **grouped_options(plan=plan, progress=False, **opts, **kw))


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.mark.parametrize("case", list(CASES))
def test_three_steps_equal_one_run(case, r20):
    search = _search(r20, case)
    assert not search.done and search.records == [] and search.history.empty
    steps = [search.step() for _ in range(3)]
    assert search.done and search.stop_reason and steps[-1]["stop_reason"] == search.stop_reason
    assert [s["decision"] for s in steps[:2]] == ["continue", "continue"]
    assert steps[-1]["decision"] == f"stop: {search.stop_reason}"

    ran = _search(r20, case).run()
    assert _strip(search.records) == _strip(ran.records)
    # each step returned the logged record plus the Master's decision
    assert _strip([{k: v for k, v in s.items() if k not in ("stop_reason", "decision")} for s in steps]) == _strip(ran.records)
    for s in steps:
        assert s["type"] == "revision" and s["prompt"] and s["raw_reply"] and s["rationale"]
        assert s["achieved_macs"] > 0 and s["error_pct"] is not None and "in_band" in s

    res = search.result
    assert [r["strategy"] for r in res.records] == [r["strategy"] for r in ran.records]
    assert [r["score"] for r in res.records] == [r["score"] for r in ran.records]
    assert (res.macs, res.score, res.strategy, res.stop_reason) == (ran.macs, ran.score, ran.strategy, ran.stop_reason)
    assert res.converged == ran.converged and res.revisions == 3
    assert list(search.history["revision"]) == [1, 2, 3] == list(res.to_frame()["revision"])
    if res.model is not None:
        assert at.profile_macs(res.model, r20[1]).total_macs == res.macs
    if case == "analyst_scored":
        assert res.converged and all(r["score"] is not None for r in res.records if r["in_band"])


def test_step_on_a_done_search_raises(r20):
    search = _search(r20, "grid")
    result = search.run()
    assert search.done and search.result is result
    with pytest.raises(ToolkitError, match=r"the search is done \(.+\) after 3 revision\(s\); read \.result"):
        search.step()
    assert search.run() is result and len(search.records) == 3  # running a done search redoes nothing


def test_a_proposer_repeating_itself_stops_the_search_without_a_record(r20):
    class Stubborn(PlannerBackend):
        name = "stubborn"

        def propose(self, ctx):
            return Strategy(pruning_ratio=0.1), "always the same"

    model, x, plan = r20
    search = at.AgenticSearch(model, int(0.3 * plan.base_macs), x, backend=Stubborn(),
                              budget=at.SearchBudget(solve_budget=False), start=at.SearchStart(plan=plan),
                              logging=at.SearchLogging(progress=False))
    first = search.step()
    assert first["type"] == "revision" and first["decision"] == "continue" and not search.done
    second = search.step()
    assert second["type"] == "stop" and search.done and len(search.records) == 1
    assert second["stop_reason"].startswith("no new strategy") and second["proposed"] == first["proposed"]
    assert search.result.revisions == 1 and not search.result.converged


def test_resume_after_two_steps_gives_the_uninterrupted_records(r20, tmp_path):
    log, straight_log = tmp_path / "resumed.jsonl", tmp_path / "straight.jsonl"
    first = _search(r20, "analyst_scored", log_path=log)
    first.step()
    first.step()
    assert [r["type"] for r in read_history(log)] == ["header", "revision", "revision"]
    del first  # the session ends between revisions

    replayed = []
    resumed = _search(r20, "analyst_scored", log_path=log, resume=True, on_revision=replayed.append)
    assert not resumed.done and [r["revision"] for r in resumed.records] == [1, 2] == [r["revision"] for r in replayed]
    resumed.step()
    assert resumed.done

    straight = _search(r20, "analyst_scored", log_path=straight_log).run()
    assert _strip(resumed.records) == _strip(straight.records)
    assert _strip(read_history(log)) == _strip(read_history(straight_log))  # header, 3 revisions, result
    res = resumed.result
    assert (res.macs, res.score, res.strategy) == (straight.macs, straight.score, straight.strategy)
    assert at.profile_macs(res.model, r20[1]).total_macs == res.macs

    # a finished log resumes as done, and logs nothing more
    again = _search(r20, "analyst_scored", log_path=log, resume=True)
    assert again.done and len(again.records) == 3 and again.result.macs == res.macs
    assert _strip(read_history(log)) == _strip(read_history(straight_log))


def test_bad_input_raises_before_any_work(tmp_path):
    log = tmp_path / "never.jsonl"
    with pytest.raises(ToolkitError, match="max_revisions must be an integer >= 1"):
        at.AgenticSearch(torch.nn.Conv2d(3, 8, 3), "1M", torch.randn(1, 3, 8, 8), max_revisions=0,
                         logging=at.SearchLogging(log_path=log))
    assert not log.exists()


def test_history_frame_and_result_surface(r20):
    search = _search(r20, "grid")
    res = search.run()
    frame = history_frame(res.records, res.target_macs, res.tolerance)
    assert list(frame.columns[:3]) == ["revision", "backend", "proposer"]
    assert set(frame["status"]) <= {"converged", "over", "under", "error"}
    assert list(frame["status"] == "converged") == list(frame["in_band"])
    assert "status" not in res.to_frame()  # without a tolerance, no status column
    assert history_frame([]).empty and "status" in history_frame([], tolerance=(1, 5)).columns
    assert res.to_dict()["revisions"] == 3 and "revision" in res.summary()
    fig = res.plot()
    assert fig.axes and fig.axes[0].get_xlabel() == "revision"
    import matplotlib.pyplot as plt

    plt.close(fig)
