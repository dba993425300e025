"""The paper's baseline: walk a fixed grid of global pruning ratios.

Revision 1 tries ``start``; each later revision moves one grid step in the direction the
last measured error asks for (too many MACs -> a larger ratio, too few -> a smaller one).
It never interpolates, so it lands in a narrow band only when a grid point happens to.
"""

from __future__ import annotations

from ...pruning.strategy import Strategy
from .base import PlannerBackend, ProposalContext

DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95


class GridBackend(PlannerBackend):
    """Fixed-grid baseline (uniform multipliers, the base strategy's importance)."""

    name = "grid"

    def __init__(self, grid: tuple[float, ...] = DEFAULT_GRID, start: float = 0.3):
        self.grid = tuple(sorted(float(g) for g in grid))
        self.start = min(self.grid, key=lambda g: abs(g - start))

    def describe(self) -> dict:
        return {"backend": self.name, "grid": list(self.grid), "start": self.start}

    def propose(self, ctx: ProposalContext) -> tuple[Strategy, str]:
        measured = [r for r in ctx.history if r.get("achieved_macs")]
        base = ctx.base_strategy.replace(multipliers={})
        if not measured:
            return base.replace(pruning_ratio=self.start), f"grid start at ratio {self.start:.2f}"
        last = measured[-1]
        ratio = float(last["strategy"]["pruning_ratio"])
        i = min(range(len(self.grid)), key=lambda k: abs(self.grid[k] - ratio))
        low, high = ctx.band
        if last["achieved_macs"] > high:
            i, why = min(i + 1, len(self.grid) - 1), "above the band: next larger grid ratio"
        elif last["achieved_macs"] < low:
            i, why = max(i - 1, 0), "below the band: next smaller grid ratio"
        else:
            why = "in band: keep"
        return base.replace(pruning_ratio=self.grid[i]), f"{why} ({self.grid[i]:.2f})"
