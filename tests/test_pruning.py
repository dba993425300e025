"""Pruning engine on small real models: exact MACs, importance guards, scopes, bad input."""

from __future__ import annotations

import hashlib
import warnings

import pytest
import torch

from agentic_toolkit import Strategy, apply_isomorphic_prune, create_model, describe_scopes
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.profiling.profile import profile_macs
from agentic_toolkit.pruning.plan import NothingToPruneError, PrunePlan
from agentic_toolkit.pruning.strategy import StrategyError

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for n, p in model.named_parameters():
        h.update(f"{n}:{p.requires_grad}:{p.grad is None}".encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def resnet20():
    return create_model("cifar_resnet20", pretrained=True)


@pytest.fixture(scope="module")
def calibration():
    from agentic_toolkit.data import calibration_batches

    return calibration_batches("cifar10", n_batches=2, batch_size=32)


def test_input_model_untouched_unless_inplace(resnet20, calibration):
    model = create_model("cifar_resnet20", pretrained=True).train()
    before = _fingerprint(model)
    r = apply_isomorphic_prune(model, Strategy(importance="taylor", pruning_ratio=0.4), X32, calibration)
    assert _fingerprint(model) == before and model.training  # weights, grads, flags, mode
    assert r.macs < r.base_macs and r.model is not model
    # the frozen PadShortcut stays frozen in the pruned copy
    assert not r.model.layer2[0].shortcut.weight.requires_grad
    r2 = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.4), X32, inplace=True)
    assert r2.model is model and _fingerprint(model) != before
    assert profile_macs(model, example_inputs=X32).total_macs == r2.macs


def test_taylor_on_padshortcut_resnet_prunes_every_group(resnet20, calibration):
    """PadShortcut weights have no grad: Taylor must not crash, and no group is skipped."""
    plan = PrunePlan.build(resnet20, X32, calibration)
    strategy = Strategy(importance="taylor", pruning_ratio=0.3)
    sel = plan.select(strategy)
    candidates = [g for g in plan.groups if g.prunable]
    assert candidates and all(g.index in sel.removed_units for g in candidates)
    scores, _ = plan.importance("taylor")
    assert all(torch.isfinite(scores[g.index][0]).all() for g in candidates)
    r = apply_isomorphic_prune(resnet20, strategy, X32, plan=plan)
    assert r.macs == r.predicted_macs
    out = r.model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_taylor_with_all_zero_gradients_falls_back_to_magnitude(calibration):
    model = create_model("cifar_resnet20", pretrained=True)
    with torch.no_grad():
        model.linear.weight.zero_()  # the loss no longer depends on any feature: zero gradients
    with pytest.warns(UserWarning, match="all zero"):
        taylor = PrunePlan.build(model, X32, calibration)
        sel_t = taylor.select(Strategy(importance="taylor", pruning_ratio=0.3))
    sel_m = taylor.select(Strategy(importance="magnitude_l2", pruning_ratio=0.3))
    assert sel_t.removed_units == sel_m.removed_units and sel_t.removed_units


def test_zero_or_nan_group_importance_never_skips_a_group():
    """timm zero-inits the last BN of each block: Taylor is 0 (tp: NaN) for inner groups."""
    model = create_model("resnet18", num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    cal = [(torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,)))]
    plan = PrunePlan.build(model, x, cal)
    with pytest.warns(UserWarning, match="zero or NaN"):
        sel = plan.select(Strategy(importance="taylor", pruning_ratio=0.3))
    candidates = [g for g in plan.groups if g.prunable]
    assert all(g.index in sel.removed_units for g in candidates)


@pytest.mark.parametrize("importance", ["magnitude_l1", "lamp", "random"])
def test_each_importance_prunes_exactly(resnet20, importance):
    r = apply_isomorphic_prune(resnet20, Strategy(importance=importance, pruning_ratio=0.3), X32)
    assert r.macs == r.predicted_macs < r.base_macs
    again = apply_isomorphic_prune(resnet20, Strategy(importance=importance, pruning_ratio=0.3), X32)
    assert again.widths == r.widths  # deterministic, also for random importance


def test_scopes_of_resnet20(resnet20):
    df = describe_scopes(resnet20, X32)
    assert {"name", "kind", "channels", "mac_share", "description"} <= set(df.columns)
    assert {"stage1", "stage2", "stage3", "residual", "basicblock.inner"} <= set(df["name"])
    assert df["mac_share"].between(0, 1).all() and (df["channels"] > 0).all()
    inner = df.set_index("name").loc["basicblock.inner"]
    assert inner["channels"] == 3 * (16 + 32 + 64)  # conv1 output of each of the 9 blocks
    assert any("linear" in s and "classifier" in s for s in df.attrs["not_prunable"])


def test_multipliers_shape_the_pruning(resnet20):
    plain = apply_isomorphic_prune(resnet20, Strategy(pruning_ratio=0.3), X32)
    shaped = apply_isomorphic_prune(
        resnet20, Strategy(pruning_ratio=0.3, multipliers={"stage3": 2.0, "stage1": 0.5}), X32
    )
    w0, w1 = plain.widths, shaped.widths
    assert w1["layer3.0.conv1"] < w0["layer3.0.conv1"] and w1["layer1.0.conv1"] > w0["layer1.0.conv1"]
    inner_only = apply_isomorphic_prune(
        resnet20, Strategy(pruning_ratio=0.5, multipliers={"residual": 0.01}), X32
    )
    assert inner_only.widths["layer3.0.conv2"] == 64 and inner_only.widths["layer3.0.conv1"] < 64


def test_round_to_and_max_layer_ratio():
    model = create_model("cifar_resnet56")
    r = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.6, round_to=4, max_layer_ratio=0.5), X32)
    base = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    changed = {n: w for n, w in r.widths.items() if n in base and w != base[n]}
    assert changed and all(w % 4 == 0 for w in changed.values())
    assert all(w >= base[n] * 0.5 for n, w in r.widths.items() if n in base)
    assert r.macs == r.predicted_macs


def test_vit_head_dims_and_heads_are_pruned_and_attributes_updated():
    model = create_model("deit_small_patch16_224", img_size=64, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    scopes = set(describe_scopes(model, x[:1])["name"])
    assert {"vit.mlp", "attn.head_dim", "attn.heads", "residual"} <= scopes
    r = apply_isomorphic_prune(
        model, Strategy(pruning_ratio=0.3, multipliers={"attn.heads": 1.0, "attn.head_dim": 0.5}), x[:1]
    )
    attn = r.model.blocks[0].attn
    assert attn.num_heads < 6 and attn.head_dim < 64
    assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim == 3 * attn.attn_dim
    assert attn.scale == pytest.approx(attn.head_dim**-0.5)
    assert r.num_heads["blocks.0.attn"] == attn.num_heads
    assert r.model(x).shape == (2, 10) and r.macs == r.predicted_macs


@pytest.mark.slow
def test_pruned_vit_runs_under_torch_compile():
    model = create_model("deit_small_patch16_224", img_size=32, patch_size=8, num_classes=10, depth=2)
    x = torch.randn(2, 3, 32, 32)
    r = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.4, multipliers={"attn.heads": 1.0}), x[:1])
    eager = r.model(x)
    compiled = torch.compile(r.model)
    with torch.no_grad():
        assert torch.allclose(compiled(x), eager, atol=1e-4)


def test_bad_input_gives_clear_errors(resnet20):
    with pytest.raises(StrategyError, match="unknown scope 'stage9'.*stage1"):
        apply_isomorphic_prune(resnet20, Strategy(multipliers={"stage9": 1.2}), X32)
    with pytest.raises(NothingToPruneError, match="protect every prunable layer"):
        apply_isomorphic_prune(resnet20, Strategy(ignored=["layer*", "conv1"]), X32)
    with pytest.raises(StrategyError) as err:
        Strategy.from_dict({"importance": "l3", "pruning_ratio": 1.5, "colour": "red"})
    assert len(err.value.errors) == 3
    with pytest.raises(ToolkitError, match="Strategy"):
        apply_isomorphic_prune(resnet20, {"pruning_ratio": 0.3}, X32)
    with pytest.raises(ToolkitError, match="example_inputs"):
        apply_isomorphic_prune(resnet20, Strategy(), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="match no module"):
            apply_isomorphic_prune(resnet20, Strategy(ignored=["no_such_layer"]), X32)


def test_frozen_parameters_are_pruned_and_stay_frozen():
    """A frozen model (e.g. a backbone with requires_grad=False) is traced like any other."""
    model = create_model("cifar_resnet20")
    for p in model.parameters():
        p.requires_grad_(False)
    res = apply_isomorphic_prune(model, Strategy(pruning_ratio=0.4), torch.randn(1, 3, 32, 32))
    assert res.macs < res.base_macs
    assert not any(p.requires_grad for p in model.parameters())


def test_prune_result_surface(resnet20):
    import json

    r = apply_isomorphic_prune(resnet20, Strategy(pruning_ratio=0.3), X32)
    text = r.summary()
    assert isinstance(text, str) and str(r) == text
    assert text.startswith("cifar_resnet20:") and "magnitude_l2" in text and "MACs" in text
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["macs"] == r.macs and d["strategy"] == r.strategy.to_dict() and d["mac_ratio"] == r.mac_ratio
    frame = r.to_frame()
    assert list(frame.columns) == ["layer", "base_channels", "channels", "kept"]
    by_layer = frame.set_index("layer")
    assert by_layer.loc["conv1", "base_channels"] == 16 and by_layer.loc["linear", "kept"] == 1.0
    assert (frame["channels"] <= frame["base_channels"]).all() and (frame["kept"] < 1).any()
    assert r.plot().axes
