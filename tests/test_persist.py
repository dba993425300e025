"""save_pruned / load_pruned: same outputs after a round trip, no pickle, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from agentic_toolkit import Strategy, apply_isomorphic_prune, create_model, load_pruned, save_pruned
from agentic_toolkit.errors import CheckpointError, ToolkitError
from agentic_toolkit.models import CifarResNet


@pytest.mark.parametrize(
    "name,multipliers",
    [
        ("resnet50", {"stage4": 1.2}),
        ("convnext_small", {}),
        ("deit_small_patch16_224", {"attn.heads": 1.0, "attn.head_dim": 0.5}),
    ],
)
def test_round_trip_reproduces_outputs(tmp_path, name, multipliers):
    model = create_model(name)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    r = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.3, multipliers=multipliers), x[:1])
    save_pruned(tmp_path / "m", r)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(
        ["history.json", "meta.json", "model.safetensors", "strategy.json"]
    )
    loaded = load_pruned(tmp_path / "m")
    with torch.no_grad():
        diff = (r.model.eval()(x) - loaded.model(x)).abs().max().item()
    assert diff < 1e-5
    assert loaded.macs == r.macs and loaded.params == r.params and loaded.widths == r.widths
    assert loaded.strategy == r.strategy and not loaded.model.training
    assert loaded.base_widths == r.base_widths and loaded.to_frame().equals(r.to_frame())


def test_model_without_spec_needs_base_model(tmp_path):
    model = CifarResNet(3)  # not built by create_model: no toolkit_spec
    x = torch.randn(1, 3, 32, 32)
    r = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.4), x)
    save_pruned(tmp_path / "m", r)
    with pytest.raises(ToolkitError, match="base_model"):
        load_pruned(tmp_path / "m")
    loaded = load_pruned(tmp_path / "m", base_model=CifarResNet(3))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), r.model.eval()(x))
    with pytest.raises(CheckpointError, match="replay|does not fit"):
        load_pruned(tmp_path / "m", base_model=CifarResNet(5))


def test_bad_directories(tmp_path):
    with pytest.raises(CheckpointError, match="no saved pruned model"):
        load_pruned(tmp_path / "missing")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pruned(tmp_path / "d")
    (tmp_path / "d" / "meta.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(CheckpointError, match="format"):
        load_pruned(tmp_path / "d")
    with pytest.raises(ToolkitError, match="PruneResult"):
        save_pruned(tmp_path / "e", create_model("cifar_resnet20"))
