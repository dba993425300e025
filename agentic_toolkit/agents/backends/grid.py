"""The grid baseline: a coarse-to-fine grid over the whole feasible range of the global ratio.

What it searches. Only the global ``pruning_ratio``; the strategy is the base strategy with
uniform multipliers (its importance, grouping, rounding and ``max_layer_ratio`` as given).
The ratio range is ``[low, high]``, by default ``[0, max_layer_ratio]`` of the base
strategy: with uniform multipliers every scope cuts ``min(ratio, max_layer_ratio)`` of its
channels, so ratio 0 is the unpruned model, any ratio >= ``max_layer_ratio`` the smallest
model the strategy allows, and every MAC count the budget solver can reach
(:func:`~agentic_toolkit.fit_to_budget`'s reachable range) is reached by a ratio inside it.

The order it visits points. The grid of resolution ``k`` is the ``2**k - 1`` interior points
``low + (high - low) * j / 2**k``. Revision 1 tries the midpoint (resolution 1); each later
revision tries the midpoint of the bracket the measurements leave -- the last ratio whose
MACs were above the band and the last whose MACs were below it (``low`` and ``high`` until
one is measured) -- so revision ``k`` visits a point of resolution ``k``: the midpoint,
then a quarter point, then an eighth point, and so on (a binary search over the dyadic
grid). A revision in band is proposed again ("keep"), which ends the search.

What it guarantees. MACs fall monotonically with the ratio, so the grid points whose MACs
are in band are consecutive and always lie inside the bracket. Hence, with ``R`` revisions:
if any of the ``2**R - 1`` points of resolution ``R`` lands in the band, the grid reaches
one within ``R`` revisions (at resolution ``(high - low) / 2**R``, e.g. 0.9/32 = 0.028 for
``R = 5``). A band narrower than the MAC step between two neighbouring points of
resolution ``R`` may fall between them: the grid then ends out of band, as any grid of
that resolution would. It never interpolates; that is the analyst's job. (The guarantee is
the backend's: the Master may stop a search sooner, e.g. its divergence rule -- three
out-of-band errors alternating in sign without the error halving -- can fire on a bisection
whose bracket is still shrinking.)

History records measured with another ratio (e.g. a ratio solved to the budget with
``solve_budget=True``) narrow the bracket the same way; failed revisions (no MACs) do not.
"""

from __future__ import annotations

from ...pruning.strategy import Strategy
from .base import PlannerBackend, ProposalContext

MAX_RATIO = 1.0 - 1e-6  # Strategy.pruning_ratio must stay below 1


def bracket(history, band: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    """``(lo, hi)``: the ratio bracket the measured revisions leave inside ``[low, high]``.

    ``lo`` is the largest ratio measured above the band (too many MACs), ``hi`` the smallest
    measured below it (too few); revisions without MACs or without a ratio are skipped.
    """
    lo, hi = float(low), float(high)
    for r in history:
        macs, ratio = r.get("achieved_macs"), (r.get("strategy") or {}).get("pruning_ratio")
        if macs is None or ratio is None:
            continue
        if macs > band[1] and lo < ratio < hi:
            lo = float(ratio)
        elif macs < band[0] and lo < ratio < hi:
            hi = float(ratio)
    return lo, hi


class GridBackend(PlannerBackend):
    """Coarse-to-fine grid over ``[low, high]`` (default ``[0, max_layer_ratio]``); see the module docstring.

    ``low`` and ``high`` bound the global ratio; ``high=None`` takes the base strategy's
    ``max_layer_ratio`` (capped below 1).
    """

    name = "grid"

    def __init__(self, low: float = 0.0, high: float | None = None):
        low = float(low)
        if not 0.0 <= low < 1.0 or (high is not None and not low < float(high) <= 1.0):
            raise ValueError(f"need 0 <= low < high <= 1; got low={low!r}, high={high!r}")
        self.low, self.high = low, None if high is None else float(high)

    def describe(self) -> dict:
        return {"backend": self.name, "order": "coarse-to-fine (binary search over the dyadic grid)",
                "low": self.low, "high": "max_layer_ratio" if self.high is None else self.high}

    def range(self, base: Strategy) -> tuple[float, float]:
        """The ratio range ``(low, high)`` searched for ``base``."""
        high = base.max_layer_ratio if self.high is None else self.high
        return self.low, min(high, MAX_RATIO)

    def propose(self, ctx: ProposalContext) -> tuple[Strategy, str]:
        base = ctx.base_strategy.replace(multipliers={})
        low, high = self.range(base)
        measured = [r for r in ctx.history if r.get("achieved_macs") is not None]
        if measured and measured[-1].get("in_band"):
            ratio = float(measured[-1]["strategy"]["pruning_ratio"])
            return base.replace(pruning_ratio=ratio), f"in band: keep ratio {ratio:.4f}"
        lo, hi = bracket(measured, ctx.band, low, high)
        ratio = 0.5 * (lo + hi)
        why = (f"grid over ratio [{low:.3g}, {high:.3g}]: midpoint {ratio:.4f} of the bracket [{lo:.4f}, {hi:.4f}] "
               f"left by {len(measured)} measured revision(s) (step {(hi - lo) / 2:.4f})")
        return base.replace(pruning_ratio=ratio), why
