"""Magnitude importance in bounded memory: the same scores as torch-pruning, fewer copies.

:class:`~agentic_toolkit.pruning.criteria.ChunkedMagnitudeImportance` scores every layer a
slice of its weight at a time (torch-pruning's ``GroupMagnitudeImportance`` makes three
whole-weight copies, which set the peak of pruning RegNetY-128GF). Its scores must be
bit-identical to torch-pruning's, so channels rank exactly as before.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from agentic_toolkit import create_model
from agentic_toolkit.pruning import criteria
from agentic_toolkit.pruning.plan import PrunePlan


class _Odd(nn.Module):
    """Transposed, grouped and depthwise convolutions, batch and layer norms, linears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.grouped = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.up = nn.ConvTranspose2d(12, 8, 2, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.down = nn.ConvTranspose2d(8, 6, 3, padding=1, groups=2)
        self.norm = nn.LayerNorm(6)
        self.fc1 = nn.Linear(6, 20)
        self.fc2 = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.dw(self.up(self.grouped(self.bn(self.conv(x)).relu()))))
        return self.fc2(self.fc1(self.norm(x.mean((2, 3)))).relu())


def _models():
    import timm
    import torchvision

    torch.manual_seed(0)
    odd = _Odd().eval()
    for m in odd.modules():  # non-trivial norm weights
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return {
        "cifar_resnet20": (create_model("cifar_resnet20", pretrained=True), torch.randn(1, 3, 32, 32)),
        "regnet_y_400mf": (torchvision.models.regnet_y_400mf(weights=None).eval(), torch.randn(1, 3, 64, 64)),
        "vit_tiny": (timm.create_model("vit_tiny_patch16_224", pretrained=False).eval(), torch.randn(1, 3, 224, 224)),
        "odd": (odd, torch.randn(1, 3, 8, 8)),
    }


@pytest.fixture(scope="module")
def plans(one_thread):
    return {name: PrunePlan.build(m, x) for name, (m, x) in _models().items()}


@pytest.mark.parametrize("chunk", [criteria.MAGNITUDE_CHUNK_ELEMENTS, 64])
@pytest.mark.parametrize("p", [1, 2])
def test_chunked_magnitude_equals_torch_pruning(plans, monkeypatch, p, chunk):
    """Bit-identical scores on every group, in one slice or in many (chunk=64 elements)."""
    monkeypatch.setattr(criteria, "MAGNITUDE_CHUNK_ELEMENTS", chunk)
    ours = criteria.ChunkedMagnitudeImportance(p=p, normalizer=None)
    theirs = tp.importance.GroupMagnitudeImportance(p=p, normalizer=None)
    for name, plan in plans.items():
        scored = 0
        for i, group in plan._tp_groups.items():
            if group is None:
                continue
            a, b = ours(group), theirs(group)
            assert (a is None) == (b is None), (name, i)
            if a is not None:
                assert a.dtype == b.dtype and torch.equal(a, b), (name, plan.groups[i].root_name)
                scored += 1
        assert scored > 0, name


def test_chunked_magnitude_with_bias_and_normalizer(plans, monkeypatch):
    """Bias terms and torch-pruning's own normalisers pass through unchanged."""
    monkeypatch.setattr(criteria, "MAGNITUDE_CHUNK_ELEMENTS", 64)
    ours = criteria.ChunkedMagnitudeImportance(p=2, bias=True, normalizer="mean")
    theirs = tp.importance.GroupMagnitudeImportance(p=2, bias=True, normalizer="mean")
    for plan in plans.values():
        for group in filter(None, plan._tp_groups.values()):
            a, b = ours(group), theirs(group)
            assert (a is None and b is None) or torch.equal(a, b)


class _LargestAllocation(TorchDispatchMode):
    """Records the largest tensor an operation allocates (outputs that are views of an
    input's storage do not count)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.numel = max(self.numel, t.numel())
        return out


def _largest_allocation(scorer, group) -> int:
    with _LargestAllocation() as mode:
        scorer(group)
    return mode.numel


def test_chunked_magnitude_keeps_no_whole_weight_copy(one_thread):
    """Scoring a group with a 4096x4096 weight (as a producer and as a consumer):
    torch-pruning allocates whole-weight temporaries, we at most one slice."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 8))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 64))
    for layer in (model[0], model[2]):
        group = graph.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=list(range(4096)))
        ours = _largest_allocation(criteria.magnitude_l2, group)
        theirs = _largest_allocation(tp.importance.GroupMagnitudeImportance(p=2, normalizer=None), group)
        assert ours <= criteria.MAGNITUDE_CHUNK_ELEMENTS < theirs == 4096 * 4096, (ours, theirs)
