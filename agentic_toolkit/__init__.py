"""agentic_toolkit: prune vision models to a MAC budget with an agent loop (AgenticPruner).

The stages, one subpackage each: :mod:`~agentic_toolkit.profiling` (Profiling agent),
:mod:`~agentic_toolkit.pruning` (strategies, isomorphic pruning, the budget solver),
:mod:`~agentic_toolkit.agents` (Analysis and Master agents, backends, prompts),
:mod:`~agentic_toolkit.training` (fine-tuning, evaluation), :mod:`~agentic_toolkit.benchmarking`,
:mod:`~agentic_toolkit.studies` (experiments), :mod:`~agentic_toolkit.cli`. Everything a
notebook needs is importable from here: ``import agentic_toolkit as at``.
"""

from .agents import Proposal, SearchResult, propose_strategy, run_agentic_pruning
from .benchmarking import BenchmarkResult, benchmark
from .data import calibration_batches, cifar10, imagenet_folder
from .models import create_model, list_models
from .profiling import MacProfile, profile_macs
from .pruning import (
    BudgetFit,
    BudgetInfeasibleError,
    PrunePlan,
    PruneResult,
    Strategy,
    apply_isomorphic_prune,
    describe_scopes,
    fit_to_budget,
    get_plan,
    load_pruned,
    save_pruned,
)
from .training import FinetuneResult, evaluate, finetune, proxy_accuracy
from .version import __version__

__all__ = [
    "BenchmarkResult",
    "BudgetFit",
    "BudgetInfeasibleError",
    "FinetuneResult",
    "MacProfile",
    "Proposal",
    "PrunePlan",
    "PruneResult",
    "SearchResult",
    "Strategy",
    "__version__",
    "apply_isomorphic_prune",
    "benchmark",
    "calibration_batches",
    "cifar10",
    "create_model",
    "describe_scopes",
    "evaluate",
    "finetune",
    "fit_to_budget",
    "get_plan",
    "imagenet_folder",
    "list_models",
    "load_pruned",
    "profile_macs",
    "propose_strategy",
    "proxy_accuracy",
    "run_agentic_pruning",
    "save_pruned",
]
