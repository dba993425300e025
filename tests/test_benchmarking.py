"""benchmark() and ``agentic-toolkit bench`` on real (pruned) CIFAR ResNets."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from agentic_toolkit import benchmark, create_model
from agentic_toolkit.benchmarking import BenchmarkResult, count_macs
from agentic_toolkit.cli import main as cli_main
from agentic_toolkit.errors import ToolkitError

CIFAR = (1, 3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair():
    import torch_pruning as tp

    full = create_model("cifar_resnet20")
    pruned = copy.deepcopy(full)
    tp.pruner.MetaPruner(
        pruned, torch.randn(CIFAR), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5, ignored_layers=[pruned.linear],
        in_channel_groups={}, out_channel_groups={}, num_heads={},
    ).step()
    return pruned.eval(), full


def test_speedup_against_a_baseline(pair):
    pruned, full = pair
    before = torch.get_num_threads()
    res = benchmark(pruned, CIFAR, baseline=full, batch_sizes=(1, 8), threads=1, warmup=1, repeats=6)
    assert torch.get_num_threads() == before  # restored
    assert isinstance(res, BenchmarkResult) and res.threads == 1
    assert [r["batch_size"] for r in res.rows] == [1, 8]
    assert res.macs == count_macs(pruned, CIFAR) and res.baseline_macs == count_macs(full, CIFAR)
    assert 3.0 < res.mac_ratio < 5.0  # half the channels of every layer: about a quarter of the MACs
    for r in res.rows:
        assert 0 < r["latency_ms"] <= r["latency_p90_ms"]
        assert r["throughput"] == pytest.approx(r["batch_size"] / (r["latency_ms"] / 1e3))
        assert r["speedup_min"] <= r["speedup_median"] <= r["speedup_max"]
        assert r["efficiency"] == pytest.approx(r["speedup_median"] / res.mac_ratio)
        # activation memory: half the channels -> about half the activations of the baseline
        assert 0.3 < r["peak_memory_mb"] / r["baseline_peak_memory_mb"] < 0.7
    assert res.rows[1]["peak_memory_mb"] > 4 * res.rows[0]["peak_memory_mb"]  # batch 8 vs 1
    assert res.memory_method.startswith("peak live tensor bytes")
    assert "speedup" in res.summary() and "efficiency" in str(res)
    frame = res.to_frame()
    assert {"batch_size", "latency_ms", "speedup_median", "efficiency"} <= set(frame.columns)
    assert json.loads(json.dumps(res.to_dict()))["results"][0]["speedup"]["median"] > 0
    fig = res.plot()
    assert fig.axes[0].get_xlabel() == "batch size" and len(fig.axes[0].patches) == 4  # 2 sizes x 2 models


def test_a_model_against_its_copy_has_speedup_about_one(pair):
    """Interleaved timing is fair: the same network timed as A and as B gives ~1x."""
    _, full = pair
    res = benchmark(full, CIFAR, baseline=copy.deepcopy(full), batch_sizes=(4,), threads=1,
                    warmup=2, repeats=12, measure_memory=False)
    (row,) = res.rows
    assert 0.6 < row["speedup_median"] < 1.6
    assert row["efficiency"] == pytest.approx(row["speedup_median"])  # MAC ratio 1
    assert res.memory_method == "not measured" and "peak_memory_mb" not in row


def test_compare_speedups_times_several_models_in_one_loop(pair):
    from agentic_toolkit.benchmarking.runner import compare_speedups

    pruned, full = pair
    rows = compare_speedups([pruned, copy.deepcopy(full)], (4, 3, 32, 32), baseline=full, threads=1, warmup=1,
                            repeats=8, channels_last=True)
    assert len(rows) == 2 and all(r["speedup_min"] <= r["speedup_median"] <= r["speedup_max"] for r in rows)
    assert rows[0]["baseline_latency_ms"] == rows[1]["baseline_latency_ms"]  # one baseline for all
    assert rows[0]["speedup_median"] > rows[1]["speedup_median"]  # a quarter of the MACs beats a copy
    assert 0.6 < rows[1]["speedup_median"] < 1.6
    assert next(full.parameters()).is_contiguous()  # timed on an NHWC copy
    with pytest.raises(ToolkitError, match="at least one model"):
        compare_speedups([], CIFAR, baseline=full)


def test_the_model_is_not_modified(pair):
    pruned, _ = pair
    pruned.train()
    state = {k: v.clone() for k, v in pruned.state_dict().items()}
    benchmark(pruned, CIFAR, batch_sizes=(2,), warmup=0, repeats=2, channels_last=True)
    assert pruned.training
    assert pruned.conv1.weight.is_contiguous()  # the channels_last copy was a copy
    assert all(torch.equal(state[k], v) for k, v in pruned.state_dict().items())
    pruned.eval()


def test_onnx_is_optional(pair):
    pruned, full = pair
    res = benchmark(pruned, CIFAR, baseline=full, batch_sizes=(2,), warmup=1, repeats=3, onnx=True,
                    measure_memory=False)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        assert res.onnx_status.startswith("skipped") and "onnx" in res.onnx_status
        assert "onnx_latency_ms" not in res.rows[0]
    else:
        assert res.rows[0]["onnx_latency_ms"] > 0 and res.rows[0]["onnx_speedup"] > 0
    assert res.rows[0]["latency_ms"] > 0  # the PyTorch timings are there either way


def test_bad_input():
    model = create_model("cifar_resnet20")
    with pytest.raises(ToolkitError, match="batch_sizes"):
        benchmark(model, CIFAR, batch_sizes=(0,))
    with pytest.raises(ToolkitError, match="input_size"):
        benchmark(model, (3, 32))
    with pytest.raises(ToolkitError, match="cannot run on input"):
        benchmark(model, (1, 4, 32, 32), batch_sizes=(1,))
    with pytest.raises(ToolkitError, match="threads"):
        benchmark(model, CIFAR, threads=0)


def test_cli_json(capsys):
    rc = cli_main(["bench", "cifar_resnet20", "--baseline", "cifar_resnet32", "--batch-sizes", "1,2",
                   "--warmup", "1", "--repeats", "3", "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "cifar_resnet20" and out["input_size"] == [1, 3, 32, 32]
    assert [r["batch_size"] for r in out["results"]] == [1, 2]
    for r in out["results"]:
        assert r["latency_ms"] > 0
        assert set(r["speedup"]) == {"median", "min", "max"}
        assert r["efficiency"] == pytest.approx(r["speedup"]["median"] / out["mac_ratio"])
    # ResNet-32 has more MACs than ResNet-20: the "baseline" here is the bigger one
    assert out["mac_ratio"] > 1.4


def test_cli_bad_input(capsys):
    assert cli_main(["bench", "cifar_resnet20", "--batch-sizes", "1,x"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err
    assert cli_main(["bench", "no/such/dir"]) == 2
    assert "neither a model name nor a pruned model directory" in capsys.readouterr().err


def test_cli_with_a_saved_pruned_directory(tmp_path, capsys):
    from agentic_toolkit import Strategy
    from agentic_toolkit.pruning.apply import apply_isomorphic_prune
    from agentic_toolkit.pruning.persist import save_pruned

    result = apply_isomorphic_prune(create_model("cifar_resnet20"), Strategy(pruning_ratio=0.4),
                                    torch.randn(CIFAR))
    folder = save_pruned(tmp_path / "pruned", result)
    rc = cli_main(["bench", str(folder), "--baseline", "cifar_resnet20", "--batch-sizes", "2",
                   "--warmup", "1", "--repeats", "3", "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_size"] == [1, 3, 32, 32]  # CIFAR input size found from the saved spec
    assert out["mac_ratio"] > 1.5
    assert out["results"][0]["efficiency"] > 0
