"""Isomorphic structural pruning to a MAC budget (torch-pruning underneath).

``strategy`` (what to prune), ``groups`` / ``attention`` (channel groups, head handling),
``importance`` (registered criteria), ``scopes`` (named parts a strategy can address),
``mac_model`` (MACs predicted from widths), ``plan`` (graph + groups + importance, built
once), ``apply`` (prune a model), ``budget`` (the exact ratio solver), ``persist`` (save/load).
"""

from .apply import PruneResult, apply_isomorphic_prune, describe_scopes, get_plan
from .budget import BudgetFit, BudgetInfeasibleError, fit_to_budget
from .persist import load_pruned, save_pruned
from .plan import PrunePlan
from .strategy import Strategy, StrategyError

__all__ = [
    "BudgetFit", "BudgetInfeasibleError", "PrunePlan", "PruneResult", "Strategy", "StrategyError",
    "apply_isomorphic_prune", "describe_scopes", "fit_to_budget", "get_plan", "load_pruned", "save_pruned",
]
