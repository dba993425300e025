"""The Master agent as a stepwise search: propose -> (solve the ratio) -> prune -> measure -> score -> record.

:class:`AgenticSearch` builds the profile, the pruning plan and the scopes once; each
:meth:`~AgenticSearch.step` runs one revision and appends its record to the history (a
JSONL file with ``SearchLogging(log_path=...)``, flushed at once), checks for divergence and
decides whether to stop. Every decision is a function of the recorded history only
(:mod:`~agentic_toolkit.agents.decisions`), so ``SearchLogging(resume=True)`` continues a killed
search exactly where it stopped: finished revisions are read back, never redone. Its settings
groups are in :mod:`~agentic_toolkit.agents.settings`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ..errors import ToolkitError
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
from .extension import extension_record, extension_state, resume_budget
from .history import HistoryLog, MemoryLog, history_frame, releases_log_on_error
from .incumbent import DEFAULT_EVAL_IMAGES
from .latency_view import budget_view
from .presets import SearchPreset, search_preset
from .result import SearchResult
from .sensitivity import seed_proposals
from .settings import SearchBudget, SearchLogging, SearchPrompts, SearchStart, settings_group
from .targets import reach_oracle, resolve_target


class AgenticSearch:
    """A search for a pruning strategy that lands ``model`` in the MAC band around ``target_macs``.

    The constructor validates the settings (bad input raises
    :class:`~agentic_toolkit.errors.ToolkitError` before any work is done), then profiles
    the model and builds its pruning plan and scopes once. :meth:`step` runs one revision
    and returns its record; :meth:`run` steps until :attr:`done` and returns :attr:`result`.

    Each revision: the Analysis agent (``backend``) proposes a strategy from the profile,
    the scopes and the history; the budget solver sets its global ratio
    (``SearchBudget(solve_budget=False)``: the proposer's ratio as is, the paper's setting);
    a copy of ``model`` is pruned and measured; an in-band candidate is scored with
    ``evaluator``. Without an evaluator the search stops at the first in-band candidate;
    with one it explores until ``patience`` revisions bring no kept move (the best is the
    noise-aware incumbent: a candidate replaces it only when it scores more than 2 standard
    errors higher), the analyst has no untried move left, or ``max_revisions``. A candidate
    identical to one already scored is not evaluated (its record says ``duplicate_of``). A
    language model that diverges hands the remaining revisions to the offline analyst.
    With an evaluator the preset first lets the Profiling agent measure each channel
    group's sensitivity; revisions 2 and 3 are its two allocations for the target
    (:mod:`~agentic_toolkit.agents.sensitivity`). The history header records what decides
    the outcome; a resume with anything different raises naming each field.

    Args:
        model: the model to prune (never changed: candidates are pruned copies).
        target_macs: a count (``4.16e9``, ``"450M"``) or a share of the model's MACs
            (``"50%"``; the header records the resolved count and ``target_given``).
        example_inputs: a batch of inputs to trace the model with, e.g. ``torch.randn(1, 3, 32, 32)``.
        backend: who proposes: ``"analyst"`` (offline), ``"grid"``, ``"claude"``,
            ``"openai"``, a :class:`~agentic_toolkit.agents.backends.Backend` or a
            callable ``prompt -> reply``.
        evaluator: ``model -> score`` (higher is better, e.g. :func:`~agentic_toolkit.proxy_accuracy`).
        preset: ``"fast"``, ``"default"`` or ``"thorough"`` (:func:`~agentic_toolkit.list_search_presets`)
            or a :class:`~agentic_toolkit.SearchPreset`: the sensitivity table and revision budget.
        max_revisions: the revision budget (None: the preset's with an evaluator, 5 without;
            a resumed search keeps its logged budget).
        patience: revisions without a kept move before stopping (None: a third of the budget, at least 3).
        budget: a :class:`~agentic_toolkit.SearchBudget`: tolerance, MAC counter, budgets
            besides MACs and their device, ratio solving.
        start: a :class:`~agentic_toolkit.SearchStart`: a reused plan, calibration batches,
            the reference strategy, the sensitivity table.
        prompts: a :class:`~agentic_toolkit.SearchPrompts`: the prompt templates.
        logging: a :class:`~agentic_toolkit.SearchLogging`: history file, resume, callback, progress bar.

    Returns:
        The search, ready to :meth:`step` or :meth:`run` (:func:`~agentic_toolkit.run_agentic_pruning`
        does both in one call and takes every group field as a flat keyword).

    Example:
        >>> import torch, agentic_toolkit as at
        >>> _ = torch.manual_seed(0)
        >>> model = at.create_model("cifar_resnet20")  # random init
        >>> search = at.AgenticSearch(model, "50%", torch.randn(1, 3, 32, 32), max_revisions=1,
        ...                           budget=at.SearchBudget(tolerance=(2, 2)),
        ...                           logging=at.SearchLogging(progress=False))
        >>> result = search.run()
        >>> result.revisions, search.done, result.macs < result.base_macs
        (1, True, True)
    """

    @releases_log_on_error
    def __init__(
        self,
        model: nn.Module,
        target_macs: int | float | str,
        example_inputs,
        *,
        backend: str | Backend | Callable[[str], str] = "analyst",
        evaluator: Callable[[nn.Module], float] | None = None,
        preset: str | SearchPreset = "default",
        max_revisions: int | None = None,
        patience: int | None = None,
        budget: SearchBudget | None = None,
        start: SearchStart | None = None,
        prompts: SearchPrompts | None = None,
        logging: SearchLogging | None = None,
    ):
        self.budget, self.start = settings_group(budget, SearchBudget), settings_group(start, SearchStart)
        self.prompts, self.logging = settings_group(prompts, SearchPrompts), settings_group(logging, SearchLogging)
        self.target_macs = validate_inputs(target_macs, max_revisions, patience, evaluator, model, example_inputs)
        self.tolerance, self.counter, self.solve_budget = self.budget.tolerance, self.budget.counter, self.budget.solve_budget
        self.engine = make_backend(backend)
        check_system(self.engine, self.prompts.system)
        self.model, self.example_inputs, self.evaluator = model, example_inputs, evaluator
        self.base_strategy, self.calibration = self.start.base_strategy, self.start.calibration
        #: Scored images a record without ``eval_images`` is assumed to have (for standard errors).
        self.eval_images = getattr(evaluator, "eval_images", None) or DEFAULT_EVAL_IMAGES
        self.progress, self.on_revision = self.logging.progress, self.logging.on_revision
        secrets, log_path = self.engine.secrets(), self.logging.log_path
        self.log = HistoryLog(log_path, secrets, resume=self.logging.resume) if log_path else MemoryLog(secrets)
        self._prepare(self.start.plan)
        self.constraints, self.fit_kwargs, self.latency, self.scopes = budget_view(
            self.budget, self.target_macs, self.plan, self.scopes, self.progress)
        self.preset = search_preset(preset)
        self.seeds, self.sensitivity, self.sensitivity_spec = seed_proposals(self, self.start.sensitivity, self.preset)
        resuming = bool(self.log.records) and self.log.records[0].get("type") == "header"
        if max_revisions is None and evaluator is not None and not resuming:  # a resumed one keeps its logged budget
            max_revisions = self.preset.max_revisions
        #: How ``max_revisions`` and ``patience`` were chosen (the header's ``revision_budget``).
        self.budget_choice = revision_budget(self, max_revisions, patience)
        self.max_revisions, self.patience = self.budget_choice["max_revisions"], self.budget_choice["patience"]
        self.max_revisions, extra = resume_budget(self.log.records, self.max_revisions)
        self._open_history(model_name_of(model, self.logging.model_name))
        added, self.patience_from = extension_state(self.log.records)  # the logged extensions
        self.max_revisions += added
        if extra > 0:
            self.extend(extra)
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
        candidate = measure_candidate(self, record, strategy)  # the model as scored (None: failed or a duplicate)
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
        record = extension_record(self, n)
        self.log.append(record)
        self.max_revisions, self.patience_from = record["max_revisions"], record["after_revision"]
        self.stop_reason, self._result, self._result_logged = None, None, False

    # --- one revision -----------------------------------------------------------------------------
    def _propose(self, revision: int) -> tuple[dict[str, Any], Strategy]:
        """This revision's proposal as a record, and its strategy (an LLM repeating itself is replaced)."""
        common = dict(
            base_macs=self.base_macs, revision=revision, max_revisions=self.max_revisions,
            solve_budget=self.solve_budget, base_strategy=self.base_strategy, prompt=self.prompts.analysis,
            constraints=self.constraints, latency=self.latency, min_macs=reach_oracle(self.plan, self.counter),
        )
        args = (self.profile, self.scopes, self.records, self.target_macs, self.tolerance)
        use = "analyst" if self.takeover else self.engine
        extra = {} if self.takeover else dict(repair_prompt=self.prompts.repair, system=self.prompts.system)
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
        best = self._best()
        self._held = held_model(self, best, self._held)
        model, score = self._held[1:] if self._held is not None else (None, None)
        return SearchResult.from_search(self, best, model, score)

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
