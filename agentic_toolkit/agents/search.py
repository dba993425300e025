"""The Master agent as a stepwise search: propose -> (solve the ratio) -> prune -> measure -> score -> record.

:class:`AgenticSearch` builds the profile, the pruning plan and the scopes once; each
:meth:`~AgenticSearch.step` runs one revision and appends its record to the history (a
JSONL file when ``log_path`` is given, flushed at once), checks for divergence and decides
whether to stop. Every decision is a function of the recorded history only
(:mod:`~agentic_toolkit.agents.decisions`), so ``resume=True`` continues a killed search
exactly where it stopped: finished revisions are read back, never redone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import ToolkitError
from ..pruning.budget import check_counter
from ..pruning.strategy import Strategy
from ..units import format_macs
from .analysis import check_system, propose_strategy
from .backends import Backend, make_backend
from .backends.analyst import EXHAUSTED
from .candidates import held_model, measure_candidate, revision_budget, search_header
from .checks import check_resume, model_name_of, validate_inputs
from .decisions import (
    best_record,
    check_divergence,
    proposal_key,
    recent_out_of_band_errors,
    stop_reason,
    takeover_active,
)
from .extension import extend_search, open_extensions, resume_budget
from .history import HistoryLog, MemoryLog, history_frame, releases_log_on_error
from .incumbent import DEFAULT_EVAL_IMAGES
from .latency_view import prepare_constraints
from .presets import SearchPreset, search_preset
from .prompting import check_templates
from .result import SearchResult
from .sensitivity import seed_proposals
from .targets import reach_oracle, resolve_target


class AgenticSearch:
    """A search for a pruning strategy that lands ``model`` in the MAC band around ``target_macs``.

    The constructor validates the settings (bad input raises
    :class:`~agentic_toolkit.errors.ToolkitError` before any work is done), then profiles
    the model and builds its pruning plan and scopes once. :meth:`step` runs one revision
    and returns its record; :meth:`run` steps until :attr:`done` and returns :attr:`result`.

    Each revision: the Analysis agent (``backend``) proposes a strategy from the profile,
    the scopes and the history; with ``solve_budget`` :func:`~agentic_toolkit.fit_to_budget`
    sets its global ratio (otherwise the proposer's ratio is used as is, the paper's
    setting); a copy of ``model`` is pruned and measured; an in-band candidate is scored
    with ``evaluator`` (higher is better, e.g. :func:`~agentic_toolkit.proxy_accuracy`).
    Without an evaluator the search stops at the first in-band candidate; with one it goes
    on exploring until ``patience`` revisions bring no kept move (the best is the
    noise-aware incumbent: a candidate replaces it only when it scores more than 2 standard
    errors higher), the analyst has no untried move left, or ``max_revisions``. A candidate
    identical to one already scored (the same channels cut in every group, e.g. every stage
    scaled by one factor under the solver) is not evaluated: its record copies the earlier
    score and says ``duplicate_of``. ``max_revisions=None`` times one ``evaluator(model)``
    call and runs as many revisions as fit in about 15 minutes (5 to 25; 5 without an
    evaluator); ``patience=None`` is a third of that (at least 3); a resumed search reuses
    the values its history logged.
    A language model that diverges (error not shrinking, or oscillating) hands the
    remaining revisions to the offline analyst (decided on, and written into, the
    revision where it diverged: its ``handover`` field).

    ``target_macs`` is a count (``4.16e9``, ``"450M"``) or a share of the model's MACs in
    ``counter`` (``"50%"``; the header records the resolved count and ``target_given``).
    ``tolerance=(over, under)`` in percent: at most ``over`` % above and ``under`` % below
    the target. The history goes to ``log_path`` (JSONL, flushed every revision);
    ``resume=True`` continues a killed search from it (the finished revisions are read
    back, not redone) and replays the uninterrupted search exactly; the header records what
    decides the outcome (settings, weights, backend, evaluator and a fingerprint of its
    data, calibration, template hashes) and a resume with anything different raises
    :class:`~agentic_toolkit.errors.ToolkitError` naming each field. ``prompt``,
    ``repair_prompt`` and ``system`` replace the packaged templates (text or a Path).
    ``plan`` (a :class:`~agentic_toolkit.PrunePlan` of this model, e.g.
    ``BudgetFit.plan``) reuses a dependency graph and importance scores across searches.
    ``on_revision(record)`` is called with each revision's record as soon as it is logged
    (also for the revisions read back on resume). ``counter`` is the MAC convention the
    target, the band and every MAC number of the search are in: ``"macs"`` (default) or
    ``"torch_pruning"`` (``count_ops_and_params``, the paper's; see
    :func:`~agentic_toolkit.fit_to_budget`); the header and the result record it.
    ``preset`` (``"fast"``, ``"default"``, ``"thorough"``: :func:`~agentic_toolkit.list_search_presets`)
    bundles the settings below that trade search seconds for accuracy; a setting given
    explicitly wins. With an evaluator, every preset lets the Profiling agent measure each
    channel group's sensitivity first (the ``default``: 2 of 3 shares per group, adaptively,
    scored by a cheap loss probe on the evaluator's first held-out images); revisions 2 and 3
    are then its two allocations for the target (per MAC saved, and by threshold as FastNAS
    does; see :mod:`~agentic_toolkit.agents.sensitivity`), and the analyst explores from the
    best so far. The table is logged (``type: sensitivity``) and read back on resume.
    ``sensitivity=False`` turns it off, a measured
    :class:`~agentic_toolkit.agents.sensitivity.SensitivityTable` is used as given.
    ``constraints`` budgets parameters and/or latency besides the MAC target (as
    :func:`~agentic_toolkit.fit_to_budget`'s, e.g. ``{"latency": "60%", "params": "15M"}``,
    latency on ``device`` with ``threads``; ``latency_model=`` reuses a measured table): every
    candidate is solved to meet all of them, and it counts as in band when all are met (the
    binding one in its band, the others at or below; MACs may then end below the MAC band).
    With a latency table the prompt's scope table shows each scope's latency share and
    latency per MAC (:mod:`~agentic_toolkit.agents.latency_view`).
    """

    @releases_log_on_error
    def __init__(
        self,
        model: nn.Module,
        target_macs: int | float | str,
        example_inputs,
        *,
        tolerance: tuple[float, float] = (1.0, 5.0),
        max_revisions: int | None = None,
        backend: str | Backend | Callable[[str], str] = "analyst",
        evaluator: Callable[[nn.Module], float] | None = None,
        calibration=None,
        solve_budget: bool = True,
        log_path: str | Path | None = None,
        resume: bool = False,
        base_strategy: Strategy | None = None,
        prompt: str | Path | None = None,
        repair_prompt: str | Path | None = None,
        system: str | Path | None = None,
        patience: int | None = None,
        model_name: str | None = None,
        progress: bool = True,
        plan=None,
        on_revision: Callable[[dict], None] | None = None,
        counter: str = "macs",
        sensitivity=None,
        constraints: dict | None = None,
        device: str = "cpu",
        threads: int | None = None,
        latency_model=None,
        preset: str | SearchPreset = "default",
    ):
        self.target_macs, self.tolerance = validate_inputs(
            target_macs, tolerance, max_revisions, patience, evaluator, model, example_inputs
        )
        self.counter = check_counter(counter)
        self.engine = make_backend(backend)
        check_system(self.engine, system)
        check_templates(analysis=prompt, repair=repair_prompt, system=system)
        self.base_strategy = base_strategy or Strategy()
        if not isinstance(self.base_strategy, Strategy):
            raise ToolkitError(f"base_strategy must be a Strategy, got {type(self.base_strategy).__name__}")
        self.model, self.example_inputs, self.evaluator, self.calibration = model, example_inputs, evaluator, calibration
        self.solve_budget = bool(solve_budget)
        #: Scored images a record without ``eval_images`` is assumed to have (for standard errors).
        self.eval_images = getattr(evaluator, "eval_images", None) or DEFAULT_EVAL_IMAGES
        self.prompt, self.repair_prompt, self.system = prompt, repair_prompt, system
        self.progress, self.on_revision = progress, on_revision
        secrets = self.engine.secrets()
        self.log = HistoryLog(log_path, secrets, resume=resume) if log_path else MemoryLog(secrets)
        self._prepare(plan)
        prepare_constraints(self, constraints, device, threads, latency_model)
        self.preset = search_preset(preset)
        self.seeds, self.sensitivity, self.sensitivity_spec = seed_proposals(self, sensitivity, self.preset)
        resuming = bool(self.log.records) and self.log.records[0].get("type") == "header"
        if max_revisions is None and evaluator is not None and not resuming:  # a resumed one keeps its logged budget
            max_revisions = self.preset.max_revisions
        #: How ``max_revisions`` and ``patience`` were chosen (the header's ``revision_budget``).
        self.budget_choice = revision_budget(self, max_revisions, patience)
        self.max_revisions, self.patience = self.budget_choice["max_revisions"], self.budget_choice["patience"]
        self.max_revisions, extra = resume_budget(self.log.records, self.max_revisions)
        self._open_history(model_name_of(model, model_name))
        open_extensions(self, extra)  # the logged extensions (and ``extra`` more revisions)
        #: The Master's stop decision (None while the search goes on).
        self.stop_reason: str | None = self._stop_reason()
        self._finish_if_done()

    # --- construction -------------------------------------------------------------------------
    def _prepare(self, plan) -> None:
        """Profile, plan (one dependency graph + importance scores for the whole search), scopes."""
        from ..profiling.profile import profile_macs
        from ..pruning.apply import get_plan

        self.profile = profile_macs(self.model, example_inputs=self.example_inputs)
        self.plan = get_plan(self.model, self.example_inputs, self.calibration, plan)
        self.base_macs = int(self.plan.base_count(self.counter))
        self.target_given, self.target_macs = self.target_macs, resolve_target(self.target_macs, self.base_macs)
        over, under = self.tolerance
        self.band = (self.target_macs * (1 - under / 100.0), self.target_macs * (1 + over / 100.0))
        if self.base_macs <= self.band[1]:
            raise ToolkitError(
                f"the model has {format_macs(self.base_macs)} MACs, already within or below the band around "
                f"the target {format_macs(self.target_macs)}: nothing to prune"
            )
        self.scopes = self.plan.describe()

    def _open_history(self, model_name: str) -> None:
        """Write the header of a new history, or check and read back the one being resumed."""
        header = search_header(self, model_name)
        if self.log.records:
            check_resume(self.log, header)
        else:
            self.log.append(header)
            if self.sensitivity is not None:  # read back on resume instead of measured again
                self.log.append({"type": "sensitivity", **self.sensitivity.to_dict()}, redact=False)
        #: The revision records so far (as logged), oldest first.
        self.records: list[dict] = [r for r in self.log.records if r.get("type") == "revision"]
        if self.on_revision is not None:
            for r in self.records:
                self.on_revision(r)
        #: The analyst proposes every remaining revision (after an LLM diverged).
        self.takeover = takeover_active(self.records)
        self._result_logged = self.log.records[-1].get("type") == "result"  # not followed by an extension
        self._held: tuple[int, nn.Module, float | None] | None = None  # (revision, model as scored, score)
        self._result: SearchResult | None = None

    # --- state ----------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the Master decided to stop (see :attr:`stop_reason`)."""
        return self.stop_reason is not None

    @property
    def history(self):
        """The revisions so far as a pandas DataFrame (one row per revision)."""
        return history_frame(self.records)

    @property
    def result(self) -> SearchResult:
        """The :class:`SearchResult` of the revisions so far, holding the best pruned model.

        Available at any time; before :attr:`done` its ``stop_reason`` is empty.
        """
        if self._result is None:
            self._result = self._build_result()
        return self._result

    # --- running ----------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        """Step until the search is done; returns :attr:`result` (at once if already done)."""
        from tqdm.auto import tqdm

        enabled = self.progress and not self.done
        with tqdm(total=self.max_revisions, initial=len(self.records), disable=not enabled,
                  desc=f"search {format_macs(self.target_macs)}", unit="rev", leave=False) as bar:
            while not self.done:
                record = self.step()
                if record["type"] == "revision":
                    bar.update(1)
                    if record.get("error_pct") is not None:
                        bar.set_postfix(error=f"{record['error_pct']:+.2f}%", refresh=False)
        return self.result

    def step(self) -> dict:
        """Run exactly one revision and return its record with the Master's decision.

        The record is the one appended to the history (proposal, rendered ``prompt``,
        ``raw_reply``, ``rationale``, ``strategy``, ``achieved_macs``, ``error_pct``,
        ``in_band``, ``score``, ``divergence``, ``takeover``...) plus two keys that are not
        logged: ``stop_reason`` (None when the search goes on) and ``decision`` (a sentence:
        continue, the analyst takes over, or stop and why). When the proposer can only repeat
        an earlier strategy, or the analyst says it has no untried move left, nothing is
        measured or logged: the returned dict has ``type="stop"``, the proposal and the stop
        reason, and the search is done. A scored revision also has ``eval_images`` and
        ``score_se`` (when the evaluator says how many images it scores), ``widths_key`` and
        ``cuts_key``, and ``duplicate_of`` when it was not evaluated (the same model as that
        revision).

        Raises :class:`~agentic_toolkit.errors.ToolkitError` when the search is already
        :attr:`done` (read :attr:`result` instead).
        """
        if self.done:
            raise ToolkitError(
                f"the search is done ({self.stop_reason}) after {len(self.records)} revision(s); "
                "read .result, .extend(n) it for n more revisions, or start a new AgenticSearch"
            )
        revision = len(self.records) + 1
        t0 = time.perf_counter()
        record, strategy = self._propose(revision)
        seen = [proposal_key(r.get("proposed"), self.solve_budget) for r in self.records]
        exhausted = record.get("proposer") == "analyst" and EXHAUSTED in str(record.get("rationale") or "")
        if exhausted or proposal_key(record["proposed"], self.solve_budget) in seen:
            # nothing new to try; no record is written, so a resumed run stops here again
            self.stop_reason = (
                "the analyst has no untried move left" if exhausted
                else "no new strategy to try (the proposer repeated an earlier strategy)"
            )
            self._result = None
            self._finish_if_done()
            return {**record, "type": "stop", "stop_reason": self.stop_reason, "decision": f"stop: {self.stop_reason}"}
        candidate = self._measure(record, strategy)
        self._decide_divergence(record)
        record["elapsed_s"] = round(time.perf_counter() - t0, 3)
        logged = self.log.append(record)
        self.records.append(logged)
        self._result_logged, self._result = False, None
        if self.on_revision is not None:
            self.on_revision(logged)
        best = self._best()
        if candidate is not None and best is not None and best["revision"] == revision:
            self._held = (revision, candidate, logged["score"])
        del candidate
        self.stop_reason = self._stop_reason()
        self._finish_if_done()
        return {**logged, "stop_reason": self.stop_reason, "decision": self._decision(logged)}

    def extend(self, n: int) -> None:
        """Give the search ``n`` more revisions; :meth:`run` / :meth:`step` then go on from the history.

        Logs an ``extend`` record; ``patience`` counts again from here, and a patience or
        divergence stop is lifted (:mod:`~agentic_toolkit.agents.extension`).

        Args:
            n: how many revisions to add to ``max_revisions`` (an integer >= 1).
        """
        extend_search(self, n)

    # --- one revision -----------------------------------------------------------------------------
    def _propose(self, revision: int) -> tuple[dict[str, Any], Strategy]:
        """This revision's proposal as a record, and its strategy (an LLM repeating itself is replaced)."""
        common = dict(
            base_macs=self.base_macs, revision=revision, max_revisions=self.max_revisions,
            solve_budget=self.solve_budget, base_strategy=self.base_strategy, prompt=self.prompt,
            constraints=self.constraints, latency=self.latency, min_macs=reach_oracle(self.plan, self.counter),
        )
        args = (self.profile, self.scopes, self.records, self.target_macs, self.tolerance)
        use = "analyst" if self.takeover else self.engine
        extra = {} if self.takeover else dict(repair_prompt=self.repair_prompt, system=self.system)
        if 2 <= revision < 2 + len(self.seeds):  # after the reference: the Profiling agent's seeds
            proposal = self.seeds[revision - 2]
            return {"type": "revision", "revision": revision, **proposal.to_record()}, proposal.strategy
        proposal = propose_strategy(*args, backend=use, **extra, **common)
        record: dict[str, Any] = {"type": "revision", "revision": revision, **proposal.to_record()}
        record["backend"] = self.engine.name
        if self.takeover:
            record["proposer"] = "analyst"
            record["takeover"] = True
        seen = [proposal_key(r.get("proposed"), self.solve_budget) for r in self.records]
        if self.engine.is_llm and not self.takeover and proposal_key(record["proposed"], self.solve_budget) in seen:
            # a repeated strategy teaches nothing: the analyst proposes this revision instead
            alt = propose_strategy(*args, backend="analyst", **common)
            record.update(
                proposer="analyst", proposed=alt.strategy.to_dict(), llm_proposed=record["proposed"],
                rationale=f"[{self.engine.name} repeated an earlier strategy; analyst proposed] {alt.rationale}",
            )
            proposal = alt
        return record, proposal.strategy

    def _measure(self, record: dict[str, Any], strategy: Strategy) -> nn.Module | None:
        """Prune a copy with ``strategy``, measure (and score) it; fills ``record``.

        Returns the candidate model as scored (the evaluator's copy, e.g. with re-estimated
        BatchNorm statistics), or the pruned model when it was not scored (None on failure,
        or for a duplicate of a scored candidate, which is not evaluated: ``duplicate_of``).
        See :func:`~agentic_toolkit.agents.candidates.measure_candidate`.
        """
        return measure_candidate(self, record, strategy)

    def _best(self) -> dict | None:
        """The best revision so far (the noise-aware incumbent when there is an evaluator)."""
        return best_record(self.records, scored=self.evaluator is not None, default_images=self.eval_images)

    def _stop_reason(self) -> str | None:
        return stop_reason(
            self.records, max_revisions=self.max_revisions, has_evaluator=self.evaluator is not None,
            patience=self.patience, default_images=self.eval_images, since=self.patience_from,
        )

    def _decide_divergence(self, record: dict[str, Any]) -> None:
        """Divergence of the out-of-band errors: an LLM hands over to the analyst, else stop.

        The hand-over is written into this record (``handover``), so that a search resumed
        after it asks the analyst for the next revision, as the uninterrupted one does.
        """
        divergence = check_divergence(recent_out_of_band_errors([*self.records, record]))
        if not divergence:
            return
        record["divergence"] = divergence
        if self.engine.is_llm and not self.takeover:
            self.takeover = True  # hand the remaining revisions to the analyst
            record["handover"] = "analyst"
            record["note"] = "divergence: the analyst takes over the remaining revisions"
        else:
            record["stop"] = f"diverged: {divergence}"

    def _decision(self, record: dict) -> str:
        if self.stop_reason is not None:
            return f"stop: {self.stop_reason}"
        if record.get("note"):
            return f"continue; {record['note']}"
        return "continue"

    # --- the result -------------------------------------------------------------------------------
    def _build_result(self) -> SearchResult:
        revs = self.records
        best = self._best()
        model, score = held_model(self, best)
        return SearchResult(
            converged=bool(best is not None and best.get("in_band")),
            model=model,
            strategy=Strategy.from_dict(best["strategy"]) if best is not None else None,
            macs=int(best["achieved_macs"]) if best is not None else None,
            params=best.get("params") if best is not None else None,
            score=score,
            revisions=len(revs),
            history=history_frame(revs),
            target_macs=self.target_macs,
            base_macs=self.base_macs,
            tolerance=self.tolerance,
            best_revision=best["revision"] if best is not None else None,
            first_in_band=next((r["revision"] for r in revs if r.get("in_band")), None),
            stop_reason=self.stop_reason or "",
            backend=self.engine.name,
            counter=self.counter,
            log_path=str(self.log.path) if self.log.path else None,
            records=list(revs),
            **SearchResult.usage_fields(revs),
            **SearchResult.gain_fields(revs, best, score, self.base_strategy, self.eval_images),
        )

    def _finish_if_done(self) -> None:
        """Once done, build the result and log its summary line (unless logged already)."""
        if self.done and not self._result_logged:
            self.log.append({"type": "result", **self.result.to_dict()})
            self._result_logged = True

    def close(self) -> None:
        """Release the lock on the history file (also done when the search finishes or is collected)."""
        self.log.close()

    def __repr__(self) -> str:
        state = f"done: {self.stop_reason}" if self.done else "running"
        return (
            f"AgenticSearch(target={format_macs(self.target_macs)}, backend={self.engine.name!r}, "
            f"revisions={len(self.records)}/{self.max_revisions}, {state})"
        )


__all__ = ["AgenticSearch"]
