"""ONNX deployment: export_onnx of pruned models, onnxruntime outputs against PyTorch's, and
the onnxruntime figures of benchmark() and ``agentic-toolkit bench --onnx``."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import agentic_toolkit as at
from agentic_toolkit.benchmarking.onnx_export import ort_session
from agentic_toolkit.cli import main as cli_main
from agentic_toolkit.errors import ToolkitError

HAVE_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnx/onnxruntime not installed (pip install -e '.[dev]')")
CIFAR = (1, 3, 32, 32)

pytestmark = pytest.mark.usefixtures("one_thread")


def _pruned(model: nn.Module, x: torch.Tensor, fraction: float = 0.5) -> nn.Module:
    """``model`` pruned by the toolkit to ``fraction`` of its MACs (checked), in eval mode."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = at.get_plan(model, x)
        result = at.fit_to_budget(model, at.Strategy(), fraction * plan.base_macs, x, plan=plan).prune()
    assert result.macs < 0.55 * result.base_macs  # really pruned
    return result.model.eval()


@pytest.fixture(scope="module")
def r20_pair(one_thread):
    torch.manual_seed(0)
    full = at.create_model("cifar_resnet20", pretrained=True).eval()
    return _pruned(full, torch.randn(CIFAR)), full


def _check_against_pytorch(model: nn.Module, x: torch.Tensor, tmp_path) -> None:
    path = at.export_onnx(model, x, tmp_path / "pruned.onnx")
    assert path.is_file() and path.name == "pruned.onnx"
    session = ort_session(path, threads=1)
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    for batch in (1, 4):  # one file, dynamic batch
        xb = torch.randn(batch, *x.shape[1:])
        with torch.no_grad():
            ref = model(xb).numpy()
        (out,) = session.run(None, {"input": xb.numpy()})
        assert out.shape == ref.shape == (batch, 10)
        assert np.abs(ref).max() > 1e-2  # a meaningful comparison, not two vectors of zeros
        assert np.abs(out - ref).max() <= 1e-4


@needs_ort
def test_pruned_cifar_resnet_runs_in_onnxruntime(r20_pair, tmp_path):
    pruned, _ = r20_pair
    pruned.train()
    at.export_onnx(pruned, torch.randn(CIFAR), tmp_path / "train_mode.onnx")
    assert pruned.training  # exported a copy in eval mode; the model is untouched
    _check_against_pytorch(pruned.eval(), torch.randn(CIFAR), tmp_path)


@needs_ort
@pytest.mark.parametrize("name,side", [("resnet18", 64), ("vit_tiny_patch16_224", 224)])
def test_pruned_timm_models_run_in_onnxruntime(name, side, tmp_path):
    import timm

    torch.manual_seed(0)
    x = torch.randn(1, 3, side, side)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    _check_against_pytorch(_pruned(model, x), x, tmp_path)


@needs_ort
def test_static_batch_and_names(r20_pair, tmp_path):
    import onnx

    pruned, _ = r20_pair
    path = at.export_onnx(pruned, torch.randn(2, 3, 32, 32), tmp_path / "sub" / "m.onnx", opset=18,
                          input_names="images", output_names=["logits"], dynamic_batch=False)
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 18
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert graph.graph.input[0].name == "images" and dims[0].dim_value == 2
    assert graph.graph.output[0].name == "logits"


def test_export_errors(r20_pair, tmp_path):
    pruned, _ = r20_pair
    with pytest.raises(ToolkitError, match="opset"):
        at.export_onnx(pruned, torch.randn(CIFAR), tmp_path / "m.onnx", opset=5)
    with pytest.raises(ToolkitError, match="example_inputs"):
        at.export_onnx(pruned, [3, 32, 32], tmp_path / "m.onnx")
    with pytest.raises(ToolkitError, match="input_names"):
        at.export_onnx(pruned, torch.randn(CIFAR), tmp_path / "m.onnx", input_names=["a", "b"])
    with pytest.raises(ToolkitError, match="directory"):
        at.export_onnx(pruned, torch.randn(CIFAR), tmp_path)
    with pytest.raises(ToolkitError, match="torch.nn.Module"):
        at.export_onnx("resnet", torch.randn(CIFAR), tmp_path / "m.onnx")


class _Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("this model cannot be traced")


@needs_ort
def test_export_failure_names_the_exporter(tmp_path):
    with pytest.raises(ToolkitError, match=r"ONNX export of _Broken \(opset 17\) failed; TorchScript exporter"):
        at.export_onnx(_Broken(), torch.randn(CIFAR), tmp_path / "m.onnx")


@needs_ort
def test_benchmark_reports_onnxruntime_beside_pytorch(r20_pair):
    pruned, full = r20_pair
    res = at.benchmark(pruned, CIFAR, baseline=full, batch_sizes=(1, 4), threads=1, warmup=1, repeats=4,
                       onnx=True, measure_memory=False)
    assert res.onnx_status.startswith("onnxruntime ") and "1 threads" in res.onnx_status
    for r in res.rows:
        assert 0 < r["onnx_latency_ms"] <= r["onnx_latency_p90_ms"]
        assert r["onnx_throughput"] == pytest.approx(r["batch_size"] / (r["onnx_latency_ms"] / 1e3))
        assert r["onnx_baseline_latency_ms"] > 0
        assert r["onnx_speedup_min"] <= r["onnx_speedup"] <= r["onnx_speedup_max"]
        assert r["onnx_efficiency"] == pytest.approx(r["onnx_speedup"] / res.mac_ratio)
        assert r["speedup_median"] > 0  # the PyTorch figures are there too
    assert res.summary().count("onnxruntime") == 3  # one line per batch size, and the status
    assert json.loads(json.dumps(res.to_dict()))["results"][1]["onnx_speedup"] > 0


@needs_ort
def test_cli_onnx_json(capsys):
    rc = cli_main(["bench", "cifar_resnet20", "--baseline", "cifar_resnet32", "--batch-sizes", "2",
                   "--warmup", "1", "--repeats", "3", "--threads", "1", "--no-memory", "--onnx", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["onnx_status"].startswith("onnxruntime")
    (row,) = out["results"]
    assert row["onnx_latency_ms"] > 0 and row["onnx_speedup"] > 0


def test_missing_onnxruntime_is_said_clearly(r20_pair, monkeypatch, capsys):
    pruned, _ = r20_pair
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.warns(UserWarning, match="onnxruntime is not installed"):
        res = at.benchmark(pruned, CIFAR, batch_sizes=(1,), warmup=0, repeats=2, onnx=True, measure_memory=False)
    assert res.onnx_status.startswith("skipped: onnxruntime is not installed")
    assert "onnx_latency_ms" not in res.rows[0] and res.rows[0]["latency_ms"] > 0
    assert "onnx: skipped" in res.summary()
    rc = cli_main(["bench", "cifar_resnet20", "--batch-sizes", "1", "--warmup", "0", "--repeats", "2",
                   "--no-memory", "--onnx", "--json"])
    assert rc == 0
    assert "--onnx skipped: onnxruntime is not installed" in capsys.readouterr().err
    with pytest.raises(ToolkitError, match="onnxruntime is not installed"):
        ort_session("model.onnx")
