"""The convergence study driver: cases, smoke run, resume from the cache, summary and plots."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agentic_toolkit.tables import MACHINE_COLUMNS
from reproduce import convergence as conv
from reproduce import convergence_plots

ROOT = Path(__file__).resolve().parents[1]


def test_cases_cover_models_settings_and_the_llm_column():
    cases = conv.study_cases(llm=True)
    models = {(c["model"], c["weights"]) for c in cases}
    assert ("cifar_resnet20", "pretrained") in models and ("cifar_resnet56", "pretrained") in models
    assert ("resnet50", "random") in models and ("deit_base_patch16_224", "random") in models
    planners = [c for c in cases if c["backend"] != conv.LLM_BACKEND]
    assert {c["backend"] for c in planners} == {"grid", "analyst"} and {c["solve_budget"] for c in planners} == {False, True}
    assert {"1.77G", "2.61G"} <= {c["target"] for c in planners}
    llm = [c for c in cases if c["backend"] == conv.LLM_BACKEND]
    assert len(llm) == 6 and {c["model"] for c in llm} == set(conv.LLM_MODELS)
    assert {c["target"] for c in llm} == {"30%", "50%", "70%"} and not any(c["solve_budget"] for c in llm)
    assert cases.index(llm[0]) == len(planners)  # the LLM column runs last
    keys = [conv.case_key(c, (1.0, 5.0), 5) for c in cases]
    assert len(set(keys)) == len(keys)
    smoke = conv.study_cases(smoke=True, llm=True)
    assert {c["model"] for c in smoke} == {"cifar_resnet20"} and sum(c["backend"] == conv.LLM_BACKEND for c in smoke) == 1


def test_smoke_study_runs_and_resumes(tmp_path, monkeypatch, one_thread):
    cache = tmp_path / "cases.jsonl"
    df = conv.convergence_study(smoke=True, cache=cache, progress=False)
    assert len(df) == 8 and list(df.columns[: len(conv.COLUMNS)]) == list(conv.COLUMNS)
    assert set(MACHINE_COLUMNS) <= set(df.columns) and (df["weights"] == "pretrained").all()
    solved = df[df["solve_budget"]]
    assert solved["converged"].all() and (solved["revisions"] == 1).all()  # the solver does the ratio
    assert (df["fallbacks"] == 0).all() and (df["own_proposals"] == df["revisions"]).all()
    assert all(len(json.loads(r)) == n for r, n in zip(df["errors_pct"], df["revisions"], strict=True))
    assert len(cache.read_text().splitlines()) == 8

    # a resumed run finds every case in the cache and runs no search
    def no_search(*a, **k):
        raise AssertionError("a cached case was run again")

    monkeypatch.setattr(conv, "run_agentic_pruning", no_search)
    again = conv.convergence_study(smoke=True, cache=cache, progress=False)
    assert again.drop(columns=["seconds"]).equals(df.drop(columns=["seconds"]))

    # an interrupted run (half the cache, a torn last line) runs only the missing cases
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:4]) + "\n" + lines[4][:20], encoding="utf-8")
    monkeypatch.undo()
    ran = []
    real = conv.run_agentic_pruning
    monkeypatch.setattr(conv, "run_agentic_pruning", lambda *a, **k: ran.append(k["backend"]) or real(*a, **k))
    resumed = conv.convergence_study(smoke=True, cache=cache, progress=False)
    assert len(ran) == 4 and len(resumed) == 8
    cols = ["model", "target", "backend", "solve_budget", "converged", "revisions", "achieved_macs"]
    assert resumed[cols].equals(df[cols])

    summary = conv.summarise_convergence(df)
    assert set(summary["backend"]) == {"grid", "analyst"} and (summary["subset"] == "all").all()
    assert (summary[summary["solve_budget"]]["success_rate_%"] == 100).all()


def test_grid_in_the_paper_setting_visits_the_coarse_to_fine_grid(tmp_path, one_thread):
    df = conv.convergence_study(["cifar_resnet20"], ["grid"], fractions=(0.3, 0.5), solve_budget_modes=(False,),
                                cache=False, progress=False)
    for ratios in df["ratios"]:
        ratios = json.loads(ratios)
        assert ratios[0] == pytest.approx(0.45)  # the midpoint of [0, max_layer_ratio]
        for k, r in enumerate(ratios, start=1):
            j = r / 0.9 * 2**k
            assert j == pytest.approx(round(j)) and round(j) % 2 == 1


def test_summary_compares_the_llm_on_its_own_cases_and_plots(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def row(model, target, backend, converged, revisions, by, fallbacks=0):
        errs = [10.0] * (revisions - 1) + [0.5 if converged else 9.0]
        return {"model": model, "weights": "pretrained", "target": target, "backend": backend, "solve_budget": False,
                "converged": converged, "revisions": revisions, "first_in_band": revisions if converged else None,
                "in_band_by": by if converged else None, "in_band_by_self": converged and by != "analyst",
                "own_proposals": revisions - fallbacks, "fallbacks": fallbacks, "seconds": 1.0,
                "errors_pct": json.dumps(errs)}

    import pandas as pd

    df = pd.DataFrame([
        row("a", "30%", "grid", True, 3, "grid"), row("a", "30%", "analyst", True, 1, "analyst"),
        row("b", "30%", "grid", False, 5, "grid"), row("b", "30%", "analyst", True, 2, "analyst"),
        row("a", "30%", conv.LLM_BACKEND, True, 2, "analyst", fallbacks=2),
    ])
    s = conv.summarise_convergence(df).set_index(["backend", "subset"])
    assert s.loc[("grid", "all"), "success_rate_%"] == 50 and s.loc[("grid", "LLM cases"), "cases"] == 1
    llm = s.loc[(conv.LLM_BACKEND, "LLM cases")]
    assert llm["converged"] == 1 and llm["in_band_by_own_proposal"] == 0 and llm["own_proposals_%"] == 0
    path = tmp_path / "s.csv"
    conv.summarise_convergence(df).to_csv(path, index=False)
    back = conv.read_study(path)
    assert back["solve_budget"].dtype == bool and back["converged"].tolist() == summary_counts(df)
    fig = convergence_plots.plot_success_rate(back)
    assert len(fig.axes) == 2
    plt.close(fig)
    fig = convergence_plots.plot_error_trajectories(df)
    plt.close(fig)


def summary_counts(df):
    return conv.summarise_convergence(df)["converged"].tolist()


def test_llm_column_is_skipped_without_llama_cpp(monkeypatch, tmp_path, capsys, one_thread):
    monkeypatch.setattr(conv, "llm_available", lambda: "llama-cpp-python is not installed")
    df = conv.convergence_study(["cifar_resnet20"], ["analyst"], fractions=(0.5,), solve_budget_modes=(True,),
                                llm=True, cache=tmp_path / "c.jsonl", progress=False)
    assert list(df["backend"]) == ["analyst"] and "local LLM column skipped" in capsys.readouterr().out


def test_benchmark_script_has_the_flags(capsys):
    spec = importlib.util.spec_from_file_location("bench_convergence", ROOT / "benchmarks" / "convergence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--smoke", "--no-llm", "--llm", "--fresh"))
