"""The measured latency model (per-layer tables, disk cache, analytic prediction), latency
budgets in ``fit_to_budget`` and ``Strategy(round_to="auto")``. No timing assertions, and no
logic that depends on timings: the tables of the module's fixture are "measured" with a
deterministic clock (a layer's time = its MACs, the whole network's = its MACs + a constant),
so a loaded machine cannot make a test flaky; ``test_measuring_leaves_the_model_alone`` and
the refine test still time real layers and models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from latency_fakes import fake_latency_model, fake_whole, layer_macs_ms, model_ms

import agentic_toolkit as at
from agentic_toolkit.benchmarking import latency_table as lt
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.paths import CACHE_ENV
from agentic_toolkit.pruning.budget import BudgetInfeasibleError
from agentic_toolkit.pruning.constraints import check_constraints
from agentic_toolkit.pruning.latency_model import AUTO_MULTIPLES, build_latency_model, envelope
from agentic_toolkit.pruning.strategy import StrategyError

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
FEW = {"warmup": 1, "repeats": 2, "progress": False}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, one_thread):
    """A private cache directory for this module's tables."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("latency_cache")
    mp.setenv(CACHE_ENV, str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def r20(cache):
    torch.manual_seed(0)
    model = at.create_model("cifar_resnet20")
    plan = at.get_plan(model, X32)
    return model, plan, fake_latency_model(plan, auto_round=True)  # cached privately


def _fit(model, plan, lat, strategy=None, **kw):
    return at.fit_to_budget(model, strategy or at.Strategy(), example_inputs=X32, plan=plan, latency_model=lat,
                            threads=1, **kw)


def test_table_is_cached_and_reread(r20, cache, monkeypatch):
    model, plan, lat = r20
    assert lat.measurements > 0 and lat.path.startswith(str(cache)) and lat.key["threads"] == 1
    calls = []
    real = lt.measure_grid
    monkeypatch.setattr(lt, "measure_grid", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = build_latency_model(plan, "cpu", 1, auto_round=True, **FEW)
    assert calls == [] and again.measurements == 0
    assert again.predict({}) == pytest.approx(lat.predict({})) == pytest.approx(lat.measured_ms)
    other = build_latency_model(plan, "cpu", 1, cache=False, **FEW)  # cache=False measures anew
    assert len(calls) > 0 and other.measurements > 0


def test_predictions_are_monotone_in_width(r20):
    _, plan, lat = r20
    for layer in lat.layers:
        assert np.all(np.diff(layer.ms, axis=0) >= 0) and np.all(np.diff(layer.ms, axis=1) >= 0)
    preds = [lat.predict(plan.widths(plan.select(at.Strategy(), r))) for r in np.linspace(0, 0.9, 19)]
    assert all(b <= a + 1e-12 for a, b in zip(preds, preds[1:], strict=False))
    assert preds[-1] < preds[0]
    bumpy = np.array([[1.0, 3.0, 2.0], [0.5, 2.5, 4.0]])
    assert envelope(bumpy).tolist() == [[0.5, 2.0, 2.0], [0.5, 2.5, 4.0]]  # slow outliers drop


@pytest.mark.parametrize("spec", ["60%", "80%", "ABS"])
def test_latency_budget_lands_in_band(r20, spec):
    model, plan, lat = r20
    target_ms = 0.7 * lat.base_ms
    spec = f"{target_ms:.4f}ms" if spec == "ABS" else spec
    fit = _fit(model, plan, lat, constraints={"latency": spec})
    c = fit.constraints[0]
    assert fit.binding == "latency" and fit.within_tolerance and c.in_band
    assert c.band[0] <= 1000 * fit.predicted_latency_ms <= c.band[1]
    assert "latency" in fit.summary() and " ms" in fit.summary()
    assert fit.to_dict()["constraints"]["latency"]["unit"] == "us"
    pruned = fit.prune()
    assert pruned.macs == fit.predicted_macs


def test_combined_macs_and_latency_meet_both(r20):
    model, plan, lat = r20
    for cons in ({"macs": "45%", "latency": "90%"}, {"macs": "90%", "latency": "55%"}):
        fit = _fit(model, plan, lat, constraints=cons)
        assert fit.within_tolerance and {c.kind for c in fit.constraints} == {"macs", "latency"}
        for c in fit.constraints:
            assert c.met and (c.in_band or not c.binding)
        assert fit.binding == ("macs" if cons["macs"] == "45%" else "latency")


def test_infeasible_latency_lists_ranges(r20):
    model, plan, lat = r20
    with pytest.raises(BudgetInfeasibleError) as err:
        _fit(model, plan, lat, constraints={"latency": "1%", "macs": "50%"})
    msg = str(err.value)
    assert "latency target" in msg and "macs target" in msg and msg.count("reachable") == 2 and " ms" in msg
    assert set(err.value.constraints) == {"latency", "macs"}
    lo, hi = err.value.constraints["latency"]["reachable"]
    assert 0 < lo < hi == lat.predict_us({})


def test_round_to_auto_multiples_and_mac_band(r20):
    model, plan, lat = r20
    fit = _fit(model, plan, lat, strategy=at.Strategy(round_to="auto"), target_macs="50%")
    multiples = plan.auto_round_to
    assert multiples and set(multiples.values()) <= set(AUTO_MULTIPLES)
    assert fit.within_tolerance and fit.strategy.round_to == "auto"
    for i, m in multiples.items():
        g = plan.groups[i]
        kept = g.units - fit.selection.removed_units.get(i, 0)
        assert m <= max(1, g.units // 4) and (kept % m == 0 or kept == g.units or g.units < m)
    assert at.Strategy.from_json(fit.strategy.to_json()).round_to == "auto"


def test_auto_rounding_reads_consumer_curves_too(r20):
    from agentic_toolkit.pruning.latency_model import LatencyModel

    _, plan, lat = r20
    consumers = [layer.spec for layer in lat.layers if layer.spec.in_key]
    assert consumers and all(s.signature in lat.steps_in for s in consumers)
    curve = lat.steps_in[consumers[0].signature]
    assert curve["out"][-1] == consumers[0].in_ch and len(curve["out"]) == len(curve["ms"]) > 2
    # consumers whose latency steps every 8 input channels make a group round to 8, where its
    # flat producers alone would allow the largest multiple (16 for 64 channels)
    steppy = {sig: {"out": c["out"], "ms": [float((w + 7) // 8) * 100 for w in c["out"]]}
              for sig, c in lat.steps_in.items()}
    flat = {sig: {"out": c["out"], "ms": [0.0] * len(c["out"])} for sig, c in lat.steps.items()}
    coarse = LatencyModel(lat.layers, lat.rest, lat.key, lat.measured_ms, steps=flat, steps_in=steppy)
    fine = LatencyModel(lat.layers, lat.rest, lat.key, lat.measured_ms, steps=flat,
                        steps_in={k: {**v, "ms": [0.0] * len(v["ms"])} for k, v in steppy.items()})
    big = [g.index for g in plan.groups if g.prunable and g.units >= 64]
    assert big and all(coarse.round_multiples(plan)[i] == 8 for i in big)
    assert all(fine.round_multiples(plan)[i] == 16 for i in big)  # all flat: the largest allowed


def test_round_to_auto_needs_a_latency_model(cache):
    model = at.create_model("cifar_resnet20")
    with pytest.raises(ToolkitError, match="round_to=\"auto\" needs per-layer multiples"):
        at.apply_isomorphic_prune(model, at.Strategy(round_to="auto", pruning_ratio=0.3), X32)
    with pytest.raises(StrategyError, match="round_to must be null, an integer >= 1 or \"auto\""):
        at.Strategy(round_to="fast")


@pytest.mark.parametrize("value,match", [
    ("12 parsecs", "cannot read '12 parsecs' as a latency"),
    (-3, "latency must be > 0"),
    ("-5ms", "latency must be > 0"),
    ("0ms", "latency must be > 0"),
    (float("nan"), "finite"),
    ("0%", "percentage"),
    (True, "as a latency"),
])
def test_bad_latency_values(value, match):
    with pytest.raises(ToolkitError, match=match):
        check_constraints(None, {"latency": value})


def test_bad_device_and_threads(r20):
    model, plan, _ = r20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ToolkitError, match="threads must be an integer >= 1"):
            at.fit_to_budget(model, at.Strategy(), example_inputs=X32, plan=plan, constraints={"latency": "60%"},
                             threads=0)
        with pytest.raises(ToolkitError, match="'cpu' or 'cuda'"):
            at.fit_to_budget(model, at.Strategy(), example_inputs=X32, plan=plan, constraints={"latency": "60%"},
                             device="meta")
        with pytest.raises(ToolkitError, match="need grid_steps >= 2"):
            build_latency_model(plan, "cpu", 1, repeats=0)
        with pytest.raises(ToolkitError, match="latency_model must be a LatencyModel"):
            at.fit_to_budget(model, at.Strategy(), example_inputs=X32, plan=plan, constraints={"latency": "60%"},
                             latency_model="fast")


def test_grid_and_grouped_layers():
    assert lt.width_grid(64, 8) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert lt.width_grid(3, 8) == [1, 2, 3]
    assert all(w % 4 == 0 for w in lt.width_grid(96, 8, 4))
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, groups=4, padding=1), torch.nn.Conv2d(16, 16, 3, groups=16))
    keys = {("0", True), ("0", False), ("1", True)}
    specs = lt.layer_specs(model, ["0", "1"], torch.randn(2, 8, 10, 10), keys)
    grouped, depthwise = specs
    assert not grouped.depthwise and depthwise.depthwise and depthwise.in_key is None
    assert grouped.in_shape == (2, 8, 10, 10) and grouped.calls == 1
    for cin in grouped.grid(4)[0]:
        for cout in grouped.grid(4)[1]:
            layer, x = lt.build_layer(grouped, cin, cout, torch.device("cpu"))
            assert layer(x).shape[1] == cout and layer.groups == 4
    layer, x = lt.build_layer(depthwise, 16, 8, torch.device("cpu"))
    assert layer.groups == layer.in_channels == layer.out_channels == 8 and layer(x).shape[1] == 8
    layer, x = lt.build_layer(grouped, 8, 16, torch.device("cpu"), channels_last=True)  # NHWC tables
    assert x.is_contiguous(memory_format=torch.channels_last) and layer(x).shape == (2, 16, 10, 10)
    assert layer.weight.is_contiguous(memory_format=torch.channels_last)
    key = lt.table_key(model, (2, 8, 10, 10), torch.device("cpu"), 1)
    nhwc = lt.table_key(model, (2, 8, 10, 10), torch.device("cpu"), 1, channels_last=True)
    assert "memory_format" not in key and nhwc["memory_format"] == "channels_last"
    assert lt.cache_path(key) != lt.cache_path(nhwc)  # a table per layout


def test_flat_multiple_picks_the_step():
    widths = list(range(33, 65))
    steps = [float((w + 7) // 8) for w in widths]  # latency steps every 8 channels
    assert lt.flat_multiple(widths, steps, AUTO_MULTIPLES, 0.02) == 8
    linear = [float(w) for w in widths]
    assert lt.flat_multiple(widths, linear, AUTO_MULTIPLES, 0.001) == 1


def test_prune_cli_latency_budget(cache, capsys, monkeypatch):
    import json

    from agentic_toolkit.cli import main as cli_main
    from agentic_toolkit.pruning import latency_model as lm

    monkeypatch.setattr(lt, "median_ms", lambda fn, timer, warmup, repeats: layer_macs_ms(fn))
    monkeypatch.setattr(lm, "_measure_whole", fake_whole)  # the deterministic clock (module docstring)

    args = ["prune", "cifar_resnet20", "--constraint", "latency=70%", "--constraint", "macs=80%", "--threads", "1",
            "--round-to", "auto", "--json"]
    assert cli_main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["constraints"]) == {"latency", "macs"} and report["within_tolerance"]
    assert report["strategy"]["round_to"] == "auto" and report["predicted_latency_ms"] > 0
    assert cli_main(["prune", "cifar_resnet20", "--constraint", "latency=1ms", "--round-to", "big"]) == 2
    assert "--round-to must be an integer or auto" in capsys.readouterr().err


def test_measuring_leaves_the_model_alone(cache):
    model = at.create_model("cifar_resnet20").train()
    bn = model.bn1 if hasattr(model, "bn1") else next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    plan = at.get_plan(model, X32)
    lat = at.build_latency_model(plan, "cpu", 1, **FEW)
    assert torch.equal(bn.running_mean, before) and model.training and isinstance(lat, at.LatencyModel)


def test_refine_latency_fit_measures_and_corrects(r20):
    from agentic_toolkit.pruning.latency_fit import refine_latency_fit

    model, plan, lat = r20
    fit = _fit(model, plan, lat, constraints={"latency": "60%"})
    ref = refine_latency_fit(model, fit, rounds=1, accept=0.0, warmup=0, repeats=2, threads=1)
    assert ref.target_fraction == pytest.approx(fit.constraints[0].target / fit.constraints[0].base)
    assert len(ref.checks) == 2 and ref.best in ref.checks and ref.speedup == ref.best.speedup > 0
    assert ref.checks[0].solved_fraction == ref.target_fraction and ref.fit.latency_model is lat
    # measured fractions are real timings (anything on a loaded machine); a correction may ask for up to 100%
    assert all(c.measured_fraction > 0 and 0 < c.predicted_fraction <= 1 for c in ref.checks)
    with pytest.raises(ToolkitError, match="needs a fit with a latency constraint"):
        refine_latency_fit(model, _fit(model, plan, None, target_macs="50%"))


def test_refine_times_in_the_layout_the_table_was_measured_in(r20, monkeypatch):
    import dataclasses

    from agentic_toolkit import benchmarking
    from agentic_toolkit.pruning.latency_fit import refine_latency_fit

    model, plan, lat = r20
    seen = []
    real = benchmarking.benchmark
    monkeypatch.setattr(benchmarking, "benchmark", lambda *a, **k: seen.append(k["channels_last"]) or real(*a, **k))
    for key, nhwc in ((lat.key, False), ({**lat.key, "memory_format": "channels_last"}, True)):
        table = dataclasses.replace(lat, key=key)
        fit = _fit(model, plan, table, constraints={"latency": "60%"})
        refine_latency_fit(model, fit, rounds=0, warmup=0, repeats=2, threads=1)
        assert seen[-1] is nhwc


def _steppy_round_robin(timer, models, x, repeats):
    """A clock where a layer whose output width is not a multiple of 8 costs 0.2 ms more."""
    return [[model_ms(m, x, odd_step=8)] * repeats for m in models]


def test_pick_rounding_keeps_the_most_efficient(r20, monkeypatch):
    from agentic_toolkit.benchmarking import runner
    from agentic_toolkit.pruning import layer_widths
    from agentic_toolkit.pruning.latency_fit import pick_rounding

    model, plan, lat = r20
    monkeypatch.setattr(runner, "time_round_robin", _steppy_round_robin)
    fit = _fit(model, plan, lat, strategy=at.Strategy(round_to="auto"), target_macs="50%")
    auto_widths = [w for k, w in layer_widths(fit.prune().model).items() if k != "fc"]
    assert any(w % 8 for w in auto_widths)  # the flat fake curves let auto round 16-channel groups to 4
    choice = pick_rounding(model, fit, multiples=(4, 8), warmup=0, repeats=2, threads=1)
    f = choice.frame
    assert list(f["round_to"]) == ["auto", "4", "8"] and f["chosen"].sum() == 1
    assert f["efficiency"].to_numpy() == pytest.approx((f["speedup"] * f["mac_fraction"]).to_numpy())
    assert f.loc[f["chosen"], "round_to"].item() == "8" == str(choice.round_to)  # every width a multiple of 8
    assert f["efficiency"].iloc[2] > f["efficiency"].iloc[:2].max()
    assert choice.fit.within_tolerance and choice.fit.strategy.round_to == 8 and "chose 8" in choice.summary()
    assert choice.to_dict()["round_to"] == 8 and len(choice.to_dict()["candidates"]) == 3
    with pytest.raises(ToolkitError, match="multiples must be integers >= 1"):
        pick_rounding(model, fit, multiples=(0,))


def test_prune_cli_pick_rounding(cache, capsys, monkeypatch):
    import json

    from agentic_toolkit.benchmarking import runner
    from agentic_toolkit.cli import main as cli_main
    from agentic_toolkit.pruning import latency_model as lm

    monkeypatch.setattr(lt, "median_ms", lambda fn, timer, warmup, repeats: layer_macs_ms(fn))
    monkeypatch.setattr(lm, "_measure_whole", fake_whole)
    monkeypatch.setattr(runner, "time_round_robin", _steppy_round_robin)
    args = ["prune", "cifar_resnet20", "--target-macs", "50%", "--round-to", "auto", "--pick-rounding",
            "--threads", "1", "--json"]
    assert cli_main(args) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rounding"]["candidates"]
    assert [r["round_to"] for r in rows][0] == "auto" and len(rows) >= 2 and report["within_tolerance"]
    best = max(rows, key=lambda r: r["efficiency"])
    assert str(report["rounding"]["round_to"]) == best["round_to"] == str(report["strategy"]["round_to"])
    assert cli_main(args[:-1]) == 0 and "round_to efficiency measured: auto" in capsys.readouterr().out
