"""Drivers that reproduce this repository's own tables and figures, on fixed models, data and
variants: one module per study. Notebooks, ``benchmarks/`` and ``scripts/`` call them; they are
not the library (``agentic_toolkit``, which never imports them).

``convergence`` (convergence rate of the search over models and targets), ``counters`` (our
MAC count against fvcore / torch-pruning / the paper, and counting speed), ``budget``
(budget-solver accuracy on the paper's targets, and its cost against one prune), ``speedup``
(measured speedup against MAC reduction), ``at_budget`` and ``proxy_fidelity`` (accuracy at
equal MACs, and the proxies' fidelity; runner ``at_budget_run``), ``adaptation`` and ``kd``
(the adapted CIFAR baselines, the distillation study), ``latency_*`` (latency budgets),
``local_llm`` (a local LLM server for the agent loop), ``search_pareto`` (the presets against
the peers), ``zoo`` (which models prune), ``paper`` (the paper's models and targets),
``common`` (where the tables go). The table I/O they use is :mod:`agentic_toolkit.tables`.
"""
