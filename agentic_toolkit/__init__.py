"""agentic_toolkit: prune vision models to a MAC budget with an agent loop (AgenticPruner).

Public functions are imported lazily so that ``import agentic_toolkit`` stays fast and a
notebook only pays for the parts it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "create_model": "models",
    "list_models": "models",
    "cifar10": "data",
    "imagenet_folder": "data",
    "calibration_batches": "data",
    "profile_macs": "profiling",
    "MacProfile": "profiling",
    "Strategy": "strategy",
    "describe_scopes": "scopes",
    "apply_isomorphic_prune": "pruning",
    "PruneResult": "pruning",
    "fit_to_budget": "budget",
    "BudgetFit": "budget",
    "BudgetInfeasibleError": "budget",
    "PrunePlan": "plan",
    "save_pruned": "persist",
    "load_pruned": "persist",
    "propose_strategy": "agents",
    "Proposal": "agents",
    "run_agentic_pruning": "master",
    "SearchResult": "master",
    "proxy_accuracy": "evaluation",
    "evaluate": "evaluation",
    "finetune": "training",
    "FinetuneResult": "training",
    "benchmark": "benchmarking",
    "BenchmarkResult": "benchmarking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentic_toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
