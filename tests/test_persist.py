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


def _round_trip(tmp_path, model, x, strategy=None):
    r = apply_isomorphic_prune(model, strategy or Strategy(pruning_ratio=0.4), x)
    save_pruned(tmp_path / "m", r)
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    loaded = load_pruned(tmp_path / "m")  # no base_model: the architecture is recorded
    with torch.no_grad():
        diff = (r.model.eval()(x) - loaded.model(x)).abs().max().item()
    return meta, loaded, diff


def test_timm_native_model_round_trips_without_base_model(tmp_path):
    """``timm.create_model`` (not ``at.create_model``): the architecture comes from
    ``pretrained_cfg``, constructor arguments that differ from a default build are kept."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=7).eval()
    meta, loaded, diff = _round_trip(tmp_path, model, torch.randn(1, 3, 64, 64))
    assert meta["architecture"] == {
        "source": "timm", "name": "vit_tiny_patch16_224", "kwargs": {"num_classes": 7, "img_size": [64, 64]}
    }
    assert diff <= 1e-5 and loaded.model.num_classes == 7


def test_torchvision_native_model_round_trips_without_base_model(tmp_path):
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    meta, _, diff = _round_trip(tmp_path, model, torch.randn(1, 3, 64, 64))
    assert meta["architecture"] == {"source": "torchvision", "name": "resnet18", "kwargs": {"num_classes": 10}}
    assert diff <= 1e-5


def test_architecture_can_be_named_and_unsafe_arguments_are_refused(tmp_path):
    import torchvision

    from agentic_toolkit.errors import UnknownModelError
    from agentic_toolkit.models import build_architecture, check_arch_kwargs

    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    r = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.3), x)
    with pytest.raises(ToolkitError, match="does not describe"):
        save_pruned(tmp_path / "bad", r, architecture="torchvision:resnet34")
    save_pruned(tmp_path / "m", r, architecture="torchvision:resnet18")
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["architecture"]["name"] == "resnet18"
    for bad in ({"weights": "IMAGENET1K_V1"}, {"pretrained": True}, {"checkpoint_path": "/x"},
                {"norm_layer": torch.nn.BatchNorm2d}, {"num_classes": {"a": 1}}):
        with pytest.raises(UnknownModelError):
            check_arch_kwargs(bad)
    with pytest.raises(UnknownModelError, match="no constructor argument|does not accept"):
        build_architecture({"source": "torchvision", "name": "resnet18", "kwargs": {"not_an_arg": 1}})
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    meta["architecture"]["kwargs"] = {"weights": "IMAGENET1K_V1"}  # a tampered folder never loads weights
    (tmp_path / "m" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not allowed"):
        load_pruned(tmp_path / "m")


def test_finetune_out_is_a_folder_load_pruned_reads(tmp_path, one_thread):
    """``python -m agentic_toolkit.cli.finetune --pruned DIR --out OUT``: OUT loads with
    ``load_pruned`` and holds the fine-tuned weights."""
    from safetensors.torch import load_file

    from agentic_toolkit.cli.finetune import main

    r = apply_isomorphic_prune(create_model("cifar_resnet20"), Strategy(pruning_ratio=0.3), torch.randn(1, 3, 32, 32))
    save_pruned(tmp_path / "pruned", r)
    out = tmp_path / "ft"
    assert main(["--pruned", str(tmp_path / "pruned"), "--data", "cifar10", "--limit", "16", "--no-val",
                 "--batch-size", "8", "--no-augment", "--no-progress", "--out", str(out)]) == 0
    loaded = load_pruned(out)
    tuned = load_file(str(out / "model.safetensors"))
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tuned.items())
    assert not torch.equal(state["conv1.weight"], r.model.state_dict()["conv1.weight"])
    assert loaded.widths == r.widths and any("fine-tuned" in n for n in loaded.notes)
