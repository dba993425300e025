"""``counter="torch_pruning"``: budgets met in ``torch_pruning.utils.count_ops_and_params``'s count.

The paper's tables use ``count_ops_and_params`` (0.8% above our default count on ResNet-50),
so a +1% band met in our count can be missed in the paper's. These tests check the band as
``count_ops_and_params`` itself measures the pruned model.
"""

from __future__ import annotations

import json

import pytest
import timm  # noqa: F401  (before torch_pruning: count_ops_and_params counts timm attention only then)
import torch
import torch_pruning as tp

from agentic_toolkit import (
    AgenticSearch,
    SearchBudget,
    SearchLogging,
    Strategy,
    create_model,
    fit_to_budget,
)
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.profiling.profile import profile_macs
from agentic_toolkit.pruning.apply import apply_isomorphic_prune, get_plan
from agentic_toolkit.pruning.budget import recount

X224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
X64 = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def count_ops(model, x) -> int:
    with torch.no_grad():
        ops, _ = tp.utils.count_ops_and_params(model.eval(), x)
    return int(ops)


def in_band(macs: int, target: int, up: float = 1.0, down: float = 5.0) -> bool:
    return target * (1 - down / 100) <= macs <= target * (1 + up / 100)


@pytest.mark.parametrize("name,x,strategy", [
    ("cifar_resnet20", X32, Strategy(pruning_ratio=0.4)),
    ("efficientnet_b0", X64, Strategy(pruning_ratio=0.3)),
    ("deit_tiny_patch16_224", X224, Strategy(pruning_ratio=0.3, multipliers={"attn.heads": 0.5})),
])
def test_analytic_prediction_equals_count_ops_and_params(name, x, strategy):
    """Biases, norms, activations, pooling and timm attention's own formula (with heads
    pruned) are predicted from the widths exactly."""
    torch.manual_seed(0)
    model = create_model(name)
    plan = get_plan(model, x)
    tp_model = plan.mac_model_for("torch_pruning")
    assert not tp_model.approximate
    assert plan.base_count("torch_pruning") == count_ops(model, x)
    r = recount(apply_isomorphic_prune(model, strategy, x, plan=plan), plan, "torch_pruning")
    assert r.macs == r.predicted_macs == count_ops(r.model, x)
    assert r.base_macs == plan.base_count("torch_pruning") and "torch_pruning" in r.notes[-1]


@pytest.mark.slow
def test_paper_targets_in_band_by_count_ops_and_params():
    """The acceptance: each paper target in the +1/-5% band as count_ops_and_params counts it."""
    cases = {"resnet50": "1.77G", "resnet101": "4.22G", "convnext_small": "8.17G", "deit_base_patch16_224": "4.16G"}
    for name, target in cases.items():
        torch.manual_seed(0)  # random init: magnitude scores, hence the fit, depend on the weights
        fit = fit_to_budget(create_model(name), Strategy(), target, X224, counter="torch_pruning")
        assert fit.counter == "torch_pruning" and fit.verified and fit.within_tolerance
        r = fit.prune()
        ops = count_ops(r.model, X224)
        assert ops == r.macs == fit.predicted_macs, name
        assert in_band(ops, fit.target_macs), (name, ops)
        assert abs(fit.error_pct) <= 0.5, (name, fit.error_pct)
        with torch.no_grad():
            assert r.model(X224).shape == (1, 1000)


def test_default_counter_misses_the_paper_band_that_torch_pruning_meets():
    """ResNet-50: a fit in band in our count (at +0.9%) is out of the +1% band in
    count_ops_and_params' count (0.8% higher); the torch_pruning counter lands in it."""
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = create_model("resnet50")
    plan = get_plan(model, x)
    target = int(0.43 * plan.base_macs)
    fit = fit_to_budget(model, Strategy(), target * 1.009, x, plan=plan, tolerance=(0.01, 0.01))
    assert fit.counter == "macs" and not fit.counts and in_band(fit.prune().macs, target)
    assert not in_band(count_ops(fit.prune().model, x), target)
    fit = fit_to_budget(model, Strategy(), target, x, plan=plan, counter="torch_pruning")
    assert in_band(count_ops(fit.prune().model, x), target)
    assert "(torch_pruning counter): counted" in fit.summary()


def test_verification_corrects_a_wrong_analytic_prediction():
    """Where the analytic model misses (here made 3% high on purpose), the counted model
    still lands in the band: the ratio is solved again for the shifted target."""
    model = create_model("cifar_resnet56")
    plan = get_plan(model, X32)
    tp_model = plan.mac_model_for("torch_pruning")
    tp_model.constant += int(0.03 * tp_model.base)
    target = int(plan.base_count("torch_pruning") * 0.5)
    fit = fit_to_budget(model, Strategy(), target, X32, plan=plan, counter="torch_pruning")
    assert len(fit.counts) >= 2 and fit.counts[0][1] != fit.counts[0][2]
    assert fit.within_tolerance and abs(fit.error_pct) <= 0.5
    assert "ratio corrected" in fit.summary()
    r = fit.prune()
    assert r.macs == fit.predicted_macs == count_ops(r.model, X32)
    again = fit.prune()  # the counted model was handed over once; this is a fresh copy
    assert again.model is not r.model and again.macs == r.macs
    d = fit.to_dict()
    assert json.loads(json.dumps(d)) == d and d["counter"] == "torch_pruning" and len(d["counts"]) >= 2


def test_bad_counter_is_refused_before_any_work():
    model = create_model("cifar_resnet20")
    with pytest.raises(ToolkitError, match="counter"):
        fit_to_budget(model, Strategy(), "20M", X32, counter="fvcore")
    with pytest.raises(ToolkitError, match="counter"):
        SearchBudget(counter="flops")


@pytest.mark.parametrize("solve_budget", [True, False])
def test_search_meets_the_band_in_the_chosen_counter(tmp_path, solve_budget):
    model = create_model("cifar_resnet20")
    target = int(profile_macs(model, example_inputs=X32, convention="torch_pruning").total_macs * 0.5)
    log = tmp_path / "run.jsonl"
    search = AgenticSearch(model, target, X32, max_revisions=3, patience=1,
                           budget=SearchBudget(counter="torch_pruning", solve_budget=solve_budget),
                           logging=SearchLogging(log_path=log, progress=False))
    result = search.run()
    header = json.loads(log.read_text().splitlines()[0])
    assert header["counter"] == "torch_pruning" and header["base_macs"] == count_ops(model, X32)
    assert result.counter == "torch_pruning" and result.to_dict()["counter"] == "torch_pruning"
    for rec in result.records:
        if rec.get("achieved_macs") is not None:  # every record's MACs are count_ops_and_params'
            pruned = apply_isomorphic_prune(model, Strategy.from_dict(rec["strategy"]), X32, plan=search.plan)
            assert rec["achieved_macs"] == count_ops(pruned.model, X32)
    if solve_budget:
        assert result.converged and in_band(count_ops(result.model, X32), target)
