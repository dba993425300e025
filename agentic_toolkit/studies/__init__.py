"""Experiment drivers, one module per study; notebooks and ``benchmarks/`` both call them.

``convergence`` (convergence rate of the search over models and targets).
"""

from .convergence import convergence_study, summarise_convergence

__all__ = ["convergence_study", "summarise_convergence"]
