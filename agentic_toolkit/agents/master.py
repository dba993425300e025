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


def run_agentic_pruning(model: nn.Module, target_macs: int | float | str, example_inputs, **options: Any) -> SearchResult:
    """Search a pruning strategy that lands ``model`` in the MAC band around ``target_macs``.

    ``AgenticSearch(model, target_macs, example_inputs, **options).run()``: the same
    keywords (``tolerance``, ``max_revisions``, ``backend``, ``evaluator``, ``calibration``,
    ``solve_budget``, ``log_path``, ``resume``, ``base_strategy``, ``prompt``,
    ``repair_prompt``, ``system``, ``patience``, ``model_name``, ``progress``, ``plan``,
    ``on_revision``, ``counter``, ``sensitivity``, ``constraints``, ``device``, ``threads``,
    ``latency_model``, ``preset``), see :class:`~agentic_toolkit.agents.search.AgenticSearch`;
    ``target_macs`` may be a share such as ``"50%"``. Bad input
    raises :class:`~agentic_toolkit.errors.ToolkitError` before any work is done; ``resume=True``
    with a ``max_revisions`` above the logged one extends the search
    (:meth:`~agentic_toolkit.agents.search.AgenticSearch.extend`). Returns the
    :class:`SearchResult` holding the best pruned model.
    """
    return AgenticSearch(model, target_macs, example_inputs, **options).run()


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
