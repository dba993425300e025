"""Experiment drivers, one module per study; notebooks and ``benchmarks/`` both call them.

``convergence`` (convergence rate of the search over models and targets).
``counters`` (our MAC count against fvcore / torch-pruning / the paper, and counting speed),
``budget`` (budget-solver accuracy on the paper's targets, and its cost against one prune),
``speedup`` (measured speedup against MAC reduction), ``paper`` (the paper's models and
targets), ``machine`` (machine, date and versions stamped on every table in ``data/``).
"""

from .adaptation import adapt_cifar_resnet
from .budget import budget_cost, budget_targets
from .convergence import convergence_study, summarise_convergence
from .counters import counter_agreement, mac_breakdown, profiling_speed
from .kd import kd_study
from .machine import annotate, machine_info, write_table
from .speedup import speedup_study

__all__ = ["convergence_study", "summarise_convergence"]
__all__ += ["adapt_cifar_resnet", "kd_study"]
__all__ += [
    "annotate", "budget_cost", "budget_targets", "counter_agreement", "mac_breakdown", "machine_info",
    "profiling_speed", "speedup_study", "write_table",
]
