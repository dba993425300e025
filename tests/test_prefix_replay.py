"""Probes that replay the reference's forward up to their first change score exactly as a
plain forward does: on real models and real cuts, and on models that break the assumption."""

from __future__ import annotations

import contextlib
import copy

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import agentic_toolkit as at
from agentic_toolkit.agents.sensitivity import measure_sensitivity
from agentic_toolkit.pruning.ranking import Selection
from agentic_toolkit.pruning.strategy import Strategy
from agentic_toolkit.training import ProxyAccuracy


def _proxy(size: int = 32, n: int = 16, seed: int = 0, classes: int = 10) -> ProxyAccuracy:
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))
               for _ in range(3)]
    return ProxyAccuracy(batches[:1], batches[1:], metric="neg_loss")


@pytest.mark.parametrize("name, build, size", [
    ("cifar_resnet20", lambda: at.create_model("cifar_resnet20"), 32),
    # in-place ReLU and ``out += identity`` on the replayed outputs
    ("torchvision resnet18", lambda: torchvision.models.resnet18(num_classes=10), 32),
    # squeeze-excite glue, hard-swish, depthwise convs
    ("timm mobilenetv3", lambda: timm.create_model("mobilenetv3_small_050", num_classes=10), 64),
])
def test_replayed_table_equals_the_plain_one(name, build, size, monkeypatch):
    used = []
    replaying = ProxyAccuracy.replaying

    @contextlib.contextmanager
    def spy(self, *args, **kwargs):
        with replaying(self, *args, **kwargs) as replay:
            used.append(replay)
            yield replay

    monkeypatch.setattr(ProxyAccuracy, "replaying", spy)
    torch.manual_seed(0)
    model = build().eval()
    proxy, example = _proxy(size), torch.randn(1, 3, size, size)
    plan = at.get_plan(model, example)
    plain = measure_sensitivity(model, example, lambda m: proxy(m), plan=plan, progress=False, adaptive=True)
    calls = proxy.calls
    fast = measure_sensitivity(model, example, proxy, plan=plan, progress=False, adaptive=True)
    pd_equal = fast.frame.equals(plain.frame)
    assert pd_equal, (name, fast.frame.compare(plain.frame))
    assert fast.unpruned_score == plain.unpruned_score
    assert proxy.calls - calls == calls  # every probe counted once, as without the replay
    assert proxy.replay is None  # detached after the table
    (replay,) = used
    assert replay.trusted is True and replay.replayed > len(fast.frame) // 2, (replay.trusted, replay.replayed)


def test_a_probe_replays_its_prefix_and_the_checks_pass():
    torch.manual_seed(0)
    ref = at.create_model("cifar_resnet20").eval()
    proxy = _proxy()
    plan = at.get_plan(ref, torch.randn(1, 3, 32, 32))
    groups = plan.group_scopes()
    probes = [plan.apply(Selection(0.5, removed_units={g.index: g.units // 2}), Strategy(importance="magnitude_l2", isomorphic=False, global_pruning=False))[0]
              for g in groups.values()]
    plain = [proxy(p) for p in probes]
    with proxy.replaying(ref, [{m.name for m in g.members} for g in groups.values()]) as replay:
        proxy(ref)
        fast = [proxy(p) for p in probes]
    assert fast == plain
    assert replay.trusted is True and replay.replayed >= len(probes) - 2  # the stem's groups start at 0
    assert len(replay.checkpoints) >= len(groups) - 2


class _PeekingParent(nn.Module):
    """Uses a later child's weight before calling an earlier one: replaying ``a`` is wrong."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.bn(self.a(x * self.b.weight.mean()))
        return self.head(self.b(x).mean((2, 3)))


class _Branching(nn.Module):
    """Calls another module depending on the data: the call order differs between batches."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.p = nn.Conv2d(8, 8, 1)
        self.q = nn.Conv2d(8, 8, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        branch = self.p if float(x.mean()) > 0 else self.q
        x = branch(self.a(x))
        return self.head(self.b(x).mean((2, 3)))


@pytest.mark.parametrize("build", [_PeekingParent, _Branching])
def test_a_model_that_breaks_the_assumption_falls_back_to_plain_scores(build):
    torch.manual_seed(0)
    ref = build().eval()
    x, y = torch.randn(16, 3, 32, 32).abs(), torch.randint(0, 10, (16,))
    proxy = ProxyAccuracy([(x, y)], [(-x, y)], metric="neg_loss")  # _Branching: p on one batch, q on the other
    probe = copy.deepcopy(ref)
    with torch.no_grad():
        probe.b.weight.mul_(-3.0)
    plain = proxy(ref), proxy(probe)
    with proxy.replaying(ref, [{"b"}]) as replay:
        fast = proxy(ref), proxy(probe)
    assert fast == plain
    assert replay.trusted is False


def test_no_memory_for_outputs_means_no_replay():
    ref = at.create_model("cifar_resnet20").eval()
    proxy = _proxy()
    probe = copy.deepcopy(ref)
    with torch.no_grad():
        probe.layer3[2].conv2.weight.mul_(0.5)
    plain = proxy(probe)
    with proxy.replaying(ref, [{"layer3.2.conv2"}], max_bytes=0) as replay:
        proxy(ref)
        assert proxy(probe) == plain
    assert replay.checkpoints == [] and replay.replayed == 0 and not replay.outputs
