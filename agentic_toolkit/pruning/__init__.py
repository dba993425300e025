"""Isomorphic structural pruning to a MAC budget (torch-pruning underneath).

``strategy`` (what to prune, named presets), ``criteria`` (registered importance criteria),
``groups`` / ``traversal`` / ``attention`` (channel groups, a bounded group search, head
handling), ``importance`` (scores per
group, guarded), ``scopes`` (named parts a strategy can address), ``mac_model`` / ``param_model`` (MACs
and parameters predicted from widths), ``plan`` (graph + groups + importance, built once; with
``ranking``, ``cutting`` and ``model_utils``), ``apply`` (prune a model), ``budget`` (the
exact ratio solver; ``budget_fit`` its result, ``constraints`` MAC/params budgets), ``persist`` (save/load).
"""

from .apply import PruneResult, apply_isomorphic_prune, describe_scopes, get_plan, layer_widths
from .budget import BudgetFit, BudgetInfeasibleError, fit_to_budget
from .criteria import describe_importances, list_importances, register_importance
from .persist import load_pruned, save_pruned
from .plan import NothingToPruneError, PrunePlan
from .strategy import (
    Strategy,
    StrategyError,
    describe_strategies,
    list_strategies,
    register_strategy,
    strategy_preset,
)

__all__ = [
    "BudgetFit", "BudgetInfeasibleError", "NothingToPruneError", "PrunePlan", "PruneResult", "Strategy",
    "StrategyError", "apply_isomorphic_prune", "describe_importances", "describe_scopes", "describe_strategies",
    "fit_to_budget", "get_plan", "layer_widths", "list_importances", "list_strategies", "load_pruned",
    "register_importance", "register_strategy", "save_pruned", "strategy_preset",
]
