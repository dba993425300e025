"""What a researcher comparing searches needs: percent targets, the Optuna baselines (TPE and
random) with exact resume, and ``AgenticSearch.extend(n)`` with exact resume."""

from __future__ import annotations

import pytest

import agentic_toolkit as at
from agentic_toolkit.agents.backends import make_backend
from agentic_toolkit.agents.backends.base import ProposalContext
from agentic_toolkit.agents.backends.optuna_backend import (
    MULTIPLIER_BOUNDS,
    normalised,
    record_params,
)
from agentic_toolkit.agents.history import read_history
from agentic_toolkit.agents.settings import grouped_options
from agentic_toolkit.errors import ToolkitError

VOLATILE = ("elapsed_s", "started", "log_path")


def weight_mass(model) -> float:
    """A cheap deterministic score (not a percentage: every gain counts)."""
    return float(sum(p.detach().abs().sum() for p in model.parameters()))


def strip(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def _search(r20, target=None, **kw):
    model, x, plan = r20
    opts = dict(max_revisions=4, patience=4, evaluator=weight_mass, plan=plan, progress=False, sensitivity=False)
    opts.update(kw)
    return at.AgenticSearch(model, target if target is not None else int(0.5 * plan.base_macs), x, **grouped_options(**opts))


# --- percent targets ---------------------------------------------------------------------------
@pytest.mark.parametrize("given", ["50%", "50 %"])
def test_percent_target_resolves_against_the_base_macs(r20, given):
    _, _, plan = r20
    search = _search(r20, given, max_revisions=1)
    header = search.log.records[0]
    assert search.target_macs == round(0.5 * plan.base_count("macs")) == header["target_macs"]
    assert header["target_given"] == given and isinstance(header["target_macs"], int)
    assert search.run().target_macs == search.target_macs


@pytest.mark.parametrize("bad", ["0%", "150%", "abc%"])
def test_bad_percent_targets_are_refused(r20, bad):
    model, x, _ = r20
    with pytest.raises(ToolkitError, match="percent"):
        at.run_agentic_pruning(model, bad, x, progress=False)


def test_percent_target_resumes_exactly(r20, tmp_path):
    log = tmp_path / "pct.jsonl"
    first = _search(r20, "40%", log_path=log)
    first.step()
    del first
    resumed = _search(r20, "40%", log_path=log, resume=True).run()
    straight = _search(r20, "40%", log_path=tmp_path / "straight.jsonl").run()
    assert strip(read_history(log)) == strip(read_history(tmp_path / "straight.jsonl"))
    assert resumed.revisions == straight.revisions


def test_cli_search_takes_a_percent_target(capsys):
    import json

    from agentic_toolkit.cli import main

    assert main(["search", "cifar_resnet20", "--target-macs", "50%", "--max-revisions", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target_macs"] == round(0.5 * out["base_macs"]) and out["converged"]
    assert main(["search", "cifar_resnet20", "--target-macs", "150%"]) == 2


# --- the Optuna baselines ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["optuna", "random"])
def test_optuna_trials_land_in_band_and_run_every_revision(r20, backend):
    result = _search(r20, backend=backend, max_revisions=6, patience=6).run()
    assert result.revisions == 6 and result.stop_reason == "converged; max revisions reached"
    assert all(r["in_band"] and r["score"] is not None for r in result.records)
    assert {r["proposer"] for r in result.records} == {backend}
    low, high = MULTIPLIER_BOUNDS
    for r in result.records:
        mults = r["proposed"]["multipliers"]
        assert r["proposed"]["importance"] in ("magnitude_l1", "magnitude_l2")
        assert set(mults) == {"stage1", "stage2", "stage3", "residual", "basicblock.inner"}
        assert all(low <= v <= high for v in mults.values())


@pytest.mark.parametrize("backend", ["optuna", "random"])
def test_optuna_resume_equals_the_uninterrupted_search(r20, tmp_path, backend):
    make = lambda: make_backend(backend, seed=3, **({"n_startup_trials": 2} if backend == "optuna" else {}))  # noqa: E731
    straight = _search(r20, backend=make(), max_revisions=5, patience=5, log_path=tmp_path / "a.jsonl").run()
    first = _search(r20, backend=make(), max_revisions=5, patience=5, log_path=tmp_path / "b.jsonl")
    for _ in range(3):
        first.step()
    del first  # killed between revisions
    resumed = _search(r20, backend=make(), max_revisions=5, patience=5, log_path=tmp_path / "b.jsonl", resume=True)
    assert len(resumed.records) == 3
    result = resumed.run()
    assert strip(read_history(tmp_path / "a.jsonl")) == strip(read_history(tmp_path / "b.jsonl"))
    assert (result.macs, result.score, result.strategy) == (straight.macs, straight.score, straight.strategy)


def test_header_records_the_sampler_and_a_changed_sampler_is_refused(r20, tmp_path):
    log = tmp_path / "tpe.jsonl"
    search = _search(r20, backend="optuna", max_revisions=2, log_path=log)
    backend = search.log.records[0]["backend"]
    assert search.log.records[0]["backend_name"] == "optuna"
    assert backend["sampler"] == "tpe" and backend["seed"] == 0 and "space" in backend
    assert make_backend("random").describe()["sampler"] == "random"
    search.step()
    del search  # the session ends
    with pytest.raises(ToolkitError, match="backend"):
        _search(r20, backend=make_backend("optuna", seed=1), max_revisions=2, log_path=log, resume=True)


def test_tpe_and_random_propose_differently(r20):
    tpe = _search(r20, backend=make_backend("optuna", n_startup_trials=2), max_revisions=5, patience=5).run()
    rnd = _search(r20, backend="random", max_revisions=5, patience=5).run()
    assert [r["proposed"] for r in tpe.records[3:]] != [r["proposed"] for r in rnd.records[3:]]


def test_optuna_backend_pieces_and_quiet_logging():
    import optuna

    with pytest.raises(ToolkitError):
        make_backend("optuna", sampler="cmaes")
    with pytest.raises(ToolkitError):
        make_backend("random", sampler="tpe")
    scaled = normalised({"stage1": 0.1, "stage2": 0.5, "residual": 0.05}, [["stage1", "stage2"], ["residual"]])
    assert scaled == {"stage1": 0.4, "stage2": 2.0, "residual": 2.0}
    assert record_params({"proposed": {"importance": "taylor", "multipliers": {}}}, ["stage1"]) is None
    assert record_params({"proposed": {"importance": "magnitude_l1", "multipliers": {"group:x": 1.0}}}, []) is None
    before = optuna.logging.get_verbosity()
    ctx = ProposalContext(10**6, 4 * 10**6, (1.0, 5.0), None, solve_budget=True)
    strategy, why = make_backend("random").propose(ctx)
    assert strategy.multipliers == {} and "random" in why
    assert optuna.logging.get_verbosity() == before


# --- extend ------------------------------------------------------------------------------------
def _extended(r20, log, stop_after: int | None = None):
    """3 revisions, extend(3), run; stopped after revision ``stop_after`` when given."""
    search = _search(r20, max_revisions=3, patience=3, log_path=log)
    search.run()
    search.extend(3)
    while not search.done and (stop_after is None or len(search.records) < stop_after):
        search.step()
    return search


def test_extend_runs_more_revisions_and_logs_it(r20, tmp_path):
    search = _extended(r20, tmp_path / "x.jsonl")
    assert search.done and len(search.records) == 6 and search.max_revisions == 6
    types = [r["type"] for r in read_history(tmp_path / "x.jsonl")]
    assert types == ["header"] + ["revision"] * 3 + ["result", "extend"] + ["revision"] * 3 + ["result"]
    ext = next(r for r in read_history(tmp_path / "x.jsonl") if r["type"] == "extend")
    assert (ext["by"], ext["max_revisions"], ext["after_revision"]) == (3, 6, 3)
    assert search.result.revisions == 6


def test_extended_search_resumes_exactly(r20, tmp_path):
    straight = _extended(r20, tmp_path / "a.jsonl")
    killed = _extended(r20, tmp_path / "b.jsonl", stop_after=4)
    assert len(killed.records) == 4
    del killed
    resumed = _search(r20, max_revisions=3, patience=3, log_path=tmp_path / "b.jsonl", resume=True)
    assert resumed.max_revisions == 6 and len(resumed.records) == 4 and not resumed.done
    resumed.run()
    assert strip(read_history(tmp_path / "a.jsonl")) == strip(read_history(tmp_path / "b.jsonl"))
    assert resumed.result.strategy == straight.result.strategy
    # a finished extended log resumes as done, with its original or its total budget
    for total in (3, 6):
        again = _search(r20, max_revisions=total, patience=3, log_path=tmp_path / "a.jsonl", resume=True)
        assert again.done and len(again.records) == 6
        again.close()


def test_resume_with_a_larger_budget_extends(r20, tmp_path):
    _extended(r20, tmp_path / "a.jsonl")
    _search(r20, max_revisions=3, patience=3, log_path=tmp_path / "b.jsonl").run()
    model, x, plan = r20
    result = at.run_agentic_pruning(model, int(0.5 * plan.base_macs), x, max_revisions=6, patience=3,
                                    evaluator=weight_mass, plan=plan, progress=False, sensitivity=False,
                                    log_path=tmp_path / "b.jsonl", resume=True)
    assert result.revisions == 6
    assert strip(read_history(tmp_path / "a.jsonl")) == strip(read_history(tmp_path / "b.jsonl"))
    with pytest.raises(ToolkitError, match="max_revisions"):
        _search(r20, max_revisions=4, patience=3, log_path=tmp_path / "b.jsonl", resume=True)


def test_extend_lifts_a_patience_stop_and_refuses_what_would_stop_at_once(r20):
    search = _search(r20, evaluator=lambda m: 50.0, max_revisions=8, patience=1)
    search.run()
    assert len(search.records) == 2 and "no kept move" in search.stop_reason
    search.extend(2)
    assert not search.done
    search.run()
    assert len(search.records) == 3 and "no kept move" in search.stop_reason  # patience counts from the extension
    with pytest.raises(ToolkitError, match="integer"):
        search.extend(0)
    plain = _search(r20, evaluator=None, max_revisions=3)
    plain.run()
    with pytest.raises(ToolkitError, match="stop at once"):
        plain.extend(2)
