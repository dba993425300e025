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
from typing import Any

import pandas as pd

#: latency_per_mac beyond which a scope counts as slow (above) or cheap (below 1 / this).
SLOW = 1.15


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


def prepare_constraints(search, constraints: Mapping[str, Any] | None, device: str, threads: int | None,
                        latency_model) -> None:
    """Set a search's budgets besides the MAC target: ``search.constraints`` (checked),
    ``search.fit_kwargs`` (what every :func:`~agentic_toolkit.fit_to_budget` call gets), and
    with a latency budget or a given ``latency_model`` the table (measured once, cached on
    disk), ``search.latency`` (:func:`latency_info`) and the scope table's latency columns."""
    from ..errors import ToolkitError
    from ..pruning.constraints import check_constraints

    constraints = dict(constraints or {})
    if "macs" in constraints:
        raise ToolkitError("give the MAC budget as target_macs, not constraints['macs']")
    check_constraints(search.target_macs, constraints)
    if constraints and not search.solve_budget:
        raise ToolkitError("constraints= need solve_budget=True (the solver meets them)")
    search.constraints, search.latency = constraints, None
    search.fit_kwargs = {"constraints": constraints, "device": device, "threads": threads} if constraints else {}
    if "latency" not in constraints and latency_model is None:
        return
    if latency_model is None:
        from ..pruning.latency_model import build_latency_model

        latency_model = build_latency_model(search.plan, device, threads, progress=search.progress)
    search.fit_kwargs["latency_model"] = latency_model
    batch = int(search.plan.input_shape[0]) if getattr(search.plan, "input_shape", None) else 1
    search.latency = latency_info(latency_model, device, threads, batch)
    search.scopes = add_latency_columns(search.scopes, latency_model.scope_shares(search.plan))


__all__ = [
    "SLOW", "add_latency_columns", "constraints_text", "latency_info", "latency_profile_text", "prepare_constraints",
    "slowness",
]
