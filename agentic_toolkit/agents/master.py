"""The Master agent in one call: :func:`run_agentic_pruning` runs an :class:`AgenticSearch` to the end.

The loop itself is :class:`~agentic_toolkit.agents.search.AgenticSearch` (step by step),
its decisions are the pure functions of :mod:`~agentic_toolkit.agents.decisions`, its
outcome a :class:`~agentic_toolkit.agents.result.SearchResult`; they are re-exported here.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .checks import RESUME_KEYS, weights_fingerprint
from .decisions import best_revision, check_divergence, stop_reason
from .history import history_frame
from .result import SearchResult
from .search import AgenticSearch
from .settings import grouped_options


def run_agentic_pruning(model: nn.Module, target_macs: int | float | str, example_inputs, **options: Any) -> SearchResult:
    """Search a pruning strategy that lands ``model`` in the MAC band around ``target_macs``, in one call.

    ``AgenticSearch(model, target_macs, example_inputs, **grouped_options(**options)).run()``:
    every field of the settings groups may be given as a flat keyword (a shortcut), and is
    folded into its group (:func:`~agentic_toolkit.agents.settings.grouped_options`); a
    shortcut overrides that field of a group given too. ``resume=True`` with a
    ``max_revisions`` above the logged one extends the search
    (:meth:`~agentic_toolkit.agents.search.AgenticSearch.extend`).

    Args:
        model: the model to prune (never changed).
        target_macs: a count (``4.16e9``, ``"450M"``) or a share of the model's MACs (``"50%"``).
        example_inputs: a batch of inputs to trace the model with.
        **options: :class:`~agentic_toolkit.AgenticSearch`'s keywords (``backend``,
            ``evaluator``, ``preset``, ``max_revisions``, ``patience``, ``budget``, ``start``,
            ``prompts``, ``logging``) and the shortcuts for their fields:

            - :class:`~agentic_toolkit.SearchBudget`: ``tolerance``, ``counter``,
              ``constraints``, ``device``, ``threads``, ``latency_model``, ``latency_view``,
              ``solve_budget``, ``executor``;
            - :class:`~agentic_toolkit.SearchStart`: ``plan``, ``calibration``,
              ``base_strategy``, ``sensitivity``;
            - :class:`~agentic_toolkit.SearchPrompts`: ``prompt`` (its ``analysis``),
              ``repair_prompt`` (``repair``), ``system``;
            - :class:`~agentic_toolkit.SearchLogging`: ``log_path``, ``resume``,
              ``on_revision``, ``progress``, ``model_name``.

    Returns:
        The :class:`SearchResult` holding the best pruned model. Bad input raises
        :class:`~agentic_toolkit.errors.ToolkitError` before any work is done.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> _ = torch.manual_seed(0)
        >>> model = at.create_model("cifar_resnet20")  # random init
        >>> res = at.run_agentic_pruning(model, "50%", torch.randn(1, 3, 32, 32), max_revisions=1, progress=False)
        >>> res.revisions, res.macs < res.base_macs
        (1, True)
    """
    return AgenticSearch(model, target_macs, example_inputs, **grouped_options(**options)).run()


__all__ = [
    "RESUME_KEYS",
    "AgenticSearch",
    "SearchResult",
    "best_revision",
    "check_divergence",
    "history_frame",
    "run_agentic_pruning",
    "stop_reason",
    "weights_fingerprint",
]
