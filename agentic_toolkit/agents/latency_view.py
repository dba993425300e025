"""What the Analysis agent sees of the device: where the latency is, beside where the MACs are.

With a latency budget (or a ``latency_model=``) the search adds two columns to the scope
table of every prompt: ``latency_share`` (share of the unpruned layers' predicted latency in
the layers whose width the scope changes, as ``mac_share`` is of their MACs; from the measured table of
:mod:`agentic_toolkit.pruning.latency_model`) and ``latency_per_mac`` (``latency_share /
mac_share``: above 1 the scope's MACs are slower than the model's average on this device,
below 1 cheaper). Pruning where MACs are slow frees latency for fewer MACs lost, which is
the trade a latency budget rewards; :func:`latency_profile_text` says so in the prompt and
the offline analyst probes those scopes first (:mod:`.backends.analyst`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd

#: latency_per_mac beyond which a scope counts as slow (above) or cheap (below 1 / this).
SLOW = 1.15


class BudgetView(NamedTuple):
    """A search's budgets besides the MAC target, as :func:`budget_view` prepares them."""

    #: The checked budgets besides MACs (``{}`` without).
    constraints: dict[str, Any]
    #: What every :func:`~agentic_toolkit.fit_to_budget` call of the search gets.
    fit_kwargs: dict[str, Any]
    #: What the prompt says about the device and the latency table (:func:`latency_info`), or None.
    latency: dict[str, Any] | None
    #: The scope table the prompt and the analyst see (with the latency columns when there is a table).
    scopes: pd.DataFrame


def add_latency_columns(scopes: pd.DataFrame, shares: Mapping[str, float]) -> pd.DataFrame:
    """A copy of the scope table with ``latency_share`` and ``latency_per_mac`` columns."""
    df = scopes.copy()
    df["latency_share"] = [float(shares.get(str(n), 0.0)) for n in df["name"]]
    df["latency_per_mac"] = [ls / ms if ms > 0 else float("nan") for ls, ms in zip(df["latency_share"],
                                                                                    df["mac_share"], strict=True)]
    df.attrs = dict(scopes.attrs)
    return df


def slowness(scopes) -> dict[str, float]:
    """``{scope: latency_per_mac}`` from a scope table with the latency columns ({} without)."""
    if scopes is None or len(scopes) == 0 or "latency_per_mac" not in scopes:
        return {}
    return {str(n): float(v) for n, v in zip(scopes["name"], scopes["latency_per_mac"], strict=True)
            if v is not None and math.isfinite(float(v))}


def latency_info(lat, device: str, threads: int | None, batch: int) -> dict[str, Any]:
    """What the prompt says about the device and the table (JSON-ready)."""
    layers = sum(lat.layer_ms().values())
    return {"device": device, "threads": threads, "batch": int(batch), "base_ms": round(lat.base_ms, 4),
            "layer_share": round(layers / lat.base_ms, 4) if lat.base_ms > 0 else None}


def latency_profile_text(scopes, latency: Mapping[str, Any] | None) -> str:
    """The prompt's ``$latency_profile``: the device, the unpruned latency and which scopes
    have slow or cheap MACs; a placeholder sentence without a latency model."""
    slow = slowness(scopes)
    if not latency or not slow:
        return "(no latency budget: MACs are the only cost)"
    ranked = sorted(slow.items(), key=lambda kv: -kv[1])
    fast = [f"{n} x{v:.2f}" for n, v in ranked if v >= SLOW]
    cheap = [f"{n} x{v:.2f}" for n, v in reversed(ranked) if v <= 1 / SLOW]
    return (
        f"Predicted from a latency table measured on {latency.get('device', '?')} "
        f"({latency.get('threads', '?')} threads, batch {latency.get('batch', '?')}): unpruned "
        f"{float(latency.get('base_ms', float('nan'))):.2f} ms, of which the prunable layers take "
        f"{100 * float(latency.get('layer_share') or float('nan')):.0f}%. latency_per_mac in the scope table is the "
        "scope's latency share over its MAC share. Slow MACs (prune them first to meet a latency budget while "
        f"keeping more MACs): {', '.join(fast) or 'none'}. Cheap MACs (protect them): {', '.join(cheap) or 'none'}."
    )


def constraints_text(constraints: Mapping[str, Any] | None) -> str:
    """The prompt's ``$constraints``: every budget besides the MAC target, or ``none``."""
    if not constraints:
        return "none (MACs only)"
    parts = [f"{kind} <= {spec}" + (" of the unpruned model" if str(spec).endswith("%") else "")
             for kind, spec in constraints.items()]
    return ("; ".join(parts) + ". The toolkit solves pruning_ratio so that every budget is met; the tightest one "
            "binds (lands in its band) and the others end at or below theirs, so MACs may land below the MAC band.")


def budget_view(budget, target_macs: int, plan, scopes: pd.DataFrame, progress: bool = False) -> BudgetView:
    """What a search's :class:`~agentic_toolkit.agents.settings.SearchBudget` gives it besides the MAC target.

    Args:
        budget: the search's budget settings.
        target_macs: the resolved MAC target (the constraints are checked against it).
        plan: the search's :class:`~agentic_toolkit.PrunePlan`.
        scopes: its scope table (``plan.describe()``).
        progress: show a progress bar while a latency table is measured.

    Returns:
        A :class:`BudgetView`. With a latency budget or a given ``latency_model`` the table
        is measured once (cached on disk) and, unless ``budget.latency_view`` is False, the
        scope table gets the latency columns.
    """
    from ..pruning.constraints import check_constraints

    constraints = dict(budget.constraints or {})
    check_constraints(target_macs, constraints)
    fit_kwargs = {"constraints": constraints, "device": budget.device, "threads": budget.threads} if constraints else {}
    lat = budget.latency_model
    if "latency" not in constraints and lat is None:
        return BudgetView(constraints, fit_kwargs, None, scopes)
    if lat is None:
        from ..pruning.latency_model import build_latency_model

        lat = build_latency_model(plan, budget.device, budget.threads, progress=progress)
    fit_kwargs["latency_model"] = lat
    batch = int(plan.input_shape[0]) if getattr(plan, "input_shape", None) else 1
    if budget.latency_view:
        scopes = add_latency_columns(scopes, lat.scope_shares(plan))
    return BudgetView(constraints, fit_kwargs, latency_info(lat, budget.device, budget.threads, batch), scopes)


__all__ = [
    "SLOW", "BudgetView", "add_latency_columns", "constraints_text", "latency_info", "latency_profile_text", "budget_view",
    "slowness",
]
