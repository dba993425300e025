"""The Master's work on one candidate: prune (and solve the ratio), or rebuild a logged one.

Helpers of :class:`~agentic_toolkit.agents.search.AgenticSearch`, kept apart so that the
loop itself stays short: :func:`prune_candidate` prunes a copy for a proposed strategy,
:func:`rebuild_candidate` rebuilds the pruned model of a revision finished in an earlier
session (pruning is deterministic for a strategy), :func:`search_header` is the first line
of a history.
"""

from __future__ import annotations

import time
import warnings

import torch.nn as nn

from ..errors import ToolkitError
from ..pruning.strategy import Strategy
from .checks import weights_fingerprint
from .history import FORMAT_VERSION
from .identity import calibration_fingerprint, evaluator_identity, text_sha256
from .prompting import template_text


def prune_candidate(search, strategy: Strategy):
    """``(strategy as applied, PruneResult, budget info or None)`` for ``search``'s model.

    With ``search.solve_budget`` the global ratio is solved to the budget first (an
    out-of-band fit is recorded, not warned). Raises :class:`ToolkitError` when pruning fails.
    """
    from ..pruning.apply import apply_isomorphic_prune
    from ..pruning.budget import fit_to_budget

    if not search.solve_budget:
        result = apply_isomorphic_prune(
            search.model, strategy, search.example_inputs, calibration=search.calibration, plan=search.plan
        )
        return strategy, result, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_to_budget(
            search.model, strategy, search.target_macs, search.example_inputs, tolerance=search.tolerance,
            calibration=search.calibration, plan=search.plan,
        )
    return fit.strategy, fit.prune(), budget_info(fit)


def rebuild_candidate(search, record: dict) -> nn.Module:
    """The pruned model of a logged revision (its MACs must match the log)."""
    from ..pruning.apply import apply_isomorphic_prune

    rebuilt = apply_isomorphic_prune(
        search.model, Strategy.from_dict(record["strategy"]), search.example_inputs,
        calibration=search.calibration, plan=search.plan,
    )
    if int(rebuilt.macs) != int(record["achieved_macs"]):
        raise ToolkitError(
            f"rebuilding revision {record['revision']} gave {rebuilt.macs} MACs, the log says "
            f"{record['achieved_macs']}: the model or pruning code changed since the log was written"
        )
    return rebuilt.model


def budget_info(fit) -> dict:
    """What the budget solver found, for the revision record."""
    info = {}
    for key in ("predicted_macs", "within_tolerance", "min_macs"):
        val = getattr(fit, key, None)
        if val is not None:
            info[key] = val
    probes = getattr(fit, "probes", None)
    if probes is not None:
        try:
            info["probes"] = len(probes)
        except TypeError:
            info["probes"] = probes
    return info


def search_header(search, model_name: str) -> dict:
    """The history's first line: every setting that decides the outcome, and what it ran on.

    ``templates`` holds the sha256 of the analysis, repair and system templates as given
    (text, file or packaged; the system one is the backend's own unless ``system=`` was
    given, None for a planner or a callable); ``system_prompt`` that system text before
    per-revision fields are filled in (the rendered text of each revision is in its record). See :data:`~agentic_toolkit.agents.checks.RESUME_KEYS` for what resume checks.
    """
    system = _system_text(search)
    templates = {
        "analysis": text_sha256(template_text(search.prompt, "analysis")),
        "repair": text_sha256(template_text(search.repair_prompt, "repair")),
        "system": None if system is None else text_sha256(system),
    }
    return {
        "type": "header", "version": FORMAT_VERSION, "model": model_name,
        "target_macs": search.target_macs, "tolerance": list(search.tolerance),
        "max_revisions": search.max_revisions, "patience": search.patience, "solve_budget": search.solve_budget,
        "base_macs": search.base_macs, "base_params": int(getattr(search.profile, "params", 0) or 0),
        "weights_sha256": weights_fingerprint(search.model), "base_strategy": search.base_strategy.to_dict(),
        "backend_name": search.engine.name, "backend": search.engine.describe(),
        "evaluator": evaluator_identity(search.evaluator),
        "calibration_sha256": calibration_fingerprint(getattr(search.plan, "calibration", None)),
        "templates": templates, "system_prompt": system,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _system_text(search) -> str | None:
    """The system template a language model gets: ``system=`` as given, else the backend's own."""
    if search.system is not None:
        return template_text(search.system, "system").strip()
    default = getattr(search.engine, "default_system", None)
    return default() if search.engine.is_llm and callable(default) else None


__all__ = ["budget_info", "prune_candidate", "rebuild_candidate", "search_header"]
