"""agentic_toolkit: prune vision models to a MAC budget with an agent loop (AgenticPruner).

The stages, one subpackage each: :mod:`~agentic_toolkit.profiling` (Profiling agent),
:mod:`~agentic_toolkit.pruning` (strategies, isomorphic pruning, the budget solver),
:mod:`~agentic_toolkit.agents` (Analysis and Master agents, backends, prompts),
:mod:`~agentic_toolkit.training` (fine-tuning, evaluation), :mod:`~agentic_toolkit.benchmarking`,
:mod:`~agentic_toolkit.tables` (CSV tables stamped with the machine), :mod:`~agentic_toolkit.cli`.
The API is importable from here: ``import agentic_toolkit as at``. The drivers of this
repository's own studies live outside the library, in ``reproduce/``.
"""

from .agents import (
    AgenticSearch,
    Proposal,
    SearchBudget,
    SearchLogging,
    SearchPreset,
    SearchPrompts,
    SearchResult,
    SearchStart,
    list_search_presets,
    propose_strategy,
    run_agentic_pruning,
)
from .benchmarking import BenchmarkResult, benchmark, export_onnx
from .data import calibration_batches, cifar10, imagenet_folder
from .errors import (
    CheckpointError,
    ChecksumError,
    DataNotFoundError,
    ToolkitError,
    UnknownModelError,
)
from .models import create_model, list_models
from .profiling import MacProfile, profile_macs
from .pruning import (
    BudgetFit,
    BudgetInfeasibleError,
    PrunePlan,
    PruneResult,
    Strategy,
    apply_isomorphic_prune,
    describe_importances,
    describe_scopes,
    describe_strategies,
    fit_to_budget,
    get_plan,
    list_importances,
    list_strategies,
    load_pruned,
    register_importance,
    register_strategy,
    save_pruned,
    strategy_preset,
)
from .pruning.latency_fit import pick_rounding, refine_latency_fit
from .pruning.latency_model import LatencyModel, build_latency_model
from .training import FinetuneResult, Recipe, default_evaluator, evaluate, finetune, proxy_accuracy
from .version import __version__

__all__ = [
    "AgenticSearch",
    "BenchmarkResult",
    "BudgetFit",
    "BudgetInfeasibleError",
    "CheckpointError",
    "ChecksumError",
    "DataNotFoundError",
    "FinetuneResult",
    "LatencyModel",
    "MacProfile",
    "Proposal",
    "PrunePlan",
    "PruneResult",
    "Recipe",
    "SearchBudget",
    "SearchLogging",
    "SearchPreset",
    "SearchPrompts",
    "SearchResult",
    "SearchStart",
    "Strategy",
    "ToolkitError",
    "UnknownModelError",
    "__version__",
    "apply_isomorphic_prune",
    "benchmark",
    "build_latency_model",
    "calibration_batches",
    "cifar10",
    "create_model",
    "describe_importances",
    "describe_scopes",
    "describe_strategies",
    "evaluate",
    "export_onnx",
    "finetune",
    "fit_to_budget",
    "get_plan",
    "imagenet_folder",
    "list_search_presets",
    "list_importances",
    "list_models",
    "list_strategies",
    "load_pruned",
    "profile_macs",
    "propose_strategy",
    "proxy_accuracy",
    "pick_rounding",
    "refine_latency_fit",
    "default_evaluator",
    "register_importance",
    "register_strategy",
    "run_agentic_pruning",
    "save_pruned",
    "strategy_preset",
]
