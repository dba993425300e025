"""A search's MAC target as given (a count, or ``"50%"`` of the model) and the MACs a strategy can reach.

:func:`check_target` reads ``target_macs`` before any work (a percentage is only checked:
it needs the model's MACs); :func:`resolve_target` turns it into the integer target once
the plan gives the unpruned count in the search's counter. :func:`reach_oracle` is what a
planner backend gets as ``ProposalContext.min_macs``: the smallest MAC count a strategy
allows at any ratio, so that it can keep its proposals within the budget solver's reach.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ..pruning.constraints import resolve_target as _resolve
from ..pruning.strategy import Strategy
from ..units import parse_macs, parse_percent


def check_target(value: int | float | str) -> int | str:
    """The MAC target as checked: an integer count, or the percentage string as given.

    Args:
        value: a count (``4.16e9``, ``"450M"``) or a share of the model's MACs (``"50%"``, ``"50 %"``).

    Returns:
        The integer count, or ``value`` itself for a percentage (resolved by :func:`resolve_target`).

    Raises :class:`~agentic_toolkit.errors.ToolkitError` for a bad count or a percentage
    outside (0%, 100%] (``"0%"``, ``"150%"``, ``"abc%"``).
    """
    if parse_percent(value) is not None:
        return str(value)
    return parse_macs(value)


def resolve_target(value: int | str, base_macs: int) -> int:
    """The integer MAC target of a checked ``value``.

    Args:
        value: what :func:`check_target` returned.
        base_macs: the unpruned model's MACs in the search's counter (``plan.base_count(counter)``).

    Returns:
        ``value`` as is, or its share of ``base_macs`` (rounded, at least 1).
    """
    return _resolve("macs", value, int(base_macs))


def smallest_macs(plan, counter: str, strategy: Strategy) -> int:
    """MACs (in ``counter``) of ``strategy`` on ``plan`` at the largest ratio: the least it can reach."""
    from ..pruning.budget import MAX_RATIO

    return int(plan.predict_macs(plan.select(strategy, MAX_RATIO), counter))


def reach_oracle(plan, counter: str) -> Callable[[Strategy], int]:
    """``strategy -> smallest MACs`` on ``plan`` in ``counter`` (see :func:`smallest_macs`).

    Args:
        plan: the search's :class:`~agentic_toolkit.PrunePlan`.
        counter: the search's MAC convention.

    Returns:
        A callable a planner backend may use to reject proposals the solver cannot bring into the band.
    """
    return partial(smallest_macs, plan, counter)


__all__ = ["check_target", "reach_oracle", "resolve_target", "smallest_macs"]
