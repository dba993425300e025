"""The grid baseline: a coarse-to-fine grid over the whole feasible ratio range (synthetic MAC curves, no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agentic_toolkit.agents.backends import GridBackend, ProposalContext, make_backend
from agentic_toolkit.agents.backends.grid import bracket
from agentic_toolkit.pruning.strategy import Strategy

BASE = 4_000_000_000
TOL = (1.0, 5.0)


def staircase(p=2.0, floor=0.03, steps=512, mlr=0.9):
    """A monotone MAC curve in steps (whole channels), flat beyond ``max_layer_ratio``."""

    def f(ratio: float) -> int:
        r = math.floor(min(ratio, mlr) * steps + 0.5) / steps
        return int(BASE * (floor + (1 - floor) * (1 - r) ** p))

    return f


def simulate(curve, target, backend=None, max_revisions=5, base_strategy=None):
    """Drive the grid against ``curve(ratio) -> MACs``; stop at the first revision in band."""
    backend = backend or GridBackend()
    base_strategy = base_strategy or Strategy()
    records = []
    low, high = target * (1 - TOL[1] / 100), target * (1 + TOL[0] / 100)
    for rev in range(1, max_revisions + 1):
        ctx = ProposalContext(target, BASE, TOL, None, tuple(records), None, rev, max_revisions, False, base_strategy)
        strategy, why = backend.propose(ctx)
        assert strategy.multipliers == {} and why
        macs = curve(strategy.pruning_ratio)
        records.append({"revision": rev, "strategy": strategy.to_dict(), "achieved_macs": macs,
                        "in_band": bool(low <= macs <= high)})
        if records[-1]["in_band"]:
            break
    return records


def grid_points(resolution: int, low=0.0, high=0.9):
    return [low + (high - low) * j / 2**resolution for j in range(1, 2**resolution)]


def test_revision_k_visits_a_point_of_resolution_k():
    curve = staircase()
    for frac in (0.08, 0.2, 0.33, 0.5, 0.71, 0.9):
        records = simulate(curve, int(frac * BASE))
        ratios = [r["strategy"]["pruning_ratio"] for r in records]
        assert ratios[0] == pytest.approx(0.45)  # the midpoint first
        for k, ratio in enumerate(ratios, start=1):
            j = ratio / 0.9 * 2**k
            assert j == pytest.approx(round(j)) and round(j) % 2 == 1, (k, ratio)  # new at resolution k
        assert len(set(ratios)) == len(ratios)  # never a point twice


@pytest.mark.parametrize("p", [1.3, 2.0, 2.8])
@pytest.mark.parametrize("max_revisions", [3, 5])
def test_grid_reaches_every_feasible_target_at_its_resolution(p, max_revisions):
    """Converged within R revisions iff a point of resolution R lands in the band."""
    curve = staircase(p)
    smallest = curve(0.9)
    points = grid_points(max_revisions)
    # every target from the smallest reachable MACs to the base, plus each grid point's own MACs
    targets = [int(t) for t in np.geomspace(smallest * 1.01, BASE * 0.98, 400)]
    targets += [curve(r) for r in points]
    hits = misses = 0
    for target in targets:
        low, high = target * (1 - TOL[1] / 100), target * (1 + TOL[0] / 100)
        reachable = any(low <= curve(r) <= high for r in points)
        records = simulate(curve, target, max_revisions=max_revisions)
        assert len(records) <= max_revisions
        assert records[-1]["in_band"] == reachable, (target / BASE, [r["strategy"]["pruning_ratio"] for r in records])
        hits += reachable
        misses += not reachable
    assert hits > 0 and misses > 0  # both outcomes are exercised


def test_the_range_is_the_whole_feasible_range():
    base = Strategy(max_layer_ratio=0.6, importance="taylor", multipliers={"stage1": 0.5})
    ctx = ProposalContext(BASE // 2, BASE, TOL, None, (), None, 1, 5, False, base)
    s, why = GridBackend().propose(ctx)
    assert s.pruning_ratio == pytest.approx(0.3) and s.multipliers == {} and s.importance == "taylor"
    assert "[0, 0.6]" in why
    s, _ = GridBackend(low=0.2, high=0.4).propose(ctx)
    assert s.pruning_ratio == pytest.approx(0.3)
    assert GridBackend().range(Strategy(max_layer_ratio=1.0))[1] < 1.0  # a valid Strategy ratio
    assert make_backend("grid", low=0.1).describe()["low"] == 0.1
    with pytest.raises(ValueError):
        GridBackend(low=0.5, high=0.4)


def test_bracket_uses_any_measured_ratio_and_skips_failures():
    band = (95.0, 101.0)
    hist = [
        {"strategy": {"pruning_ratio": 0.3}, "achieved_macs": 200},   # above: lo = 0.3
        {"strategy": {"pruning_ratio": 0.7}, "achieved_macs": 50},    # below: hi = 0.7
        {"strategy": {"pruning_ratio": 0.5}, "achieved_macs": None},  # failed: ignored
        {"strategy": {"pruning_ratio": 0.1}, "achieved_macs": 300},   # outside the bracket: ignored
    ]
    assert bracket(hist, band, 0.0, 0.9) == (0.3, 0.7)


def test_an_in_band_revision_is_kept():
    curve = staircase()
    target = curve(0.45)
    records = simulate(curve, target)
    assert len(records) == 1 and records[0]["in_band"]
    ctx = ProposalContext(target, BASE, TOL, None, tuple(records), None, 2, 5, False, Strategy())
    s, why = GridBackend().propose(ctx)
    assert s.pruning_ratio == pytest.approx(0.45) and why.startswith("in band: keep")
