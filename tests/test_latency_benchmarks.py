"""The smoke runs of the two latency benchmarks on the adapted CIFAR ResNet-56 (real pruning,
real timings and a real short fine-tune; no timing is asserted beyond being positive): the
rows and columns of their tables match the committed ones, every fit lands its budget."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agentic_toolkit.pruning.strategy import Strategy

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latency_agent_smoke(tmp_path, capsys):
    assert _script("latency_agent").main(["--smoke", "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "latency_agent.csv")
    assert set(df.columns) == set(pd.read_csv(ROOT / "data" / "latency_agent.csv", nrows=1).columns)
    assert sorted(set(df["arm"])) == ["fit", "search_blind", "search_latency_view"]
    assert sorted(set(df["latency_target"])) == ["65%", "80%"] and len(df) == 6
    assert df["mac_fraction"].between(0.05, 1.0).all() and (df["speedup"] > 0).all()
    # a tighter latency budget keeps fewer MACs, in every arm
    wide = df.pivot(index="arm", columns="latency_target", values="mac_fraction")
    assert (wide["65%"] < wide["80%"]).all()
    assert all(isinstance(Strategy.from_dict(json.loads(s)), Strategy) for s in df["strategy_json"])
    assert "wrote" in capsys.readouterr().out


def test_latency_shape_accuracy_smoke(tmp_path):
    assert _script("latency_shape_accuracy").main(["--smoke", "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "latency_shape_accuracy.csv")
    committed = set(pd.read_csv(ROOT / "data" / "latency_shape_accuracy.csv", nrows=1).columns)
    assert set(df.columns) - committed == {"test_images"} and committed <= set(df.columns)  # smoke: 500 test images
    assert (df["test_images"] == 500).all()
    assert list(df["variant"]) == ["none", "auto", "auto+shape"] and (df["seed"] == 0).all()
    assert df["mac_ratio"].between(1 / 0.51, 1 / 0.475).all()  # 50% of the MACs, in the band
    assert np.allclose(df["efficiency"], df["speedup"] / df["mac_ratio"])
    assert df["test_top1"].between(0, 100).all() and (df["train_images"] == 256).all()
    assert [json.loads(s)["round_to"] for s in df["strategy_json"]] == [None, "auto", "auto"]
    store = list((tmp_path / "latency_shape_accuracy").glob("*.jsonl"))  # the smoke run's own cell store
    assert sum(len(p.read_text().splitlines()) for p in store) == 3
    assert _script("latency_shape_accuracy").main(["--smoke", "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    again = pd.read_csv(tmp_path / "latency_shape_accuracy.csv")
    assert again["test_top1"].tolist() == df["test_top1"].tolist()  # read back, not fine-tuned again
    assert sum(len(p.read_text().splitlines()) for p in tmp_path.glob("latency_shape_accuracy/*.jsonl")) == 3
