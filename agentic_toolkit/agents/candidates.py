"""The Master's work on one candidate: prune (and solve the ratio), or rebuild a logged one.

Helpers of :class:`~agentic_toolkit.agents.search.AgenticSearch`, kept apart so that the
loop itself stays short: :func:`prune_candidate` prunes a copy for a proposed strategy
(unless it is identical to a candidate already scored: :func:`duplicate_of`),
:func:`measure_candidate` measures and scores it into its record,
:func:`rebuild_candidate` rebuilds the pruned model of a revision finished in an earlier
session (pruning is deterministic for a strategy), :func:`revision_budget` chooses
``max_revisions`` and ``patience`` when they are not given, :func:`search_header` is the
first line of a history.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..errors import ToolkitError
from ..pruning.strategy import Strategy
from .checks import weights_fingerprint
from .decisions import default_patience, default_revision_budget
from .history import FORMAT_VERSION
from .identity import calibration_fingerprint, evaluator_identity, score_model, text_sha256
from .incumbent import score_se
from .keys import cuts_key, widths_key
from .prompting import template_text


@dataclass
class Candidate:
    """One proposed strategy as the Master prepared it.

    ``strategy`` as applied (with the solved ratio); ``result`` the pruned copy (None for a
    duplicate, which is not pruned); ``budget`` what the solver found; ``keys`` its
    ``widths_key`` and ``cuts_key`` (:mod:`~agentic_toolkit.agents.keys`; empty when
    they could not be computed); ``duplicate`` the earlier scored record it equals.
    """

    strategy: Strategy
    result: Any = None
    budget: dict | None = None
    keys: dict = field(default_factory=dict)
    duplicate: dict | None = None


def candidate_keys(plan, strategy: Strategy, selection=None) -> dict:
    """``{"widths_key", "cuts_key"}`` of ``strategy`` (at its ratio) on ``plan``; {} when
    the plan cannot select it (the pruning step then reports why)."""
    try:
        sel = plan.select(strategy) if selection is None else selection
        return {"widths_key": widths_key(plan, strategy, sel), "cuts_key": cuts_key(plan, strategy, sel)}
    except Exception:  # noqa: BLE001 - an invalid strategy fails (and is recorded) when pruned
        return {}


def duplicate_of(records: list[dict], keys: dict) -> dict | None:
    """The first scored record whose pruned model is identical (same ``cuts_key``: the same
    channels cut in every group, hence the same widths and MACs), or None."""
    key = keys.get("cuts_key")
    if key is None:
        return None
    return next((r for r in records if r.get("cuts_key") == key and r.get("score") is not None), None)


def prune_candidate(search, strategy: Strategy) -> Candidate:
    """The :class:`Candidate` for ``strategy`` on ``search``'s model.

    With ``search.solve_budget`` the global ratio is solved to the budget first (an
    out-of-band fit is recorded, not warned). A candidate identical to one already scored
    (:func:`duplicate_of`, checked on the selection before any cut) is not pruned. Raises
    :class:`ToolkitError` when pruning fails.
    """
    from ..pruning.apply import apply_isomorphic_prune
    from ..pruning.budget import fit_to_budget, recount

    if not search.solve_budget:
        keys = candidate_keys(search.plan, strategy)
        dup = duplicate_of(search.records, keys)
        if dup is not None:
            return Candidate(strategy, keys=keys, duplicate=dup)
        result = recount(apply_isomorphic_prune(
            search.model, strategy, search.example_inputs, calibration=search.calibration, plan=search.plan
        ), search.plan, search.counter)
        return Candidate(strategy, result, keys=keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_to_budget(
            search.model, strategy, search.target_macs, search.example_inputs, tolerance=search.tolerance,
            calibration=search.calibration, plan=search.plan, counter=search.counter,
            **search.fit_kwargs,
        )
    keys = candidate_keys(search.plan, fit.strategy, fit.selection)
    dup = duplicate_of(search.records, keys)
    result = fit.prune() if dup is None else None
    return Candidate(fit.strategy, result, budget_info(fit), keys, dup)


def measure_candidate(search, record: dict, strategy: Strategy) -> nn.Module | None:
    """Prune a copy with ``strategy``, measure (and score) it; fills ``record``.

    Returns the candidate model as scored (the evaluator's copy, e.g. with re-estimated
    BatchNorm statistics), or the pruned model when it was not scored (None on failure, or
    for a duplicate: it is not evaluated, ``duplicate_of`` names the revision whose
    measurements and score it copies).
    """
    record.update(strategy=None, achieved_macs=None, params=None, error_pct=None, in_band=False, score=None)
    try:
        cand = prune_candidate(search, strategy)
    except ToolkitError as exc:
        record["error"] = str(exc).splitlines()[0][:500]
        cand = Candidate(strategy)
    if cand.budget is not None:
        record["budget"] = cand.budget
    record["strategy"] = cand.strategy.to_dict()
    record.update(cand.keys)
    if cand.duplicate is not None:
        record["duplicate_of"] = cand.duplicate["revision"]
        for k in ("achieved_macs", "params", "error_pct", "in_band", "score", "score_se", "eval_images"):
            if k in cand.duplicate:
                record[k] = cand.duplicate[k]
        return None
    if cand.result is None:
        return None
    result, target = cand.result, search.target_macs
    macs = int(result.macs)
    record["achieved_macs"] = macs
    record["params"] = int(result.params) if getattr(result, "params", None) is not None else None
    record["error_pct"] = round(100.0 * (macs - target) / target, 6)
    record["in_band"] = bool(search.band[0] <= macs <= search.band[1])
    cons = (cand.budget or {}).get("constraints")
    if cons:  # other budgets too: in band when every budget is met (MACs may end below their band)
        record["in_band"] = all(c["met"] for c in cons.values())
    if not (record["in_band"] and search.evaluator is not None):
        return result.model
    record["score"], scored = score_model(search.evaluator, result.model)
    if not math.isfinite(record["score"]):  # a failed evaluation: never the best, never built on
        record.update(score=None, error="non-finite score", raw_score=repr(record["score"]))
        return None
    n = getattr(search.evaluator, "eval_images", None)
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        record["eval_images"] = n
        if 0.0 <= record["score"] <= 100.0:  # a percentage: binomial standard error
            record["score_se"] = round(score_se(record["score"], n), 6)
    return scored


def revision_budget(search, max_revisions: int | None, patience: int | None) -> dict:
    """``max_revisions`` and ``patience`` of a search, and how they were chosen.

    Given values are used as given. ``None``: the value logged in a history being resumed
    (so a resumed search keeps its budget, never re-timed); otherwise ``max_revisions``
    comes from one timed ``evaluator(model)`` call on a copy of the unpruned model,
    :func:`~agentic_toolkit.agents.decisions.default_revision_budget` of ``1.5 * t + 1``
    seconds per candidate (fit, prune, score), or 5 without an evaluator; ``patience`` is
    :func:`~agentic_toolkit.agents.decisions.default_patience` of the revision budget.
    Returns ``{"max_revisions", "patience", "chosen"}``, plus ``evaluator_seconds`` and
    ``base_score`` (the unpruned model's score) when timed: the header's ``revision_budget``.
    """
    logged = search.log.records[0] if search.log.records and search.log.records[0].get("type") == "header" else {}
    out: dict[str, Any] = {"max_revisions": max_revisions, "patience": patience, "chosen": "given"}
    if max_revisions is None and isinstance(logged.get("max_revisions"), int):
        out.update({**(logged.get("revision_budget") or {}), "max_revisions": logged["max_revisions"]})
    elif max_revisions is None and search.evaluator is None:
        out.update(max_revisions=5, chosen="default without an evaluator")
    elif max_revisions is None:
        model = copy.deepcopy(search.model)
        t0 = time.perf_counter()
        base_score = float(search.evaluator(model))
        t = time.perf_counter() - t0
        del model
        per = 1.5 * t + 1.0
        out.update(max_revisions=default_revision_budget(per), evaluator_seconds=round(t, 3),
                   base_score=base_score, chosen=f"timed: evaluator {t:.2f} s -> ~{per:.1f} s per candidate")
    if patience is None:
        logged_patience = logged.get("patience")
        out["patience"] = logged_patience if isinstance(logged_patience, int) else default_patience(out["max_revisions"])
    else:
        out["patience"] = patience
    return out


def rebuild_candidate(search, record: dict) -> nn.Module:
    """The pruned model of a logged revision (its MACs must match the log)."""
    from ..pruning.apply import apply_isomorphic_prune
    from ..pruning.budget import recount

    rebuilt = recount(apply_isomorphic_prune(
        search.model, Strategy.from_dict(record["strategy"]), search.example_inputs,
        calibration=search.calibration, plan=search.plan,
    ), search.plan, search.counter)
    if int(rebuilt.macs) != int(record["achieved_macs"]):
        raise ToolkitError(
            f"rebuilding revision {record['revision']} gave {rebuilt.macs} MACs, the log says "
            f"{record['achieved_macs']}: the model or pruning code changed since the log was written"
        )
    return rebuilt.model


def budget_info(fit) -> dict:
    """What the budget solver found, for the revision record (with every budget's target and
    achieved count when there are budgets besides MACs, and the predicted latency)."""
    info = {}
    cons = getattr(fit, "constraints", None) or []
    if any(c.kind != "macs" for c in cons):
        info["constraints"] = {c.kind: c.to_dict() for c in cons}
        info["binding"] = fit.binding
    lat = getattr(fit, "predicted_latency_ms", None)
    if lat is not None:
        info["predicted_latency_ms"] = round(float(lat), 4)
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
        "analysis": text_sha256(template_text(search.prompts.analysis, "analysis")),
        "repair": text_sha256(template_text(search.prompts.repair, "repair")),
        "system": None if system is None else text_sha256(system),
    }
    return {
        "type": "header", "version": FORMAT_VERSION, "model": model_name,
        "target_macs": search.target_macs, "target_given": search.target_given,
        "tolerance": list(search.tolerance),
        "max_revisions": search.max_revisions, "patience": search.patience, "solve_budget": search.solve_budget,
        "revision_budget": search.budget_choice,
        "counter": search.counter,
        "base_macs": search.base_macs, "base_params": int(getattr(search.profile, "params", 0) or 0),
        "weights_sha256": weights_fingerprint(search.model), "base_strategy": search.base_strategy.to_dict(),
        "backend_name": search.engine.name, "backend": search.engine.describe(),
        "evaluator": evaluator_identity(search.evaluator),
        "calibration_sha256": calibration_fingerprint(getattr(search.plan, "calibration", None)),
        "templates": templates, "system_prompt": system,
        "constraints": search.constraints or None, "latency": search.latency,
        "preset": search.preset.name, "sensitivity": search.sensitivity_spec,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _system_text(search) -> str | None:
    """The system template a language model gets: ``system=`` as given, else the backend's own."""
    if search.prompts.system is not None:
        return template_text(search.prompts.system, "system").strip()
    default = getattr(search.engine, "default_system", None)
    return default() if search.engine.is_llm and callable(default) else None


def held_model(search, best: dict | None, held: tuple | None) -> tuple[int, nn.Module, float | None] | None:
    """``(revision, model as scored, score)`` of a search's best revision: the one held since
    it ran (``held``, the same triple), or rebuilt; None without a best revision.

    A revision finished in an earlier session is rebuilt (pruning is deterministic for a
    strategy) and, when it was scored, scored again, which also gives the evaluator's
    copy (e.g. re-estimated BatchNorm statistics); a score that differs from the logged
    one is warned about, and the result reports the new one (``evaluator(model) == score``).
    """
    if best is None:
        return None
    if held is not None and held[0] == best["revision"]:
        return held
    model, score = rebuild_candidate(search, best), best.get("score")
    if score is not None and search.evaluator is not None:
        score, model = score_model(search.evaluator, model)
        if score != best["score"]:
            warnings.warn(
                f"re-scoring revision {best['revision']} gave {score!r}, the log says {best['score']!r} "
                "(a nondeterministic evaluator?); the result reports the new score", stacklevel=3,
            )
    return best["revision"], model, score


__all__ = [
    "Candidate",
    "budget_info",
    "candidate_keys",
    "duplicate_of",
    "held_model",
    "measure_candidate",
    "prune_candidate",
    "rebuild_candidate",
    "revision_budget",
    "search_header",
]
