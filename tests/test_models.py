"""Model zoo: CIFAR ResNets reproduce the checkpoints, are prunable, and bad input is clear."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp

from agentic_toolkit.errors import (
    CheckpointError,
    ChecksumError,
    DataNotFoundError,
    UnknownModelError,
)
from agentic_toolkit.models import PadShortcut, create_model, find_cifar_checkpoint


def _top1(model, loader) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return 100.0 * correct / total


@pytest.mark.parametrize("name,expected", [("cifar_resnet20", 81.0), ("cifar_resnet56", 83.2)])
def test_pretrained_cifar_resnet_reproduces_measured_top1(name, expected, cifar_test_loader):
    model = create_model(name, pretrained=True)
    assert abs(_top1(model, cifar_test_loader) - expected) <= 0.3


def test_pad_shortcut_equals_option_a_zero_padding():
    sc = PadShortcut(16, 32)
    x = torch.randn(2, 16, 8, 8)
    ref = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(sc(x), ref)
    # frozen: no gradient ever reaches the embedding weight
    sc(x.requires_grad_()).sum().backward()
    assert sc.weight.grad is None


def test_cifar_resnet_is_prunable_by_dependency_graph():
    model = create_model("cifar_resnet56", pretrained=True)
    example = torch.randn(1, 3, 32, 32)
    base_out = model(example).shape
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5, ignored_layers=[model.linear], global_pruning=False,
    )
    pruner.step()
    assert model(example).shape == base_out
    assert model.layer3[0].conv2.out_channels == 32
    assert model.layer3[0].shortcut.out_channels == 32  # pruned together with the residual path


def test_timm_model_by_name_and_num_classes():
    model = create_model("resnet18", num_classes=7)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert model.toolkit_spec["name"] == "resnet18"


def test_unknown_model_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="resnet50"):
        create_model("resnet5O")
    with pytest.raises(UnknownModelError, match="cifar_resnet56"):
        create_model("cifar_resnet65")


def test_timm_pretrained_true_refuses_to_download():
    with pytest.raises(DataNotFoundError, match="never downloads"):
        create_model("resnet18", pretrained=True)


def test_corrupt_checkpoint_names_file_and_checksums(tmp_path):
    src = find_cifar_checkpoint("cifar_resnet20")
    bad = tmp_path / src.name
    shutil.copy(src, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as info:
        create_model("cifar_resnet20", pretrained=bad)
    msg = str(info.value)
    assert str(bad) in msg and src.name.split("-")[1].split(".")[0] in msg and "found" in msg


def test_mismatched_checkpoint_is_explained():
    wrong = find_cifar_checkpoint("cifar_resnet20")
    with pytest.raises(CheckpointError, match="missing keys"):
        create_model("cifar_resnet56", pretrained=wrong)


def test_missing_checkpoint_lists_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError, match="checkpoint not found"):
        create_model("cifar_resnet20", pretrained=tmp_path / "nope.th")
