"""Every supported architecture prunes, keeps its output shape and matches the predicted MACs.

(ResNet-101, ConvNeXt-Small and DeiT-Base are pruned in tests/test_budget_paper.py.)
"""

from __future__ import annotations

import pytest
import torch

from agentic_toolkit import Strategy, apply_isomorphic_prune, create_model
from agentic_toolkit.pruning.plan import PrunePlan

ARCHS = {
    # name: (input side, strategy multipliers, scopes that must exist)
    "resnet50": (128, {}, {"stem", "stage4", "residual", "bottleneck.inner"}),
    "convnext_tiny": (128, {}, {"stage1", "residual", "convnext.mlp"}),
    "deit_small_patch16_224": (224, {"attn.heads": 0.5}, {"vit.mlp", "attn.head_dim", "attn.heads"}),
    "swin_tiny_patch4_window7_224": (224, {}, {"swin.mlp", "attn.head_dim", "stage4"}),
    "efficientnet_b0": (128, {}, {"mbconv.inner", "mbconv.se", "residual", "head"}),
    "mobilenetv3_large_100": (128, {}, {"mbconv.inner", "mbconv.se", "residual"}),
    "cifar_resnet20": (32, {}, {"basicblock.inner", "residual"}),
    "cifar_resnet32": (32, {}, {"basicblock.inner", "residual"}),
    "cifar_resnet44": (32, {}, {"basicblock.inner", "residual"}),
    "cifar_resnet56": (32, {}, {"basicblock.inner", "residual"}),
}


@pytest.mark.parametrize("name", list(ARCHS))
def test_prune_keeps_output_shape_and_exact_macs(name):
    side, multipliers, scopes = ARCHS[name]
    model = create_model(name)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).shape
    plan = PrunePlan.build(model, x[:1])
    assert scopes <= set(plan.scope_names())
    r = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.3, multipliers=multipliers), x[:1], plan=plan)
    assert r.macs == r.predicted_macs
    assert 0.2 * r.base_macs < r.macs < 0.9 * r.base_macs
    assert r.params < r.base_params
    with torch.no_grad():
        out = r.model(x)
    assert out.shape == expected and torch.isfinite(out).all()
    if name.startswith("swin"):
        # torch-pruning cannot follow Swin's patch merging (2x2 -> channels): those stage
        # widths are kept, and said so; MLP, head dims and the last stage are pruned
        kept = plan.not_prunable()
        assert sum("downsample.norm" in k and "reshape" in k for k in kept) == 3
        assert "attn.heads" not in plan.scope_names()  # per-head relative position tables


def test_layers_that_break_when_pruned_are_found_and_kept():
    """PoolFormer's layer scale reshapes with a stored shape torch-pruning cannot update:
    the meta-device check finds those groups, keeps them, and the rest prunes fine."""
    model = create_model("poolformer_s12")
    x = torch.randn(1, 3, 128, 128)
    plan = PrunePlan.build(model, x)
    broken = [k for k in plan.not_prunable() if "breaks the forward pass" in k]
    assert broken and all("is invalid for input" in k for k in broken)
    r = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.3), x, plan=plan)
    assert r.macs == r.predicted_macs < r.base_macs
    assert r.model(x).shape == (1, 1000)


def test_graph_that_never_finishes_gives_a_clear_error(monkeypatch):
    import agentic_toolkit.pruning.model_utils as groups_module
    from agentic_toolkit.pruning.plan import NothingToPruneError

    monkeypatch.setattr(groups_module, "GRAPH_TIME_LIMIT_S", 1e-3)
    monkeypatch.setattr(groups_module, "GRAPH_TIME_PER_MODULE_S", 0.0)
    with pytest.raises(NothingToPruneError, match="did not finish grouping"):
        PrunePlan.build(create_model("cifar_resnet56"), torch.randn(1, 3, 32, 32))


def test_time_limit_works_in_a_worker_thread_and_scales_with_size(monkeypatch):
    """The limit is cooperative (no SIGALRM): it fires in a worker thread too, and larger
    models get a larger allowance."""
    import threading

    import agentic_toolkit.pruning.model_utils as groups_module
    from agentic_toolkit.pruning.plan import NothingToPruneError

    small, large = create_model("cifar_resnet20"), create_model("cifar_resnet56")
    assert groups_module.graph_time_limit(large) > groups_module.graph_time_limit(small)
    monkeypatch.setattr(groups_module, "GRAPH_TIME_LIMIT_S", 1e-3)
    monkeypatch.setattr(groups_module, "GRAPH_TIME_PER_MODULE_S", 0.0)
    caught = []

    def work():
        try:
            PrunePlan.build(large, torch.randn(1, 3, 32, 32))
        except NothingToPruneError as exc:
            caught.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert caught and "CPU seconds" in str(caught[0])


def test_torchvision_swin_groups_without_blowing_up():
    """torchvision's Swin applies F.linear to the attention weights and adds a gathered
    relative-position table: torch-pruning's traversal around that reshape cycle grew its
    index lists without bound (23 GB). Those groups are now stopped and kept; the MLPs
    prune, the prediction is exact and the pruned model runs."""
    import resource

    import torchvision

    model = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 112, 112)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    plan = PrunePlan.build(model, x)
    assert any("without bound" in k for k in plan.not_prunable())
    r = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.5), x, plan=plan)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 1024
    assert r.macs == r.predicted_macs < r.base_macs
    assert r.model(x).shape == (1, 1000)


def test_inexact_mac_model_is_said_and_verified_by_counting():
    """Where the analytic MAC model is not exact, fit_to_budget warns, prunes and counts
    the solved model, and lands within 0.5% of the target in the counted MACs."""
    from agentic_toolkit import fit_to_budget

    model = create_model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    plan = PrunePlan.build(model, x)
    assert not plan.mac_model.inexact
    plan.mac_model.inexact = True  # as the meta-device probe marks it for such layouts
    target = plan.base_macs // 2
    with pytest.warns(UserWarning, match="not exact"):
        fit = fit_to_budget(model, Strategy(), target, x, plan=plan)
    assert fit.verified and fit.counts
    r = fit.prune()
    assert r.macs == fit.predicted_macs and abs(r.macs - target) <= 0.005 * target
