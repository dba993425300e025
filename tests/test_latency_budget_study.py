"""The latency-budget study (``reproduce.latency_budget``), its tables and figure, and the
benchmark script around it. Timing is replaced by a deterministic clock (as in
``test_latency_model.py``): a layer of the latency table takes its MACs / 1e6 ms, the whole
network its MACs / 1e6 + 0.5 ms, and in ``benchmark`` a model takes its MACs / 1e6 + 0.5 ms
(x 0.98, 1.0, 1.02 over the pairs), so every number below is reproducible on a loaded machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from latency_fakes import model_ms

import agentic_toolkit as at
from agentic_toolkit.benchmarking import latency_table as lt
from agentic_toolkit.benchmarking import runner
from agentic_toolkit.paths import CACHE_ENV
from agentic_toolkit.pruning import latency_model as lm
from agentic_toolkit.tables import MACHINE_COLUMNS
from reproduce import latency_budget as lb
from reproduce.latency_budget_plots import plot_latency_budget

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "data" / "bench_latency_budget.csv"
JITTER = (0.98, 1.0, 1.02)


def _layer_ms(fn) -> float:
    cells = list(fn.__defaults__ or ()) + [c.cell_contents for c in (fn.__closure__ or ())]
    layer = next(c for c in cells if isinstance(c, torch.nn.Module))
    return fn().numel() * layer.weight[0].numel() / 1e6


def _whole(plan, dev, warmup, repeats, channels_last=False):
    half = at.Strategy(isomorphic=False, global_pruning=False, pruning_ratio=lm.CALIBRATION_RATIO)
    sel = plan.select(half)
    widths = {f"{k[0]}|{int(k[1])}": int(v) for k, v in plan.widths(sel).items()}
    return {"base_ms": plan.base_macs / 1e6 + 0.5, "half_ms": plan.predict_macs(sel) / 1e6 + 0.5,
            "half_widths": widths}


def _round_robin(timer, models, x, repeats):
    return [[model_ms(m, x)] * repeats for m in models]


def _interleaved(timer, run_model, run_base, x, repeats):
    m, b = model_ms(run_model, x), model_ms(run_base, x)
    return [m * JITTER[r % 3] for r in range(repeats)], [b] * repeats


@pytest.fixture(scope="module")
def clock(tmp_path_factory, one_thread):
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("latency_cache")))
    mp.setattr(lt, "median_ms", lambda fn, timer, warmup, repeats: _layer_ms(fn))
    mp.setattr(lm, "_measure_whole", _whole)
    mp.setattr(runner, "time_interleaved", _interleaved)
    mp.setattr(runner, "time_round_robin", _round_robin)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def study(clock):
    return lb.latency_budget_study(["cifar_resnet20"], [1], targets=[50, 70], mac_pct=50, threads=1, warmup=0,
                                   repeats=3, table_warmup=0, table_repeats=1, refine=1, progress=False,
                                   verbose=False)


def test_study_rows_follow_the_clock(study):
    df = study.to_frame()
    assert list(df["experiment"]) == ["latency_target"] * 2 + ["round_to"] * 4
    assert list(df["target_pct"]) == [50.0, 70.0, 50.0, 50.0, 50.0, 50.0] and set(MACHINE_COLUMNS) <= set(df.columns)
    assert list(df["round_to"]) == ["none", "none", "none", "auto", "auto+measured", "auto+shape"]
    assert (df["torch_threads"] == 1).all()
    # the measured pick keeps the most efficient of auto and uniform 8/16/32 (on this clock: the
    # most MACs in the band), so it is at least as efficient as auto
    rows = df.set_index("round_to")
    assert rows.loc["auto+measured", "round_to_chosen"] in {"auto", "8", "16", "32"}
    assert rows.loc["auto+measured", "efficiency"] >= rows.loc["auto", "efficiency"] - 1e-9
    model = at.create_model("cifar_resnet20")
    base_ms = model_ms(model, torch.zeros(1, 3, 32, 32))
    base_pred = at.get_plan(model, torch.zeros(1, 3, 32, 32)).base_macs / 1e6 + 0.5  # the clock's whole model
    for r in df.to_dict("records"):
        # the clock is linear in the MACs: speedup = (base + 0.5) / (pruned + 0.5) (the plan also counts
        # a few MACs outside convolutions and linears, their share a little larger with uniform rounding: 3e-3)
        pruned_ms = r["mac_fraction"] * (base_ms - 0.5) + 0.5
        assert r["speedup"] == pytest.approx(base_ms / pruned_ms, rel=3e-3)
        assert r["baseline_latency_ms"] == pytest.approx(base_ms) and r["latency_ms"] == pytest.approx(pruned_ms, rel=3e-3)
        assert r["speedup_min"] < r["speedup"] < r["speedup_max"]
        assert r["predicted_speedup"] == pytest.approx(r["base_predicted_ms"] / r["predicted_ms"])
        assert r["base_predicted_ms"] == pytest.approx(base_pred)  # the table reproduces the whole model
    lat, mac = df.iloc[:2], df.iloc[2:]
    assert (lat["speedup_ratio"] == lat["speedup"] / lat["target_speedup"]).all()
    assert lat["within_7pct"].all() and (lat["target_speedup"] == [2.0, 100 / 70]).all()
    assert lat["mac_fraction"].iloc[0] < lat["mac_fraction"].iloc[1] < 1.0  # 50% latency cuts more
    assert mac["mac_fraction"].between(0.45, 0.51).all()
    assert mac["efficiency"].to_numpy() == pytest.approx((mac["speedup"] / mac["mac_ratio"]).to_numpy())
    assert study.report["within_7pct"] == 2 and study.report["latency_targets"] == 2
    assert study.to_dict()["models"] == ["cifar_resnet20"] and study.to_frame() is not study.frame
    assert "2/2 within ±7%" in study.summary() and "cifar_resnet20 b1 50% MACs" in study.summary()


def test_table_from_the_study(study):
    table = lb.latency_budget_table(study.to_frame())
    assert set(table["stage"]) <= {"solved", "corrected"}
    assert set(table["round_to"]) == {"none", "auto", "auto+measured", "auto+shape"}
    assert table["efficiency"].dropna().to_numpy() == pytest.approx(
        (table["speedup"] * table["mac_fraction"]).dropna().to_numpy())
    same = lb.same_fraction(table, 50.0)
    assert list(same["target"]) == ["50% MACs"] * 4 + ["50% latency"]
    assert list(same["round_to"]) == ["none", "auto", "auto+measured", "auto+shape", "none"]


def test_table_of_the_committed_benchmark():
    raw = pd.read_csv(COMMITTED)
    table = lb.latency_budget_table(raw)
    corrected = (raw["experiment"] == "latency_target") & (raw["rounds"] > 0)
    assert len(table) == len(raw) + int(corrected.sum())
    # the solved fit of a corrected latency target: its measured speedup is the uncorrected one
    solved = table[(table["target_kind"] == "latency") & (table["stage"] == "solved") & table["mac_fraction"].isna()]
    assert sorted(solved["speedup"]) == pytest.approx(sorted(raw.loc[corrected, "open_speedup"]))
    mac = raw[raw["experiment"] == "round_to"]
    mine = table[table["target_kind"] == "macs"]
    assert mine["efficiency"].to_numpy() == pytest.approx(mac["efficiency"].to_numpy(), abs=1e-3)
    r50 = lb.same_fraction(table[(table["model"] == "resnet50") & (table["batch_size"] == 1)], 50.0)
    assert list(r50["target"]) == ["50% MACs"] * 4 + ["50% latency"]
    assert list(r50["round_to"]) == ["none", "auto", "auto+measured", "auto+shape", "none"]
    assert r50["mac_fraction"].iloc[4] < 0.3 < r50["mac_fraction"].iloc[0]  # 2x latency needs far fewer MACs
    eff = lb.efficiency_table(table).set_index(["model", "batch_size"])
    assert len(eff) == len(mac.drop_duplicates(["model", "batch_size", "target_pct"]))
    r50_b1 = mac[(mac["model"] == "resnet50") & (mac["batch_size"] == 1)].set_index("round_to")["efficiency"]
    assert eff.loc[("resnet50", 1), "gain"] == pytest.approx(r50_b1["auto"] / r50_b1["none"] - 1, abs=1e-3)
    assert eff.loc[("resnet50", 1), "efficiency_none"] < eff.loc[("resnet50", 1), "efficiency_auto"]
    text = lb.summarise(raw)
    assert "12/12 within ±7%" in text and "(2/12 before the measured correction)" in text


def test_efficiency_table_without_mac_rows(study):
    table = lb.latency_budget_table(study.to_frame().query("experiment == 'latency_target'"))
    eff = lb.efficiency_table(table)
    assert eff.empty and "gain" in eff.columns


def test_figure(tmp_path):
    table = lb.latency_budget_table(pd.read_csv(COMMITTED))
    fig = plot_latency_budget(table)
    ax, bx = fig.axes
    from matplotlib.collections import PathCollection

    points = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert points == int(table[["aim_speedup", "speedup"]].notna().all(axis=1).sum())
    eff = lb.efficiency_table(table)
    shown = sum(eff[f"efficiency_{rt}"].notna().any() for rt in lb.ROUND_TO)
    assert len(bx.patches) == shown * len(eff)  # one bar per round_to variant measured, per case
    assert "±7%" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    import matplotlib.pyplot as plt

    plt.close("all")


def test_script_keeps_its_csv_format(clock, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_latency_budget", ROOT / "benchmarks" / "bench_latency_budget.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "b.csv"
    before = torch.get_num_threads()
    assert script.main(["--smoke", "--batch-sizes", "1", "--threads", "1", "--out", str(out)]) == 0
    torch.set_num_threads(before)
    df = pd.read_csv(out)
    assert set(df.columns) == set(pd.read_csv(COMMITTED, nrows=1).columns)  # --merge aligns them by name
    assert len(df) == 6 and np.isfinite(df["speedup"]).all()  # 2 latency targets, 4 round_to variants
    assert "2/2 latency targets within ±7%" in capsys.readouterr().out
