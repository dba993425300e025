"""Exploring strategy shapes: proxy noise, the incumbent, model keys and revision budgets.

Pure helpers shared by the offline analyst (:mod:`.backends.analyst`) and the Master loop:

* noise: :func:`score_se` (standard error of a top-1 percentage on ``n`` images),
  :func:`record_se` (that of a history record), :func:`beats` and :func:`verdict` (is a
  score better than the incumbent's by more than ``k`` standard errors);
* the incumbent: :func:`replay` walks the scored revisions in order and keeps a candidate
  (makes it the strategy to build on) only when it :func:`beats` the incumbent of its time;
  :func:`incumbent_revision` is the last one kept;
* model identity: :func:`widths_key` hashes a plan's per-group kept widths for a strategy
  at its (solved) ratio, :func:`cuts_key` the exact channels cut; :func:`shape_key` is a
  strategy without its ratio (what the budget solver does not change);
* moves (the analyst's rules, see :mod:`.backends.analyst`): :func:`classify` names what one
  revision changed of its incumbent (a :class:`Trial`), :func:`scope_moves` and
  :func:`structural_moves` turn the trials into candidate :class:`Move` s;
* budgets: :func:`default_revision_budget` (revisions worth running for a candidate cost)
  and :func:`default_patience`.

Noise and the incumbent live in :mod:`.incumbent`, the moves in :mod:`.moves`; both are
re-exported here, the names to import.
"""

from __future__ import annotations

import hashlib
import json
import math

from .incumbent import (
    DEFAULT_EVAL_IMAGES,
    NOISE_K,
    Step,
    beats,
    incumbent_revision,
    record_se,
    replay,
    score_se,
    verdict,
)
from .moves import (
    GROUPINGS,
    Move,
    Trial,
    classify,
    grouping_of,
    record_shape,
    scope_moves,
    structural_moves,
)


# --- keys ----------------------------------------------------------------------------------------------
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


# --- budgets -------------------------------------------------------------------------------------------
def default_revision_budget(
    seconds_per_candidate: float | None, time_budget_s: float = 900.0, most: int = 25, least: int = 5
) -> int:
    """Revisions worth running when one candidate (prune + score) costs ``seconds_per_candidate``.

    ``time_budget_s / seconds`` clipped to ``[least, most]``: 25 when a candidate costs
    seconds, 15 at a minute, 5 from three minutes up; ``most`` when the cost is unknown.
    """
    s = seconds_per_candidate
    if s is None or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
        return int(most)
    return int(max(least, min(most, math.floor(time_budget_s / float(s)))))


def default_patience(max_revisions: int) -> int:
    """Revisions without a kept move before the search stops: a third of the budget, at least 3.

    (One round of the analyst's first probes -- each scope, criterion and grouping once --
    takes about that many revisions on a CNN with a handful of scopes.)
    """
    return max(3, math.ceil(int(max_revisions) / 3))


__all__ = [
    "GROUPINGS",
    "Move",
    "Trial",
    "classify",
    "grouping_of",
    "record_shape",
    "scope_moves",
    "structural_moves",
    "DEFAULT_EVAL_IMAGES",
    "NOISE_K",
    "Step",
    "beats",
    "cuts_key",
    "default_patience",
    "default_revision_budget",
    "fit_widths_key",
    "incumbent_revision",
    "record_se",
    "replay",
    "score_se",
    "shape_key",
    "solved_shape_key",
    "verdict",
    "widths_key",
]
