"""fit_to_budget on ResNet-50 and CIFAR ResNets: lands on the target, prediction is exact."""

from __future__ import annotations

import pytest
import torch

from agentic_toolkit import Strategy, apply_isomorphic_prune, create_model, fit_to_budget
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.profiling.profile import profile_macs
from agentic_toolkit.pruning.budget import BudgetInfeasibleError

X224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def resnet50():
    return create_model("resnet50")


@pytest.fixture(scope="module")
def resnet50_plan(resnet50):
    return fit_to_budget(resnet50, Strategy(), "1.77G", X224).plan


def test_resnet50_paper_target(resnet50, resnet50_plan):
    fit = fit_to_budget(resnet50, Strategy(), "1.77G", X224, plan=resnet50_plan)
    assert fit.target_macs == 1_770_000_000
    assert abs(fit.error_pct) <= 0.5 and fit.within_tolerance
    assert fit.probes <= 64
    r = fit.prune()
    assert r.macs == fit.predicted_macs
    assert r.model(X224).shape == (1, 1000)


@pytest.mark.parametrize("fraction", [0.3, 0.55, 0.8])
def test_resnet50_targets_across_the_range(resnet50, resnet50_plan, fraction):
    target = int(resnet50_plan.base_macs * fraction)
    strategy = Strategy(multipliers={"stage4": 1.3, "bottleneck.inner": 0.8})
    fit = fit_to_budget(resnet50, strategy, target, X224, plan=resnet50_plan)
    assert abs(fit.error_pct) <= 0.5
    assert fit.strategy.multipliers == strategy.multipliers  # shape kept, only the ratio solved
    # the JSON strategy alone reproduces the prediction exactly (what the agent loop stores)
    again = Strategy.from_json(fit.strategy.to_json())
    r = apply_isomorphic_prune(resnet50, again, X224, plan=resnet50_plan)
    assert r.macs == fit.predicted_macs


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet56"])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_cifar_resnets_within_band(name, fraction):
    model = create_model(name)
    base = profile_macs(model, example_inputs=X32).total_macs
    fit = fit_to_budget(model, Strategy(), int(base * fraction), X32)
    assert fit.within_tolerance  # 16..64-channel layers: single channels are ~1% steps
    assert fit.prune().macs == fit.predicted_macs


def test_infeasible_and_bad_targets(resnet50, resnet50_plan):
    base = resnet50_plan.base_macs
    with pytest.raises(BudgetInfeasibleError, match="above the model") as err:
        fit_to_budget(resnet50, Strategy(), base * 1.1, X224, plan=resnet50_plan)
    lo, hi = err.value.reachable
    assert hi == base and 0 < lo < base
    with pytest.raises(BudgetInfeasibleError, match="below the smallest") as err:
        fit_to_budget(resnet50, Strategy(max_layer_ratio=0.2), base * 0.3, X224, plan=resnet50_plan)
    assert err.value.reachable[0] > base * 0.3
    for bad in (0, -5, "0G", "lots", float("nan")):
        with pytest.raises(ToolkitError):
            fit_to_budget(resnet50, Strategy(), bad, X224, plan=resnet50_plan)
    with pytest.raises(ToolkitError, match="tolerance"):
        fit_to_budget(resnet50, Strategy(), "2G", X224, tolerance=(1.0, -5.0), plan=resnet50_plan)
    with pytest.raises(ToolkitError, match="another model"):
        fit_to_budget(create_model("cifar_resnet20"), Strategy(), "1M", X32, plan=resnet50_plan)


def test_coarse_steps_report_outside_band():
    """round_to=16 on a 16/32/64-channel net jumps from 73% to 89% of the MACs: say so."""
    model = create_model("cifar_resnet20", pretrained=True)
    base = profile_macs(model, example_inputs=X32).total_macs
    with pytest.warns(UserWarning, match="outside the band"):
        fit = fit_to_budget(model, Strategy(round_to=16), int(0.81 * base), X32)
    assert not fit.within_tolerance
    assert fit.prune().macs == fit.predicted_macs


def test_budget_fit_surface():
    import json

    model = create_model("cifar_resnet20")
    fit = fit_to_budget(model, Strategy(), "20M", X32)
    text = fit.summary()
    assert isinstance(text, str) and str(fit) == text
    assert "target 20.00M MACs" in text or "target 20" in text
    assert f"{fit.ratio:.5f}" in text and "within" in text
    d = fit.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["predicted_macs"] == fit.predicted_macs and d["probes"] == fit.probes
    probes = fit.to_frame()
    assert list(probes.columns) == ["probe", "ratio", "predicted_macs", "error_pct"]
    assert len(probes) == fit.probes and fit.predicted_macs in set(probes["predicted_macs"])
