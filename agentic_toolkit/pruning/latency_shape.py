"""A MAC budget spent where the device is slow: per-group multipliers tilted by latency per MAC.

Two groups with the same MACs rarely cost the same time: on a CPU a 1x1 convolution over a
56x56 map with 64 channels is memory-bound, one over 7x7 with 2048 is compute-bound, so
removing a MAC saves more time in some groups than in others. :func:`group_slowness` reads
from a measured latency table (:mod:`.latency_model`) each prunable group's share of the
layers' latency over its share of their MACs; :func:`tilt_strategy` multiplies the group's
pruning ratio by ``slowness ** gamma`` (``group:<layer>`` scopes); :func:`latency_shaped_fit`
lands each ``gamma`` of a small grid on the same MAC budget and keeps the one whose
*predicted* latency is lowest (analytic: no model is timed). ``gamma = 0`` is the strategy as
given, so the result is never predicted slower than it. When the table's layers timed alone
add up to more than the whole model measured (an example in ``docs/pruning.md``), the
predicted gain is unreliable and a warning says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import ToolkitError
from .strategy import MULTIPLIER_RANGE, Strategy

GAMMAS = (0.0, 0.5, 1.0, 1.5, 2.0)
_BOUNDS = (0.05, MULTIPLIER_RANGE[1])


def group_slowness(plan, latency_model) -> dict[str, float]:
    """``{"group:<layer>": latency share / MAC share}`` of every prunable group whose layers the
    table times (1 = as slow per MAC as the model's layers on average)."""
    ms = latency_model.layer_ms()
    macs = {r.name: r.macs for r in plan.mac_model.rows if r.name in ms}
    total_ms, total_macs = sum(ms.values()), sum(macs.values())
    rows = plan.group_layers()
    out = {}
    for key, g in plan.group_scopes().items():
        names = [n for n in rows.get(g.index, ()) if n in macs]
        m, t = sum(macs[n] for n in names), sum(ms[n] for n in names)
        if m > 0 and t > 0 and total_ms > 0:
            out[key] = (t / total_ms) / (m / total_macs)
    return out


def tilt_strategy(strategy: Strategy, slowness: dict[str, float], gamma: float) -> Strategy:
    """``strategy`` with each group's multiplier times ``slowness ** gamma`` (two decimals,
    within the multiplier range); ``gamma = 0`` returns it unchanged."""
    if gamma == 0 or not slowness:
        return strategy
    mult = dict(strategy.multipliers)
    for key, s in slowness.items():
        mult[key] = round(min(_BOUNDS[1], max(_BOUNDS[0], mult.get(key, 1.0) * s ** gamma)), 2)
    return strategy.replace(multipliers=mult)


@dataclass
class ShapedFit:
    """The chosen fit, its ``gamma``, and every candidate (``frame``: gamma, macs, predicted_ms)."""

    fit: Any
    gamma: float
    frame: pd.DataFrame = field(repr=False)

    def summary(self) -> str:
        base = self.frame.loc[self.frame["gamma"] == 0, "predicted_ms"]
        gain = f", {base.iloc[0] / self.fit.predicted_latency_ms:.3f}x faster than gamma 0" if len(base) else ""
        return (f"latency-shaped fit: gamma {self.gamma:g}, predicted {self.fit.predicted_latency_ms:.2f} ms at "
                f"{self.fit.predicted_macs:,} MACs{gain}")

    def to_dict(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "fit": self.fit.to_dict(), "candidates": self.frame.to_dict("records")}

    def to_frame(self) -> pd.DataFrame:
        return self.frame


def latency_shaped_fit(model, strategy: Strategy, target_macs, example_inputs, latency_model, *,
                       gammas: tuple[float, ...] = GAMMAS, plan=None, **fit_kwargs) -> ShapedFit:
    """Land ``strategy`` tilted by each of ``gammas`` on ``target_macs`` and keep the fit with
    the lowest predicted latency (see the module docstring); ``fit_kwargs`` go to
    :func:`~agentic_toolkit.fit_to_budget`."""
    from .apply import get_plan
    from .budget import fit_to_budget

    if latency_model is None:
        raise ToolkitError("latency_shaped_fit needs a latency_model (build_latency_model)")
    if not gammas or any(g < 0 for g in gammas):
        raise ToolkitError(f"gammas must be a non-empty tuple of values >= 0, got {gammas!r}")
    p = get_plan(model, example_inputs, fit_kwargs.pop("calibration", None), plan)
    layers = sum(latency_model.layer_ms().values())
    if layers > latency_model.measured_ms:
        warnings.warn(
            f"the latency table's layers, timed alone, add up to {layers:.1f} ms, more than the whole model measured "
            f"({latency_model.measured_ms:.1f} ms): isolated timings over-count some layers (e.g. fresh large "
            "activations at a large batch), so the predicted gain of a tilted shape is unreliable; measure it "
            "(benchmark) before trusting it", stacklevel=2)
    slow = group_slowness(p, latency_model)
    fits, rows = {}, []
    for g in gammas:
        fit = fit_to_budget(model, tilt_strategy(strategy, slow, g), target_macs, example_inputs, plan=p,
                            latency_model=latency_model, **fit_kwargs)
        fits[g] = fit
        rows.append({"gamma": g, "macs": fit.predicted_macs, "within_tolerance": fit.within_tolerance,
                     "predicted_ms": fit.predicted_latency_ms})
    frame = pd.DataFrame(rows)
    ok = frame[frame["within_tolerance"]]
    best = float((ok if len(ok) else frame).sort_values(["predicted_ms", "gamma"]).iloc[0]["gamma"])
    return ShapedFit(fits[best], best, frame)


__all__ = ["GAMMAS", "ShapedFit", "group_slowness", "latency_shaped_fit", "tilt_strategy"]
