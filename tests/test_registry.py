"""Registered importance criteria and strategy presets, used by name on a real CIFAR ResNet-20."""

from __future__ import annotations

import pytest
import torch

import agentic_toolkit as at
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.pruning import criteria
from agentic_toolkit.pruning import strategy as strategy_module
from agentic_toolkit.pruning.strategy import StrategyError

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
REQUIRED_PRESETS = ("uniform_l1", "global_magnitude", "isomorphic_magnitude", "isomorphic_taylor")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def clean_registries(monkeypatch):
    """What a test registers is gone afterwards."""
    monkeypatch.setattr(criteria, "_REGISTRY", dict(criteria._REGISTRY))
    monkeypatch.setattr(strategy_module, "_PRESETS", dict(strategy_module._PRESETS))


@pytest.fixture(scope="module")
def resnet20():
    return at.create_model("cifar_resnet20", pretrained=True)


@pytest.fixture(scope="module")
def calibration():
    return at.calibration_batches("cifar10", n_batches=2, batch_size=32)


@pytest.fixture(scope="module")
def plan(resnet20, calibration):
    return at.get_plan(resnet20, X32, calibration)


def bn_scale(group) -> torch.Tensor:
    """|gamma| of the BatchNorm layers of each channel (network slimming, Liu et al. 2017)."""
    scores = torch.zeros(len(group[0].idxs), dtype=torch.float64)
    for item in group:
        m = item.dep.target.module
        if isinstance(m, torch.nn.BatchNorm2d):
            scores[list(item.root_idxs)] += m.weight.detach().abs()[list(item.idxs)].double()
    return scores


def test_custom_importance_prunes_to_the_budget(resnet20):
    calls = []

    def scorer(group):
        calls.append(group)
        return bn_scale(group)

    at.register_importance("bn_scale", scorer, description="BN gammas")
    assert "bn_scale" in at.list_importances()
    target = int(0.5 * at.profile_macs(resnet20, X32).total_macs)
    fit = at.fit_to_budget(resnet20, at.Strategy(importance="bn_scale"), target, X32)
    assert fit.within_tolerance and calls
    res = fit.prune()
    assert res.macs == fit.predicted_macs and abs(res.macs - target) / target < 0.05
    assert res.strategy.importance == "bn_scale" and res.model(X32).shape == (1, 10)
    # the plan ranks by exactly these scores (normalised by the group mean)
    scores, _ = fit.plan.importance("bn_scale")
    g = next(g for g in fit.plan.groups if g.prunable and g.root_name == "layer1.0.conv1")
    gamma = resnet20.layer1[0].bn1.weight.detach().abs().double()
    assert torch.allclose(scores[g.index][0], gamma / gamma.mean())
    # ... and the pruned layer kept the channels with the largest gammas
    kept = res.model.layer1[0].bn1.weight.shape[0]
    assert set(res.model.layer1[0].bn1.weight.detach().abs().tolist()) == set(gamma.sort().values[-kept:].float().tolist())


def test_registering_again_replaces_the_criterion_in_a_plan(resnet20):
    at.register_importance("same", lambda group: torch.ones(len(group[0].idxs)))
    strategy = at.Strategy(importance="same", pruning_ratio=0.3)
    plan = at.get_plan(resnet20, X32)
    first = plan.root_indices(plan.select(strategy), strategy)
    at.register_importance("same", bn_scale)  # a new criterion under the same name
    second = plan.root_indices(plan.select(strategy), strategy)
    assert second != first
    fresh = at.get_plan(resnet20, X32)
    assert second == fresh.root_indices(fresh.select(strategy), strategy)


def test_a_criterion_can_ask_for_gradients(resnet20, calibration):
    seen = []

    def grad_norm(group):
        w = group[0].dep.target.module.weight
        seen.append(w.grad is not None)
        return (w * w.grad).abs().flatten(1).sum(1)

    at.register_importance("grad_norm", grad_norm, needs_gradients=True)
    model = at.create_model("cifar_resnet20", pretrained=True)
    res = at.apply_isomorphic_prune(model, at.Strategy(importance="grad_norm", pruning_ratio=0.3), X32, calibration)
    assert seen and all(seen) and res.macs == res.predicted_macs < res.base_macs
    assert all(p.grad is None for p in model.parameters())  # gradients were restored
    with pytest.warns(UserWarning, match="grad_norm importance without calibration data"):
        at.apply_isomorphic_prune(model, at.Strategy(importance="grad_norm", pruning_ratio=0.3), X32)


def test_all_zero_scores_fall_back_to_magnitude(resnet20):
    at.register_importance("zeros", lambda group: torch.zeros(len(group[0].idxs)))
    plan = at.get_plan(resnet20, X32)
    with pytest.warns(UserWarning, match="zeros importance is zero or NaN"):
        sel = plan.select(at.Strategy(importance="zeros", pruning_ratio=0.3))
    assert sel.removed_units == plan.select(at.Strategy(importance="magnitude_l2", pruning_ratio=0.3)).removed_units


def test_unknown_importance_lists_the_registered_names():
    at.register_importance("mine", bn_scale)
    with pytest.raises(StrategyError) as err:
        at.Strategy(importance="nope")
    message = str(err.value)
    assert "'nope'" in message and "register_importance" in message
    for name in ("taylor", "magnitude_l1", "magnitude_l2", "lamp", "random", "mine"):
        assert name in message
    with pytest.raises(ToolkitError, match="registered: taylor"):
        criteria.get_importance("nope")
    assert "mine" in at.Strategy.json_schema()["properties"]["importance"]["enum"]


def test_bad_registrations(resnet20):
    with pytest.raises(ToolkitError, match="callable"):
        at.register_importance("x", 3)
    with pytest.raises(ToolkitError, match="normalizer"):
        at.register_importance("x", bn_scale, normalizer="max")
    with pytest.raises(ToolkitError, match="built-in"):
        at.register_importance("taylor", bn_scale)
    with pytest.raises(ToolkitError, match="name"):
        at.register_importance(" spaced ", bn_scale)
    at.register_importance("short", lambda group: torch.ones(3))
    with pytest.raises(ToolkitError, match="one score per root channel"):
        at.apply_isomorphic_prune(resnet20, at.Strategy(importance="short"), X32)


def test_required_presets_are_registered():
    names = at.list_strategies()
    assert set(REQUIRED_PRESETS) <= set(names)
    table = at.describe_strategies()
    assert list(table["name"]) == names and table["description"].str.len().min() > 10
    assert at.strategy_preset("isomorphic_magnitude") == at.Strategy()  # the default
    taylor = at.strategy_preset("isomorphic_taylor")
    assert taylor.importance == "taylor" and taylor.isomorphic and taylor.global_pruning
    uniform = at.strategy_preset("uniform_l1")
    assert uniform.importance == "magnitude_l1" and not uniform.isomorphic and not uniform.global_pruning
    glob = at.strategy_preset("global_magnitude")
    assert glob.global_pruning and not glob.isomorphic


@pytest.mark.parametrize("name", REQUIRED_PRESETS + ("uniform_magnitude",))
def test_each_preset_prunes_a_real_model_to_the_budget(resnet20, plan, calibration, name):
    strategy = at.strategy_preset(name)
    target = int(0.5 * plan.base_macs)
    fit = at.fit_to_budget(resnet20, strategy, target, X32, calibration=calibration, plan=plan)
    assert fit.within_tolerance
    res = fit.prune()
    assert res.macs == fit.predicted_macs < res.base_macs
    assert res.model(X32).shape == (1, 10)


def test_uniform_l1_keeps_the_same_fraction_of_every_layer(resnet20, plan):
    ratio = 0.3
    res = at.apply_isomorphic_prune(resnet20, at.strategy_preset("uniform_l1", pruning_ratio=ratio), X32, plan=plan)
    frame = res.to_frame().set_index("layer").drop(index=plan.classifier)
    assert len(frame) > 15
    # every prunable layer: kept fraction 1 - ratio, up to rounding to whole channels
    assert ((frame["kept"] - (1 - ratio)).abs() <= 1.0 / frame["base_channels"] + 1e-9).all()
    # the isomorphic default at the same ratio does not keep uniform widths
    iso = at.apply_isomorphic_prune(resnet20, at.Strategy(pruning_ratio=ratio), X32, plan=plan)
    spread = iso.to_frame().set_index("layer").drop(index=plan.classifier)["kept"]
    assert spread.max() - spread.min() > 0.1


def test_preset_overrides_and_user_presets():
    s = at.strategy_preset("isomorphic_taylor", pruning_ratio=0.4, multipliers={"stage1": 0.5})
    assert s.pruning_ratio == 0.4 and s.importance == "taylor" and s.multipliers == {"stage1": 0.5}
    assert at.Strategy.preset("isomorphic_taylor", pruning_ratio=0.4) == s.replace(multipliers={})
    s.multipliers["stage1"] = 2.0  # a returned preset is a copy
    assert at.strategy_preset("isomorphic_taylor").multipliers == {}
    with pytest.raises(StrategyError, match="unknown strategy preset 'nope'.*uniform_l1"):
        at.strategy_preset("nope")
    with pytest.raises(StrategyError, match="unknown field 'colour'"):
        at.strategy_preset("uniform_l1", colour="red")
    at.register_importance("bn_scale", bn_scale)
    at.register_strategy("slimming", at.Strategy(importance="bn_scale", max_layer_ratio=0.7), "BN gammas")
    assert "slimming" in at.list_strategies()
    assert at.strategy_preset("slimming").max_layer_ratio == 0.7
    assert at.describe_strategies().set_index("name").loc["slimming", "description"] == "BN gammas"
    with pytest.raises(ToolkitError, match="built-in"):
        at.register_strategy("uniform_l1", at.Strategy())
    with pytest.raises(ToolkitError, match="Strategy"):
        at.register_strategy("dict", {"importance": "taylor"})
