"""The agents: the Analysis agent proposes strategies, the Master agent runs the loop.

``analysis`` (prompt rendering, reply parsing, propose_strategy), ``search`` (the Master's
loop, one revision per ``AgenticSearch.step()``), ``decisions`` (its pure decisions on the
history), ``result`` (``SearchResult``), ``settings`` (its grouped settings: ``SearchBudget``,
``SearchStart``, ``SearchPrompts``, ``SearchLogging``), ``master`` (``run_agentic_pruning``, the loop in one
call), ``history`` (the resumable JSONL log and its table), ``backends/`` (analyst, grid,
Claude, OpenAI-compatible), ``prompts/`` (the packaged prompt templates).
"""

from .analysis import Proposal, propose_strategy
from .master import run_agentic_pruning
from .presets import SearchPreset, list_search_presets
from .rerank import RerankResult, rerank_candidates
from .result import SearchResult
from .search import AgenticSearch
from .sensitivity import SensitivityTable, measure_sensitivity, sensitivity_search
from .settings import SearchBudget, SearchLogging, SearchPrompts, SearchStart

__all__ = [
    "AgenticSearch", "Proposal", "RerankResult", "SearchBudget", "SearchLogging", "SearchPreset", "SearchPrompts",
    "SearchResult", "SearchStart", "SensitivityTable",
    "list_search_presets", "measure_sensitivity", "propose_strategy", "rerank_candidates", "run_agentic_pruning",
    "sensitivity_search",
]
