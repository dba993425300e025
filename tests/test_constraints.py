"""Budgets in parameters, alone or with MACs: the exact parameter model, the solver, the
``constraints=`` keyword and ``agentic-toolkit prune --constraint``."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

import agentic_toolkit as at
from agentic_toolkit.cli import main as cli_main
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.pruning.apply import prune_with_plan
from agentic_toolkit.pruning.budget import BudgetInfeasibleError
from agentic_toolkit.pruning.param_model import ParamModel, count_params
from agentic_toolkit.units import parse_params, parse_percent

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

pytestmark = pytest.mark.usefixtures("one_thread")


def _timm(name: str, side: int):
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10), torch.randn(1, 3, side, side)


@pytest.fixture(scope="module")
def r20(one_thread):
    model = at.create_model("cifar_resnet20", pretrained=True)
    return model, at.get_plan(model, X32)


def _fit(model, plan, **kw):
    return at.fit_to_budget(model, at.Strategy(), example_inputs=X32, plan=plan, **kw)


@pytest.mark.parametrize("name,side", [("cifar_resnet20", 32), ("resnet18", 64), ("vit_tiny_patch16_224", 224)])
def test_parameter_model_is_exact(name, side):
    if name.startswith("cifar"):
        model, x = at.create_model(name), X32
    else:
        model, x = _timm(name, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = at.get_plan(model, x)
    params = ParamModel(plan.source, plan.sizes, plan.prunable_keys)
    assert params.base == count_params(model) and not params.approximate
    strategies = [at.Strategy(), at.Strategy(round_to=8)]
    if "attn.heads" in plan.scope_names():
        strategies.append(at.Strategy(multipliers={"attn.heads": 1.0}))  # whole heads removed too
    for strategy in strategies:
        for ratio in (0.2, 0.5, 0.8):
            sel = plan.select(strategy, ratio)
            pruned = prune_with_plan(plan, strategy.replace(pruning_ratio=ratio), selection=sel).model
            assert params.predict(plan.widths(sel)) == count_params(pruned), (strategy, ratio)
    assert not params.inexact


def test_params_only_budget_lands_in_band(r20):
    model, plan = r20
    for spec in ("40%", "100K", 150_000):
        fit = _fit(model, plan, constraints={"params": spec})
        (c,) = fit.constraints
        assert fit.binding == "params" and c.binding and fit.within_tolerance
        assert c.band[0] <= fit.achieved["params"] <= c.band[1]
        assert fit.target_macs is None and fit.predicted_params == fit.achieved["params"]
        pruned = fit.prune()
        assert count_params(pruned.model) == fit.predicted_params
        assert pruned.macs == fit.predicted_macs  # MACs reported exactly too
    assert c.target == 150_000
    assert "params" in fit.summary() and "binding" in fit.summary()
    d = fit.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["target_macs"] is None and d["constraints"]["params"]["achieved"] == fit.predicted_params
    assert list(fit.to_frame().columns) == ["probe", "ratio", "predicted_params", "error_pct"]


def test_macs_and_params_where_params_binds(r20):
    model, plan = r20
    fit = _fit(model, plan, constraints={"macs": "50%", "params": "30%"})
    macs, params = fit.constraints
    assert fit.binding == "params" and params.binding and not macs.binding
    assert params.in_band and fit.within_tolerance
    assert macs.achieved <= macs.target  # the MAC budget is met with room to spare
    assert fit.target_macs == macs.target == round(0.5 * plan.base_macs)
    r = fit.prune()
    assert r.macs == macs.achieved and count_params(r.model) == params.achieved
    # in torch-pruning's MAC convention the pruned model is counted, also when params bind
    tp = _fit(model, plan, constraints={"macs": "50%", "params": "30%"}, counter="torch_pruning")
    assert tp.binding == "params" and tp.within_tolerance and len(tp.counts) == 1
    assert tp.achieved["macs"] == tp.counts[0][2] == tp.prune().macs <= tp.target_macs


def test_macs_and_params_where_macs_binds(r20):
    model, plan = r20
    fit = _fit(model, plan, constraints={"macs": "30%", "params": "80%"})
    assert fit.binding == "macs" and fit.within_tolerance
    assert fit.achieved["params"] <= 0.8 * count_params(model)
    # a plain positional target_macs with constraints= for the rest gives the same fit
    same = at.fit_to_budget(model, at.Strategy(), "30%", X32, plan=plan, constraints={"params": "80%"})
    assert same.ratio == fit.ratio and same.achieved == fit.achieved
    # and a MAC-only budget is solved exactly as before: target_macs, error_pct, trace columns
    plain = at.fit_to_budget(model, at.Strategy(), fit.target_macs, X32, plan=plan)
    assert plain.ratio == fit.ratio and plain.binding == "macs" and "macs" in plain.achieved
    assert list(plain.to_frame().columns) == ["probe", "ratio", "predicted_macs", "error_pct"]


def test_infeasible_combination_lists_every_range(r20):
    model, plan = r20
    narrow = at.Strategy(max_layer_ratio=0.2)
    with pytest.raises(BudgetInfeasibleError) as err:
        at.fit_to_budget(model, narrow, example_inputs=X32, plan=plan, constraints={"macs": "80%", "params": "10%"})
    msg = str(err.value)
    assert "macs target" in msg and "params target" in msg and msg.count("reachable") == 2
    assert "below the smallest model" in msg and "max_layer_ratio" in msg
    assert set(err.value.constraints) == {"macs", "params"}
    lo, hi = err.value.constraints["params"]["reachable"]
    assert hi == count_params(model) and err.value.reachable == (lo, hi)
    with pytest.raises(BudgetInfeasibleError, match="above the model's"):
        _fit(model, plan, constraints={"params": "10M"})


@pytest.mark.parametrize("constraints,match", [
    ({"latency": "12 parsecs"}, "cannot read '12 parsecs' as a latency"),
    ({"flops": "1G"}, "unknown constraint 'flops'"),
    ({"params": "lots"}, "cannot read 'lots' as a parameter count"),
    ({"params": "15M MACs"}, "parameter count"),
    ({"params": "0%"}, "percentage"),
    ({"params": "150%"}, "percentage"),
    ({"macs": "x%"}, "as a percentage"),
    ({"params": True}, "parameter count"),
    ({"params": math.nan}, "finite"),
    ({"macs": -3}, "must be > 0"),
    ({}, "needs a budget"),
    ("params=15M", "must be a dict"),
])
def test_bad_constraints_are_clear(r20, constraints, match):
    model, plan = r20
    with pytest.raises(ToolkitError, match=match):
        _fit(model, plan, constraints=constraints)


def test_mac_budget_given_twice(r20):
    model, plan = r20
    with pytest.raises(ToolkitError, match="given twice"):
        at.fit_to_budget(model, at.Strategy(), "20M", X32, plan=plan, constraints={"macs": "20M"})
    with pytest.raises(ToolkitError, match="example_inputs"):
        at.fit_to_budget(model, at.Strategy(), "20M")


def test_units():
    assert parse_params("15M") == 15_000_000 and parse_params("350K params") == 350_000
    assert parse_params(1.5e7) == 15_000_000 and parse_percent("60%") == pytest.approx(0.6)
    assert parse_percent("15M") is None


def test_cli_constraints(capsys):
    rc = cli_main(["prune", "cifar_resnet20", "--target-macs", "20M", "--constraint", "params=30%", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["binding"] == "params" and report["within_tolerance"]
    assert set(report["constraints"]) == {"macs", "params"}
    assert report["params"] == report["predicted_params"] == report["constraints"]["params"]["achieved"]
    assert report["achieved_macs"] <= report["target_macs"] == 20_000_000
    assert cli_main(["prune", "cifar_resnet20", "--constraint", "params=100K"]) == 0
    out = capsys.readouterr().out
    assert "params binding" in out and "params: " in out
    for args, match in ((["--constraint", "params"], "must look like params=15M"),
                        (["--constraint", "latency=-2ms"], "latency must be > 0"),
                        (["--constraint", "params=1M", "--constraint", "params=2M"], "given twice"),
                        ([], "give a budget")):
        assert cli_main(["prune", "cifar_resnet20", *args]) == 2
        assert match in capsys.readouterr().err
