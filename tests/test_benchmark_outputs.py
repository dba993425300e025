"""The benchmarks' committed outputs: every table in data/ that a benchmark writes exists, says
what machine it was measured on, and backs the claims the README makes from it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from agentic_toolkit.tables import MACHINE_COLUMNS, annotate, machine_info
from reproduce.common import output_dir

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
#: benchmark script -> the table it writes to data/ (those whose claims the README makes here)
OUTPUTS = {
    "bench_profile.py": "bench_profile.csv",
    "budget_targets.py": "budget_targets.csv",
    "bench_budget.py": "bench_budget.csv",
    "bench_speedup.py": "bench_speedup.csv",
    "bench_data.py": "bench_data.csv",
    "convergence.py": "convergence.csv",
    "zoo_coverage.py": "zoo_coverage.csv",
    "search_finds_shapes.py": "search_finds_shapes.csv",
    "bench_latency_budget.py": "bench_latency_budget.csv",
    "latency_agent.py": "latency_agent.csv",
    "latency_shape_accuracy.py": "latency_shape_accuracy.csv",
    "search_pareto.py": "search_pareto.csv",
    "bench_parallel.py": "bench_parallel.csv",
}


def _load(script: str):
    name = f"bench_{Path(script).stem}"
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass in the script looks its module up there
    spec.loader.exec_module(module)
    return module


def test_machine_info_columns():
    info = machine_info(threads=3)
    assert tuple(info) == MACHINE_COLUMNS
    assert info["machine"] and info["cpu_cores"] >= 1 and info["torch_threads"] == 3
    assert info["torch"] and info["timm"] and info["torch_pruning"]
    df = annotate(pd.DataFrame({"a": [1, 2], "torch_threads": [7, 7]}))
    assert list(df.columns[:2]) == ["a", "torch_threads"] and (df["torch_threads"] == 7).all()
    assert set(MACHINE_COLUMNS) <= set(df.columns)
    assert output_dir(smoke=True) == ROOT / "data" / "smoke"


def test_every_benchmark_has_a_smoke_mode(capsys):
    scripts = sorted(p.name for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))
    assert set(OUTPUTS) <= set(scripts)
    for script in scripts:
        with pytest.raises(SystemExit) as exit_info:
            _load(script).main(["--help"])
        assert exit_info.value.code == 0
        assert "--smoke" in capsys.readouterr().out, script


@pytest.mark.parametrize("script,table", [(s, t) for s, t in OUTPUTS.items() if s != "convergence.py"])
def test_committed_table_has_machine_columns(script, table):
    path = ROOT / "data" / table
    assert path.is_file(), f"{path} missing: run `python benchmarks/{script}`"
    df = pd.read_csv(path)
    assert len(df) > 0
    missing = set(MACHINE_COLUMNS) - set(df.columns)
    assert not missing, f"{table} lacks {sorted(missing)}"
    assert df["machine"].notna().all() and (df["cpu_cores"] >= 1).all()


def test_committed_numbers_back_the_claims():
    profile = pd.read_csv(ROOT / "data" / "bench_profile.csv")
    assert profile["counts_equal"].all(), "fvcore and profile_macs disagree"
    targets = pd.read_csv(ROOT / "data" / "budget_targets.csv")
    assert targets["exact"].all(), "a pruned model's MACs differ from the prediction"
    assert targets["error_pct"].abs().max() <= 0.5
    assert set(targets.loc[targets["kind"] == "paper", "target"]) == {"1.77G", "4.22G", "8.17G", "4.16G", "2.61G"}
    cost = pd.read_csv(ROOT / "data" / "bench_budget.csv")
    assert cost["exact"].all()
    speed = pd.read_csv(ROOT / "data" / "bench_speedup.csv")
    assert (speed["speedup_min"] <= speed["speedup_median"]).all()
    assert (speed["speedup_median"] <= speed["speedup_max"]).all()


def test_budget_targets_script_writes_its_table(tmp_path, one_thread):
    out = tmp_path / "targets.csv"
    assert _load("budget_targets.py").main(["--models", "cifar_resnet20=", "--fractions", "0.5", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert len(df) == 1 and df["exact"].all() and -5 <= df["error_pct"].iloc[0] <= 1  # a narrow net: coarse steps
    assert set(MACHINE_COLUMNS) <= set(df.columns)
