"""Search presets: the default search measures a cheap adaptive sensitivity table, seeds the
analyst with its allocations, logs the table and resumes without measuring it again."""

from __future__ import annotations

import pytest

import agentic_toolkit as at
from agentic_toolkit.agents.history import read_history
from agentic_toolkit.agents.presets import PRESETS, list_search_presets, search_preset
from agentic_toolkit.agents.sensitivity import measure_sensitivity
from agentic_toolkit.agents.settings import grouped_options
from agentic_toolkit.errors import ToolkitError


@pytest.fixture(scope="module")
def proxy():
    loader = at.cifar10("val", batch_size=64, shuffle=True, seed=0)
    return at.proxy_accuracy(loader, batches=2, bn_batches=2)


def _search(r20_calibrated, proxy, **kw):
    model, x, _, plan = r20_calibrated
    return at.AgenticSearch(model, "50%", x, evaluator=proxy, **grouped_options(plan=plan, progress=False, **kw))


def test_presets_are_listed_and_unknown_names_refused():
    frame = list_search_presets()
    assert list(frame["preset"].unique()) == ["fast", "default", "thorough"]
    assert search_preset("default") is PRESETS["default"]
    with pytest.raises(ToolkitError, match="unknown search preset 'best'"):
        search_preset("best")


def test_neg_loss_subset_scores_the_same_images_by_loss(r20_calibrated, proxy):
    model = r20_calibrated[0]
    probe = proxy.subset(64, 64, metric="neg_loss")
    assert probe.eval_images == 64 and len(probe.bn_batches) == 1
    assert probe.eval_batches[0][0].data_ptr() == proxy.eval_batches[0][0].data_ptr()  # the same held-out images
    loss = at.evaluate(probe.prepare(model), probe.eval_batches)["loss"]
    assert probe(model) == pytest.approx(-100 * loss)
    assert probe.settings()["metric"] == "neg_loss" and "metric" not in proxy.settings()
    with pytest.raises(ToolkitError, match="metric"):
        proxy.subset(64, 64, metric="top5")


def test_adaptive_table_measures_one_side_per_group(r20_calibrated, proxy):
    model, x, _, plan = r20_calibrated
    probe = proxy.subset(64, 64, metric="neg_loss")
    table = measure_sensitivity(model, x, probe, plan=plan, adaptive=True, progress=False)
    per_group = table.frame.groupby("group")["fraction"].apply(sorted)
    assert len(per_group) == len(plan.group_scopes()) and all(len(f) == 2 and 0.5 in f for f in per_group)
    mid = table.frame[table.frame["fraction"] == 0.5].set_index("group")["drop"]
    low = {g for g, f in per_group.items() if 0.25 in f}
    assert low and len(low) < len(per_group)  # both sides are measured
    assert min(mid[list(low)]) >= max(mid.drop(list(low)))  # the more sensitive half gets the low share


def test_default_preset_seeds_logs_and_resumes_without_measuring_again(r20_calibrated, proxy, tmp_path,
                                                                       monkeypatch):
    log = tmp_path / "default.jsonl"
    first = _search(r20_calibrated, proxy, log_path=log, max_revisions=4)
    for _ in range(3):
        first.step()
    first.close()
    recs = read_history(log)
    assert [r["type"] for r in recs] == ["header", "sensitivity", "revision", "revision", "revision"]
    assert recs[0]["preset"] == "default" and recs[0]["sensitivity"]["probe"] == [512, 256, "neg_loss"]
    assert [r["proposer"] for r in recs[2:]][1] == "profiling"  # revision 2: the table's allocation
    def never(*args, **kwargs):
        raise AssertionError("the logged table must be read back, not measured again")

    monkeypatch.setattr("agentic_toolkit.agents.sensitivity.measure_sensitivity", never)
    resumed = _search(r20_calibrated, proxy, log_path=log, resume=True, max_revisions=4)
    assert resumed.sensitivity.frame.equals(first.sensitivity.frame)
    res = resumed.run()
    assert res.revisions == 4 and res.converged
    with pytest.raises(ToolkitError, match="sensitivity"):
        _search(r20_calibrated, proxy, log_path=log, resume=True, preset="fast")


def test_explicit_settings_win_over_the_preset(r20_calibrated, proxy):
    search = _search(r20_calibrated, proxy, preset="fast", sensitivity=False, max_revisions=2)
    assert search.sensitivity is None and search.max_revisions == 2 and not search.seeds
    assert search.log.records[0]["sensitivity"] is None


def _study_rows():
    import pandas as pd

    rows = []
    for searcher, top1, secs in (("default", (80.0, 81.0), 90.0), ("fastnas", (80.5, 80.7), 560.0),
                                 ("tpe_x1", (79.0, 79.4), 180.0), ("uniform_l1", (70.0, 71.0), 1.0)):
        for seed, t in enumerate(top1):
            rows.append({"model": "resnet20", "budget": 0.5, "searcher": searcher, "seed": seed, "proxy_evals": 29,
                         "search_seconds": secs, "proxy_score": 60.0, "test_top1": t, "macs": 100,
                         "target_macs": 100, "base_macs": 200, "train_images": 20000})
    rows.append({**rows[-1], "seed": 2, "test_top1": float("nan")})  # a cell not fine-tuned yet
    return pd.DataFrame(rows)


def test_search_study_summary_compares_default_with_the_best_peer():
    from reproduce.search_pareto import plot_search_pareto, readme_block, summary

    s = summary(_study_rows()).set_index("searcher")
    assert s.loc["uniform_l1", "seeds"] == 2  # the unfinished cell is not counted
    assert s.loc["default", "vs_best_peer"] == pytest.approx(80.5 - 80.6)  # fastnas is the best peer
    assert s.loc["fastnas", "vs_best_peer"] == 0
    block = readme_block(_study_rows())
    assert "| `default` | 80.50 ± 0.71 (90 s) |" in block and "resnet20 @ 50% MACs" in block
    assert len(plot_search_pareto(_study_rows()).axes[0].lines) > 0


def test_readme_headline_table_is_generated_from_the_committed_study():
    from pathlib import Path

    import pandas as pd

    from reproduce.search_pareto import README_MARKERS, readme_block

    root = Path(__file__).resolve().parent.parent
    start, end = README_MARKERS
    readme = (root / "README.md").read_text()
    block = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert block == readme_block(pd.read_csv(root / "data" / "search_pareto.csv")).strip()
