"""The agents: the Analysis agent proposes strategies, the Master agent runs the loop.

``analysis`` (prompt rendering, reply parsing, propose_strategy), ``master`` (the loop and
its decisions), ``history`` (the resumable JSONL log), ``backends/`` (analyst, grid, Claude,
OpenAI-compatible), ``prompts/`` (the packaged prompt templates).
"""

from .analysis import Proposal, propose_strategy
from .master import SearchResult, run_agentic_pruning

__all__ = ["Proposal", "SearchResult", "propose_strategy", "run_agentic_pruning"]
