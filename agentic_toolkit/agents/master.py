"""The Master agent: propose -> (solve the ratio) -> prune a copy -> measure -> score -> record.

Each revision appends one record to the history (a JSONL file when ``log_path`` is given,
flushed at once), checks for divergence and decides whether to stop. Every decision is a
function of the recorded history only, so ``resume=True`` continues a killed search exactly
where it stopped: finished revisions are read back, never redone.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ToolkitError
from ..pruning.strategy import Strategy
from ..units import format_macs, parse_macs
from .analysis import _check_tolerance, propose_strategy
from .backends import Backend, make_backend
from .history import FORMAT_VERSION, HistoryLog, MemoryLog

#: Header fields that must match for ``resume=True`` to continue a log.
RESUME_KEYS = ("target_macs", "tolerance", "solve_budget", "base_macs", "weights_sha256", "base_strategy", "backend_name")


@dataclass
class SearchResult:
    """Outcome of :func:`run_agentic_pruning`.

    ``model`` is the best pruned model (in band with the best score; without an in-band
    candidate the one closest to the target, and ``converged`` is False).
    """

    converged: bool
    model: nn.Module | None
    strategy: Strategy | None
    macs: int | None
    params: int | None
    score: float | None
    revisions: int
    history: Any  # pandas.DataFrame, one row per revision
    target_macs: int
    base_macs: int
    tolerance: tuple[float, float]
    best_revision: int | None = None
    first_in_band: int | None = None
    stop_reason: str = ""
    backend: str = ""
    log_path: str | None = None
    records: list[dict] = field(default_factory=list, repr=False)

    @property
    def error_pct(self) -> float | None:
        """Achieved MACs vs target, in percent (negative: under the target)."""
        return None if self.macs is None else 100.0 * (self.macs - self.target_macs) / self.target_macs

    def to_dict(self) -> dict:
        """JSON-ready summary (no model, no prompts)."""
        return {
            "converged": self.converged,
            "target_macs": self.target_macs,
            "achieved_macs": self.macs,
            "base_macs": self.base_macs,
            "error_pct": None if self.error_pct is None else round(self.error_pct, 4),
            "params": self.params,
            "score": self.score,
            "revisions": self.revisions,
            "first_in_band": self.first_in_band,
            "best_revision": self.best_revision,
            "stop_reason": self.stop_reason,
            "backend": self.backend,
            "tolerance": list(self.tolerance),
            "strategy": None if self.strategy is None else self.strategy.to_dict(),
            "log_path": self.log_path,
        }

    def summary(self) -> str:
        """One paragraph for a notebook or the CLI."""
        if self.macs is None:
            return f"no candidate could be measured in {self.revisions} revision(s) ({self.stop_reason})"
        state = "converged" if self.converged else "did NOT converge"
        score = f", score {self.score:.4g}" if self.score is not None else ""
        return (
            f"{state}: {format_macs(self.macs)} MACs vs target {format_macs(self.target_macs)} "
            f"({self.error_pct:+.2f}%) after {self.revisions} revision(s), best at revision "
            f"{self.best_revision}{score}; stop: {self.stop_reason}"
        )


# --- pure decisions on the recorded history -------------------------------------------------------
def check_divergence(errors_pct: list[float]) -> str | None:
    """Divergence of the last three out-of-band errors (percent), or None.

    * not shrinking: ``|e3| >= |e2| >= |e1|``;
    * sign oscillation: the signs alternate and ``|e3| > |e1| / 2`` (not halving).
    """
    if len(errors_pct) < 3:
        return None
    e1, e2, e3 = errors_pct[-3:]
    if abs(e3) >= abs(e2) >= abs(e1):
        return f"error not shrinking over 3 revisions ({e1:+.2f}%, {e2:+.2f}%, {e3:+.2f}%)"
    if e1 * e2 < 0 and e2 * e3 < 0 and abs(e3) > 0.5 * abs(e1):
        return f"sign oscillation over 3 revisions ({e1:+.2f}%, {e2:+.2f}%, {e3:+.2f}%)"
    return None


def _recent_out_of_band_errors(revs: list[dict]) -> list[float]:
    """Errors of the trailing run of measured, out-of-band revisions (an in-band one resets it)."""
    out: list[float] = []
    for r in revs:
        if r.get("in_band"):
            out = []
        elif r.get("error_pct") is not None:
            out.append(float(r["error_pct"]))
    return out


def best_revision(revs: list[dict]) -> dict | None:
    """The best record: in band with the highest score (earliest on ties), else the closest."""
    in_band = [r for r in revs if r.get("in_band")]
    if in_band:
        return max(
            in_band,
            key=lambda r: (r["score"] if r.get("score") is not None else -math.inf, -r["revision"]),
        )
    measured = [r for r in revs if r.get("achieved_macs")]
    if not measured:
        return None
    return min(measured, key=lambda r: (abs(r["error_pct"]), r["revision"]))


def stop_reason(revs: list[dict], *, max_revisions: int, has_evaluator: bool, patience: int) -> str | None:
    """Why the search should stop after these revisions, or None to go on."""
    if not revs:
        return None
    last = revs[-1]
    if last.get("stop"):
        return last["stop"]
    in_band = [r for r in revs if r.get("in_band")]
    if in_band and not has_evaluator:
        return "converged"
    if in_band and has_evaluator:
        best = best_revision(revs)
        after = [r for r in revs if r["revision"] > best["revision"]]
        if len(after) >= patience:
            return f"converged; no better score in the last {patience} revision(s)"
    if len(revs) >= max_revisions:
        return "converged; max revisions reached" if in_band else "max revisions reached without a candidate in band"
    return None


# --- helpers --------------------------------------------------------------------------------------
def _model_name(model: nn.Module, given: str | None) -> str:
    if given:
        return given
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)


def _validate(target_macs, tolerance, max_revisions, patience, evaluator, model, example_inputs) -> tuple[int, tuple[float, float]]:
    if not isinstance(model, nn.Module):
        raise ToolkitError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = parse_macs(target_macs)
    tol = _check_tolerance(tolerance)
    if isinstance(max_revisions, bool) or not isinstance(max_revisions, int) or max_revisions < 1:
        raise ToolkitError(f"max_revisions must be an integer >= 1, got {max_revisions!r}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ToolkitError(f"patience must be an integer >= 1, got {patience!r}")
    if example_inputs is None:
        raise ToolkitError("example_inputs is required, e.g. torch.randn(1, 3, 224, 224)")
    if evaluator is not None and not callable(evaluator):
        raise ToolkitError("evaluator must be a callable model -> score (higher is better), or None")
    return target, tol


def weights_fingerprint(model: nn.Module) -> str | None:
    """sha256 of every parameter and buffer (names, shapes, values); None on the meta device.

    Recorded in the history header so that ``resume=True`` refuses a different model (e.g. a
    fresh random initialisation), whose pruning would not reproduce the recorded revisions.
    """
    import hashlib

    digest = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            return None
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _budget_info(fit) -> dict:
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


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="rev", leave=False)


def history_frame(records: list[dict]):
    """The revision records as a DataFrame (strategy fields flattened for plotting)."""
    import pandas as pd

    rows = []
    for r in records:
        if r.get("type") != "revision":
            continue
        row = dict(r)
        s = r.get("strategy") or {}
        row["pruning_ratio"] = s.get("pruning_ratio")
        row["importance"] = s.get("importance")
        row["multipliers"] = s.get("multipliers")
        rows.append(row)
    front = [
        "revision", "backend", "proposer", "pruning_ratio", "multipliers", "importance", "achieved_macs",
        "error_pct", "in_band", "score", "fallback", "repaired", "divergence", "error", "elapsed_s",
    ]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=front)
    return df[[c for c in front if c in df] + [c for c in df.columns if c not in front]]


# --- the Master agent ----------------------------------------------------------------------------
def run_agentic_pruning(
    model: nn.Module,
    target_macs: int | float | str,
    example_inputs,
    *,
    tolerance: tuple[float, float] = (1.0, 5.0),
    max_revisions: int = 5,
    backend: str | Backend | Callable[[str], str] = "analyst",
    evaluator: Callable[[nn.Module], float] | None = None,
    calibration=None,
    solve_budget: bool = True,
    log_path: str | Path | None = None,
    resume: bool = False,
    base_strategy: Strategy | None = None,
    prompt: str | Path | None = None,
    repair_prompt: str | Path | None = None,
    patience: int = 2,
    model_name: str | None = None,
    progress: bool = True,
    plan=None,
    on_revision: Callable[[dict], None] | None = None,
) -> SearchResult:
    """Search a pruning strategy that lands ``model`` in the MAC band around ``target_macs``.

    Each revision: the Analysis agent (``backend``) proposes a strategy from the profile,
    the scopes and the history; with ``solve_budget`` :func:`~agentic_toolkit.fit_to_budget`
    sets its global ratio (otherwise the proposer's ratio is used as is, the paper's
    setting); a copy of ``model`` is pruned and measured; an in-band candidate is scored
    with ``evaluator`` (higher is better, e.g. :func:`~agentic_toolkit.proxy_accuracy`).
    Without an evaluator the search stops at the first in-band candidate; with one it goes
    on exploring until ``patience`` revisions bring no better score (or ``max_revisions``).

    ``tolerance=(over, under)`` in percent: at most ``over`` % above and ``under`` % below
    the target. The history goes to ``log_path`` (JSONL, flushed every revision);
    ``resume=True`` continues a killed search from it. Bad input raises
    :class:`~agentic_toolkit.errors.ToolkitError` before any work is done.

    ``plan`` (a :class:`~agentic_toolkit.pruning.plan.PrunePlan` of this model, e.g. ``BudgetFit.plan``)
    reuses a dependency graph and importance scores across searches of the same model.
    ``on_revision(record)`` is called with each revision's record as soon as it is logged
    (also for revisions read back on resume), e.g. to update a live table or plot.
    """
    target, tol = _validate(target_macs, tolerance, max_revisions, patience, evaluator, model, example_inputs)
    engine = make_backend(backend)
    base_strategy = base_strategy or Strategy()
    if not isinstance(base_strategy, Strategy):
        raise ToolkitError(f"base_strategy must be a Strategy, got {type(base_strategy).__name__}")
    log = HistoryLog(log_path, engine.secrets(), resume=resume) if log_path else MemoryLog(engine.secrets())

    from ..profiling.profile import profile_macs
    from ..pruning.apply import apply_isomorphic_prune, get_plan
    from ..pruning.budget import fit_to_budget

    profile = profile_macs(model, example_inputs=example_inputs)
    # one dependency graph + importance scores for the whole search (what describe_scopes,
    # fit_to_budget and apply_isomorphic_prune would each rebuild otherwise)
    plan = get_plan(model, example_inputs, calibration, plan)
    base_macs = int(plan.base_macs)
    low, high = target * (1 - tol[1] / 100.0), target * (1 + tol[0] / 100.0)
    if base_macs <= high:
        raise ToolkitError(
            f"the model has {format_macs(base_macs)} MACs, already within or below the band around "
            f"the target {format_macs(target)}: nothing to prune"
        )
    scopes = plan.describe()
    header = {
        "type": "header",
        "version": FORMAT_VERSION,
        "model": _model_name(model, model_name),
        "target_macs": target,
        "tolerance": list(tol),
        "max_revisions": max_revisions,
        "solve_budget": bool(solve_budget),
        "base_macs": base_macs,
        "base_params": int(getattr(profile, "params", 0) or 0),
        "weights_sha256": weights_fingerprint(model),
        "base_strategy": base_strategy.to_dict(),
        "backend_name": engine.name,
        "backend": engine.describe(),
        "evaluator": evaluator is not None,
        "patience": patience,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    existing = log.records
    if existing:
        old = existing[0]
        if old.get("type") != "header":
            raise ToolkitError(f"{log.path} is not a search history (no header line)")
        diff = [k for k in RESUME_KEYS if old.get(k) != log.redact(_roundtrip(header[k]))]
        if diff:
            raise ToolkitError(
                f"cannot resume {log.path}: it was started with different settings ("
                + ", ".join(f"{k}: {old.get(k)!r} vs now {header[k]!r}" for k in diff)
                + "); use a new log path"
            )
    else:
        log.append(header)
    revs = [r for r in log.records if r.get("type") == "revision"]
    n_before = len(revs)
    if on_revision is not None:
        for r in revs:
            on_revision(r)
    done_result = next((r for r in log.records if r.get("type") == "result"), None)

    held_model: tuple[int, nn.Module] | None = None  # (revision, pruned model) of the best so far
    takeover = any(r.get("takeover") for r in revs)
    reason = stop_reason(revs, max_revisions=max_revisions, has_evaluator=evaluator is not None, patience=patience)
    bar = _progress(max_revisions, len(revs), progress and reason is None, f"search {format_macs(target)}")
    try:
        while reason is None:
            revision = len(revs) + 1
            t0 = time.perf_counter()
            use = "analyst" if takeover else engine
            proposal = propose_strategy(
                profile, scopes, revs, target, tol, backend=use, prompt=prompt, repair_prompt=repair_prompt,
                base_macs=base_macs, revision=revision, max_revisions=max_revisions,
                solve_budget=solve_budget, base_strategy=base_strategy,
            )
            record: dict[str, Any] = {"type": "revision", "revision": revision, **proposal.to_record()}
            record["backend"] = engine.name
            if takeover:
                record["proposer"] = "analyst"
                record["takeover"] = True
            seen = [_shape(r.get("proposed"), solve_budget) for r in revs]
            if engine.is_llm and not takeover and _shape(record["proposed"], solve_budget) in seen:
                # a repeated strategy teaches nothing: the analyst proposes this revision instead
                alt = propose_strategy(
                    profile, scopes, revs, target, tol, backend="analyst", prompt=prompt,
                    base_macs=base_macs, revision=revision, max_revisions=max_revisions,
                    solve_budget=solve_budget, base_strategy=base_strategy,
                )
                record.update(proposer="analyst", proposed=alt.strategy.to_dict(), llm_proposed=record["proposed"],
                              rationale=f"[{engine.name} repeated an earlier strategy; analyst proposed] {alt.rationale}")
                proposal = alt
            strategy = proposal.strategy
            if _shape(record["proposed"], solve_budget) in seen:
                # nothing new to try; no record is written, so a resumed run stops here again
                reason = "no new strategy to try (the proposer repeated an earlier strategy)"
                break
            record.update(strategy=None, achieved_macs=None, params=None, error_pct=None, in_band=False, score=None)
            try:
                if solve_budget:
                    with warnings.catch_warnings():  # an out-of-band fit is recorded, not warned
                        warnings.simplefilter("ignore")
                        fit = fit_to_budget(
                            model, strategy, target, example_inputs, tolerance=tol, calibration=calibration, plan=plan
                        )
                    strategy = fit.strategy
                    record["budget"] = _budget_info(fit)
                    result = fit.prune()
                else:
                    result = apply_isomorphic_prune(model, strategy, example_inputs, calibration=calibration, plan=plan)
            except ToolkitError as exc:
                record["error"] = str(exc).splitlines()[0][:500]
                result = None
            record["strategy"] = strategy.to_dict()
            if result is not None:
                macs = int(result.macs)
                record["achieved_macs"] = macs
                record["params"] = int(result.params) if getattr(result, "params", None) is not None else None
                record["error_pct"] = round(100.0 * (macs - target) / target, 6)
                record["in_band"] = bool(low <= macs <= high)
                if record["in_band"] and evaluator is not None:
                    record["score"] = float(evaluator(result.model))
            divergence = check_divergence(_recent_out_of_band_errors([*revs, record]))
            if divergence:
                record["divergence"] = divergence
                if engine.is_llm and not takeover:
                    takeover = True  # hand the remaining revisions to the analyst
                    record["note"] = "divergence: the analyst takes over the remaining revisions"
                else:
                    record["stop"] = f"diverged: {divergence}"
            record["elapsed_s"] = round(time.perf_counter() - t0, 3)
            revs.append(log.append(record))
            if on_revision is not None:
                on_revision(revs[-1])
            best = best_revision(revs)
            if result is not None and best is not None and best["revision"] == revision:
                held_model = (revision, result.model)
            del result
            bar.update(1)
            if record.get("error_pct") is not None:
                bar.set_postfix(error=f"{record['error_pct']:+.2f}%", refresh=False)
            reason = stop_reason(revs, max_revisions=max_revisions, has_evaluator=evaluator is not None, patience=patience)
    finally:
        bar.close()

    best = best_revision(revs)
    best_model = None
    if best is not None:
        if held_model is not None and held_model[0] == best["revision"]:
            best_model = held_model[1]
        else:  # finished in an earlier session: rebuild (pruning is deterministic for a strategy)
            rebuilt = apply_isomorphic_prune(
                model, Strategy.from_dict(best["strategy"]), example_inputs, calibration=calibration, plan=plan
            )
            if int(rebuilt.macs) != int(best["achieved_macs"]):
                raise ToolkitError(
                    f"rebuilding revision {best['revision']} gave {rebuilt.macs} MACs, the log says "
                    f"{best['achieved_macs']}: the model or pruning code changed since the log was written"
                )
            best_model = rebuilt.model
    converged = bool(best is not None and best.get("in_band"))
    first = next((r["revision"] for r in revs if r.get("in_band")), None)
    out = SearchResult(
        converged=converged,
        model=best_model,
        strategy=Strategy.from_dict(best["strategy"]) if best is not None else None,
        macs=int(best["achieved_macs"]) if best is not None else None,
        params=best.get("params") if best is not None else None,
        score=best.get("score") if best is not None else None,
        revisions=len(revs),
        history=history_frame(revs),
        target_macs=target,
        base_macs=base_macs,
        tolerance=tol,
        best_revision=best["revision"] if best is not None else None,
        first_in_band=first,
        stop_reason=reason or "",
        backend=engine.name,
        log_path=str(log.path) if log.path else None,
        records=revs,
    )
    if done_result is None or len(revs) > n_before:
        log.append({"type": "result", **out.to_dict()})
    return out


def _shape(strategy: dict | None, solve_budget: bool) -> str | None:
    """What makes two proposals the same: everything, or everything but the ratio when it is solved."""
    import json

    if strategy is None:
        return None
    return json.dumps({k: v for k, v in strategy.items() if not (solve_budget and k == "pruning_ratio")}, sort_keys=True)


def _roundtrip(value):
    import json

    return json.loads(json.dumps(value, sort_keys=True))


__all__ = ["SearchResult", "run_agentic_pruning", "check_divergence", "best_revision", "stop_reason", "history_frame"]
