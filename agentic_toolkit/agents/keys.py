"""Model identity keys: which strategies give the same pruned model.

:func:`widths_key` hashes a plan's per-group kept widths for a strategy at its (solved)
ratio, :func:`cuts_key` the exact channels cut (equal keys: identical pruned models);
:func:`shape_key` is a strategy without its ratio (what the budget solver does not change)
and :func:`solved_shape_key` that key up to what the solver absorbs. The Master uses them to
skip duplicates (:mod:`.candidates`), the offline analyst to skip shapes already tried.
"""

from __future__ import annotations

import hashlib
import json


def shape_key(strategy) -> str:
    """A strategy (Strategy or dict) without ``pruning_ratio``, as canonical JSON.

    Multipliers equal to 1 are dropped (they change nothing) and the rest rounded to 4
    decimals, so two shapes the budget solver treats alike give the same key.
    """
    d = strategy.to_dict() if hasattr(strategy, "to_dict") else dict(strategy)
    d.pop("pruning_ratio", None)
    mult = {str(k): round(float(v), 4) for k, v in (d.get("multipliers") or {}).items()}
    d["multipliers"] = {k: v for k, v in sorted(mult.items()) if abs(v - 1.0) > 1e-9}
    return json.dumps(d, sort_keys=True)


def solved_shape_key(strategy, kind_scopes, stage_scopes=()) -> str:
    """:func:`shape_key` up to what the budget solver absorbs.

    Every prunable group carries exactly one *kind* tag (``residual``, ``stem``, ``head``,
    ``<block>.inner``, ``attn.head_dim``...: the scopes whose table kind is neither
    ``stage`` nor ``heads``), so scaling all of ``kind_scopes``' multipliers by one factor
    only rescales the ratio the solver finds: same widths, same model. The same holds for
    ``stage_scopes`` when every group has a stage tag (pass them only then). Each family's
    multipliers are divided by that of its first scope (sorted) before hashing. Not applied
    when the strategy prunes whole heads (``attn.heads``), whose ratio the kinds do not scale.
    """
    d = strategy.to_dict() if hasattr(strategy, "to_dict") else dict(strategy)
    mult = {str(k): float(v) for k, v in (d.get("multipliers") or {}).items()}
    if "attn.heads" not in mult:
        for family in (sorted(set(kind_scopes)), sorted(set(stage_scopes))):
            if family:
                ref = mult.get(family[0], 1.0)
                for k in family:
                    mult[k] = mult.get(k, 1.0) / ref
    return shape_key({**d, "multipliers": mult})


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _selection(plan, strategy, selection):
    from ..pruning.strategy import Strategy

    if not isinstance(strategy, Strategy):
        strategy = Strategy.from_dict(dict(strategy))
    return strategy, (selection if selection is not None else plan.select(strategy))


def widths_key(plan, strategy, selection=None) -> str:
    """Hash of ``plan``'s per-group kept channel counts for ``strategy`` at its ratio.

    ``strategy`` is a Strategy or a history record's ``strategy`` dict (with the solved
    ratio); pass ``selection`` (e.g. ``BudgetFit.selection``) to skip ``plan.select``. Two
    strategies with the same key give models of the same widths and MACs (the channels
    kept may still differ when the importance criterion differs: see :func:`cuts_key`).
    """
    _, sel = _selection(plan, strategy, selection)
    removed = plan.removed_channels(sel)
    kept = [[i, plan.groups[i].channels - removed[i]] for i in sorted(removed)]
    return _digest(kept)


def cuts_key(plan, strategy, selection=None) -> str:
    """Hash of the exact root channels every group loses: equal keys, identical pruned models."""
    strategy, sel = _selection(plan, strategy, selection)
    roots = plan.root_indices(sel, strategy)
    return _digest([[i, list(map(int, idx))] for i, idx in sorted(roots.items())])


def fit_widths_key(fit) -> str:
    """:func:`widths_key` of a :class:`~agentic_toolkit.pruning.budget.BudgetFit` (no new selection)."""
    return widths_key(fit.plan, fit.strategy, fit.selection)


__all__ = ["cuts_key", "fit_widths_key", "shape_key", "solved_shape_key", "widths_key"]
