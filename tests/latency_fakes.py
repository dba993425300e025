"""Deterministic latency tables for tests: a layer's "time" is its MACs (x ``slow`` for layers
with ``slow_out`` output channels), the whole network's its MACs plus a constant, so a loaded
machine cannot make a test flaky."""

from __future__ import annotations

import pytest
import torch

import agentic_toolkit as at
from agentic_toolkit.benchmarking import latency_table as lt


def layer_macs_ms(fn, slow_out: int | None = None, slow: float = 1.0) -> float:
    """The MACs / 1e6 of the layer a ``latency_table`` timing lambda calls (the layer is in
    the lambda's defaults or closure, as ``measure_grid`` builds them)."""
    cells = list(fn.__defaults__ or ()) + [c.cell_contents for c in (fn.__closure__ or ())]
    layer = next(c for c in cells if isinstance(c, torch.nn.Module))
    out = fn()
    factor = slow if slow_out is not None and getattr(layer, "out_channels", None) == slow_out else 1.0
    return factor * out.numel() * layer.weight[0].numel() / 1e6


def fake_whole(plan, dev, warmup, repeats, channels_last=False):
    from agentic_toolkit.pruning.latency_model import CALIBRATION_RATIO

    half = at.Strategy(isomorphic=False, global_pruning=False, pruning_ratio=CALIBRATION_RATIO)
    sel = plan.select(half)
    widths = {f"{k[0]}|{int(k[1])}": int(v) for k, v in plan.widths(sel).items()}
    return {"base_ms": plan.base_macs / 1e6 + 0.5, "half_ms": plan.predict_macs(sel) / 1e6 + 0.3,
            "half_widths": widths}


def fake_latency_model(plan, slow_out: int | None = None, slow: float = 1.0, **kw):
    """``build_latency_model(plan, "cpu", 1, **kw)`` measured with the deterministic clock
    (cached under the test's cache directory; ``cache=False`` for a table that must not be
    shared with another clock)."""
    from agentic_toolkit.pruning import latency_model as lm

    mp = pytest.MonkeyPatch()
    mp.setattr(lt, "median_ms", lambda fn, timer, warmup, repeats: layer_macs_ms(fn, slow_out, slow))
    mp.setattr(lm, "_measure_whole", fake_whole)
    try:
        return lm.build_latency_model(plan, "cpu", 1, warmup=1, repeats=2, progress=False, **kw)
    finally:
        mp.undo()


def model_ms(model, x, odd_step: int | None = None, odd_cost: float = 0.2) -> float:
    """The clock's latency of a whole model on ``x[:1]``: its convolution and linear MACs / 1e6
    + 0.5, plus ``odd_cost`` per layer (the last, the classifier, excepted) whose output width is
    not a multiple of ``odd_step`` (the steps a table of layers timed alone may miss)."""
    macs, odd = [], []

    def hook(mod, inputs, out):
        macs.append(out.numel() * mod.weight[0].numel())
        odd.append(bool(odd_step) and out.shape[1] % odd_step != 0)

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return sum(macs) / 1e6 + 0.5 + odd_cost * sum(odd[:-1])
