"""The Analysis agent: render a prompt, ask a backend for a strategy, validate what comes back.

``propose_strategy`` works with every backend in :mod:`agentic_toolkit.agents.backends`. A
language model's reply is untrusted text: it is parsed as JSON against the
:class:`~agentic_toolkit.pruning.strategy.Strategy` schema (never executed) and must give the
``required`` fields of :func:`~agentic_toolkit.agents.prompting.reply_schema`; an invalid,
empty (``{}``) or truncated reply (cut off at the token limit) gets one repair request
quoting every problem; if that fails too (or the backend is unreachable) the offline analyst
proposes for this revision and the failure is recorded. Token usage and wall time of the
requests are recorded too. The prompt helpers live in :mod:`~agentic_toolkit.agents.prompting`.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ToolkitError
from ..pruning.budget import check_tolerance
from ..pruning.strategy import Strategy, StrategyError
from ..units import parse_macs
from .backends import AnalystBackend, Backend, BackendError, ProposalContext, Reply, make_backend
from .backends.base import cap_reply
from .prompting import (
    REQUIRED_FIELDS,
    ROLES,
    history_table,
    load_prompt,
    prompt_fields,
    render_prompt,
    reply_schema,
    scopes_table,
    template_text,
)

MAX_REPLY_CHARS = 4000  # how much of a bad reply a repair request quotes
TRUNCATED = "the reply was cut off at the token limit (max_tokens) before it was complete"


@dataclass
class Proposal:
    """One proposed strategy and how it came about (all of it is recorded in the history).

    Args:
        strategy: the proposed :class:`~agentic_toolkit.Strategy`.
        rationale: the proposer's reason, in words.
        prompt: the rendered analysis prompt.
        raw_reply: the reply as received (for a planner, its strategy as JSON).
        backend: the backend's name; ``proposer`` who proposed (the analyst on a fallback).
        fallback: the backend's reply was unusable and the analyst proposed instead.
        repaired: the reply was valid only after the repair request.
        errors: what was wrong with the reply; ``repair_prompt`` / ``repair_reply`` the repair exchange.
        meta: backend-specific details.
        system_prompt: the system text sent to a language model (None for a planner).
        llm_input_tokens, llm_output_tokens, llm_seconds: the sum over every request of this
            proposal (the repair request included; tokens None when the backend does not report them).

    Returns:
        :meth:`to_record` gives the JSON-ready fields of a history record.

    Example:
        >>> from agentic_toolkit import Proposal, Strategy
        >>> p = Proposal(Strategy(pruning_ratio=0.3), "start small", "prompt", "{}", "analyst")
        >>> p.proposer, p.to_record()["proposed"]["pruning_ratio"]
        ('analyst', 0.3)
    """

    strategy: Strategy
    rationale: str
    prompt: str
    raw_reply: str
    backend: str
    proposer: str = ""
    fallback: bool = False
    repaired: bool = False
    errors: list[str] = field(default_factory=list)
    repair_prompt: str | None = None
    repair_reply: str | None = None
    meta: dict = field(default_factory=dict)
    system_prompt: str | None = None
    llm_input_tokens: int | None = None
    llm_output_tokens: int | None = None
    llm_seconds: float | None = None

    def __post_init__(self) -> None:
        self.proposer = self.proposer or self.backend

    def to_record(self) -> dict:
        """JSON-ready fields for a history record."""
        return {
            "backend": self.backend,
            "proposer": self.proposer,
            "proposed": self.strategy.to_dict(),
            "rationale": self.rationale,
            "fallback": self.fallback,
            "repaired": self.repaired,
            "backend_errors": list(self.errors),
            "prompt": self.prompt,
            "system_prompt": self.system_prompt,
            "raw_reply": self.raw_reply,
            "repair_prompt": self.repair_prompt,
            "repair_reply": self.repair_reply,
            "backend_meta": self.meta,
            "llm_input_tokens": self.llm_input_tokens,
            "llm_output_tokens": self.llm_output_tokens,
            "llm_seconds": self.llm_seconds,
        }


# --- parsing untrusted replies --------------------------------------------------------------
def _extract_json(text: str) -> Any:
    text = (text or "").strip()
    if not text:
        raise StrategyError(["the reply is empty; expected one JSON object"])
    candidates = [text]
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        candidates.append(fence.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    first_error = None
    for cand in candidates:
        try:
            return json.loads(cand)
        except json.JSONDecodeError as exc:
            first_error = first_error or exc
    raise StrategyError([f"the reply is not valid JSON ({first_error}); expected one JSON object"])


def parse_strategy_reply(
    reply: Reply | str | dict,
    scope_names: Sequence[str] = (),
    base: Strategy | None = None,
    required: Sequence[str] = (),
) -> tuple[Strategy, str]:
    """Validate an untrusted reply into ``(strategy, rationale)``; :class:`StrategyError` lists all problems.

    Fields in ``required`` must be given (the Analysis agent passes
    :data:`~agentic_toolkit.agents.prompting.REQUIRED_FIELDS`, so ``{}`` is refused); other
    missing fields are taken from ``base``; a ``{"strategy": {...}, "rationale": ...}``
    wrapper is accepted; multiplier keys must be known scope names (when ``scope_names`` is
    given). A :class:`Reply` cut off at the token limit (``truncated``), or one with a
    ``problem`` (not decodable, too long: :func:`~agentic_toolkit.agents.backends.base.cap_reply`), is refused.
    """
    if isinstance(reply, Reply) and reply.problem:
        raise StrategyError([reply.problem])
    if isinstance(reply, Reply) and reply.truncated:
        raise StrategyError([TRUNCATED + "; answer again, completely and more briefly"])
    if isinstance(reply, Reply):
        data = reply.data if reply.data is not None else _extract_json(reply.text)
    elif isinstance(reply, dict):
        data = reply
    else:
        data = _extract_json(str(reply))
    if not isinstance(data, dict):
        raise StrategyError([f"expected a JSON object, got {type(data).__name__}"])
    data = dict(data)
    if isinstance(data.get("strategy"), dict):
        outer, data = data, dict(data["strategy"])
        data.setdefault("rationale", outer.get("rationale", ""))
    rationale = data.pop("rationale", "")
    errors = [] if isinstance(rationale, str) else ["rationale must be a string"]
    missing = [f for f in required if f not in data]
    if missing:
        what = "the reply is an empty object" if not data else "the reply lacks required field(s)"
        errors.append(f"{what}: give {', '.join(repr(f) for f in missing)} (required by the schema)")
    merged = (base or Strategy()).to_dict()
    merged.update(data)
    try:
        strategy = Strategy.from_dict(merged)
    except StrategyError as exc:
        errors += exc.errors
        strategy = None
    mult = data.get("multipliers")
    if scope_names and isinstance(mult, dict):
        known = set(scope_names)
        unknown = [k for k in mult if k not in known]
        if unknown:
            listed = ", ".join(list(scope_names)[:40]) + (" ..." if len(scope_names) > 40 else "")
            errors.append(f"unknown scope name(s) in multipliers: {', '.join(map(str, unknown))} (known: {listed})")
    if errors:
        raise StrategyError(errors)
    return strategy, str(rationale)


# --- the agent ------------------------------------------------------------------------------
def _as_records(history) -> tuple[dict, ...]:
    if history is None:
        return ()
    if hasattr(history, "to_dict") and hasattr(history, "columns"):
        history = history.to_dict("records")
    return tuple(dict(r) for r in history if dict(r).get("type", "revision") == "revision")


def build_context(
    profile,
    scopes,
    history,
    target_macs,
    tolerance=(1.0, 5.0),
    *,
    base_macs: int | None = None,
    revision: int | None = None,
    max_revisions: int = 5,
    solve_budget: bool = False,
    base_strategy: Strategy | None = None,
    constraints: dict | None = None,
    latency: dict | None = None,
    min_macs: Callable[[Strategy], int] | None = None,
) -> ProposalContext:
    """Validate the inputs of :func:`propose_strategy` into a :class:`ProposalContext`."""
    target = parse_macs(target_macs)
    tol = check_tolerance(tolerance)
    if base_macs is None:
        if profile is None or not hasattr(profile, "total_macs"):
            raise ToolkitError("pass a MacProfile (profile_macs(model)) or base_macs=...")
        base_macs = int(profile.total_macs)
    records = _as_records(history)
    if revision is None:
        revision = max((int(r.get("revision", 0)) for r in records), default=0) + 1
    return ProposalContext(
        target_macs=target,
        base_macs=int(base_macs),
        tolerance=tol,
        scopes=scopes,
        history=records,
        profile=profile,
        revision=int(revision),
        max_revisions=int(max_revisions),
        solve_budget=bool(solve_budget),
        base_strategy=base_strategy or Strategy(),
        constraints=dict(constraints or {}),
        latency=dict(latency) if latency else None,
        min_macs=min_macs,
    )


def _takes_system(backend: Backend) -> bool:
    """Whether ``backend.request`` accepts ``system=`` (older or third-party backends may not)."""
    try:
        params = inspect.signature(backend.request).parameters
    except (TypeError, ValueError):
        return False
    return "system" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_system(engine: Backend, system: str | Path | None) -> None:
    """:class:`ToolkitError` when a custom ``system`` prompt is given for a backend that cannot take one."""
    if system is not None and engine.is_llm and not _takes_system(engine):
        raise ToolkitError(
            f"the {engine.name} backend takes no system prompt (its request() has no system= "
            "parameter); put the instructions into prompt= instead"
        )


class _Exchange:
    """The requests of one proposal: sends them (with the system prompt), sums usage and time."""

    def __init__(self, backend, system: str | None, custom: bool):
        self.backend = backend
        self.system = system if custom else backend.default_system()
        self.kwargs = {"system": system} if custom else {}
        self.tokens: dict[str, int] = {}
        self.seconds = 0.0

    def send(self, messages: list[dict]) -> Reply:
        t0 = time.perf_counter()
        try:
            reply = cap_reply(self.backend.request(messages, reply_schema(), **self.kwargs))
        except BackendError:
            self.seconds += time.perf_counter() - t0
            raise
        self.seconds += reply.seconds if reply.seconds is not None else time.perf_counter() - t0
        usage = reply.usage or reply.meta.get("usage") or {}
        for key in ("input_tokens", "output_tokens"):
            if isinstance(usage.get(key), int):
                self.tokens[key] = self.tokens.get(key, 0) + usage[key]
        return reply

    def fields(self) -> dict:
        return dict(
            system_prompt=self.system,
            llm_input_tokens=self.tokens.get("input_tokens"),
            llm_output_tokens=self.tokens.get("output_tokens"),
            llm_seconds=round(self.seconds, 3),
        )


def _reply_meta(reply: Reply) -> dict:
    """The reply's meta for the record (timing is in ``llm_seconds``, so a replay compares equal)."""
    meta = {k: v for k, v in reply.meta.items() if k != "seconds"}
    meta["stop_reason"] = reply.stop_reason if reply.stop_reason is not None else meta.get("stop_reason")
    if reply.usage:
        meta["usage"] = dict(reply.usage)
    return meta


def _propose_llm(backend, ctx, prompt_text, repair_template, system: str | None = None) -> Proposal:
    """Ask a language model; ``system`` (rendered) replaces its own system prompt when given."""
    names = ctx.scope_names()
    ex = _Exchange(backend, system, custom=system is not None)
    errors: list[str] = []
    raw, repair_text, repair_raw, meta = "", None, None, {}
    parse = dict(scope_names=names, base=ctx.base_strategy, required=REQUIRED_FIELDS)
    try:
        reply = ex.send([{"role": "user", "content": prompt_text}])
        raw, meta = reply.raw(), _reply_meta(reply)
        errors += list(meta.get("failed_attempts", []))
        try:
            strategy, rationale = parse_strategy_reply(reply, **parse)
            return Proposal(strategy, rationale, prompt_text, raw, backend.name, errors=errors, meta=meta, **ex.fields())
        except StrategyError as exc:
            errors += exc.errors
        fields = {
            "errors": "\n".join(f"- {e}" for e in errors),
            "reply": raw[:MAX_REPLY_CHARS] or "(empty)",
            "strategy_schema": json.dumps(reply_schema()),
            "scope_names": ", ".join(names) or "(none)",
        }
        repair_text = render_prompt(repair_template, fields, role="repair")
        reply2 = ex.send(backend.repair_messages(prompt_text, reply, repair_text))
        repair_raw = reply2.raw()
        meta["repair"] = _reply_meta(reply2)
        errors += [f"repair request: {e}" for e in meta["repair"].get("failed_attempts", [])]
        try:
            strategy, rationale = parse_strategy_reply(reply2, **parse)
            return Proposal(
                strategy, rationale, prompt_text, raw, backend.name, repaired=True, errors=errors,
                repair_prompt=repair_text, repair_reply=repair_raw, meta=meta, **ex.fields(),
            )
        except StrategyError as exc:
            errors += [f"after repair: {e}" for e in exc.errors]
    except BackendError as exc:
        errors += list(getattr(exc, "attempts", []))
        errors.append(str(exc))
    strategy, rationale = AnalystBackend().propose(ctx)
    return Proposal(
        strategy, f"[analyst took over: {backend.name} gave no usable strategy] {rationale}", prompt_text, raw,
        backend.name, proposer="analyst", fallback=True, errors=errors, repair_prompt=repair_text,
        repair_reply=repair_raw, meta=meta, **ex.fields(),
    )


def propose_strategy(
    profile,
    scopes,
    history,
    target_macs: int | float | str,
    tolerance: tuple[float, float] = (1.0, 5.0),
    backend: str | Backend | Callable[[str], str] = "analyst",
    prompt: str | Path | None = None,
    *,
    repair_prompt: str | Path | None = None,
    base_macs: int | None = None,
    revision: int | None = None,
    max_revisions: int = 5,
    solve_budget: bool = False,
    base_strategy: Strategy | None = None,
    system: str | Path | None = None,
    constraints: dict | None = None,
    latency: dict | None = None,
    min_macs: Callable[[Strategy], int] | None = None,
) -> Proposal:
    """Ask the Analysis agent (``backend``) for the next strategy: one proposal, no pruning.

    A language model's reply is parsed against the strategy schema (never executed), with
    one repair request when it is invalid and the offline analyst as the fallback. The
    rendered prompt is always recorded in the :class:`Proposal`, also for the offline
    backends; the system text a model got too.

    Args:
        profile: a :class:`~agentic_toolkit.MacProfile` (its ``summary()`` goes into the
            prompt; its ``total_macs`` is the baseline unless ``base_macs`` is given).
        scopes: the :func:`~agentic_toolkit.describe_scopes` table.
        history: the past revision records (a list of dicts or a DataFrame; ``[]`` at first).
        target_macs: the MAC target, a count (``4.1e9``, ``"20M"``).
        tolerance: ``(over, under)`` in percent around the target.
        backend: ``"analyst"``, ``"grid"``, ``"anthropic"``, ``"openai"``, a
            :class:`~agentic_toolkit.agents.backends.Backend` or a callable ``prompt -> reply``.
        prompt, repair_prompt, system: the analysis, repair and system templates (text or a
            Path; None: packaged). A custom system text is rendered with the same fields and
            replaces the language model's own; a backend whose ``request`` takes no
            ``system=`` (e.g. a plain callable) refuses one with :class:`ToolkitError`.
        base_macs: the unpruned MACs (None: ``profile.total_macs``).
        revision, max_revisions: which revision this is, of how many (shown in the prompt).
        solve_budget: whether the search solves the ratio (the proposer's ratio is then a hint).
        base_strategy: the reference strategy (revision 1).
        constraints: budgets besides the MAC target (the prompt's ``$constraints``).
        latency: the device's latency summary
            (:func:`~agentic_toolkit.agents.latency_view.latency_info`; ``$latency_profile``).
        min_macs: ``strategy -> smallest reachable MACs``, to keep a planner's proposals
            within the solver's reach.

    Returns:
        A :class:`Proposal`: the strategy, the rationale, the prompt and raw reply, and how
        the proposal came about (fallback, repair, token counts).

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model, x = at.create_model("cifar_resnet20"), torch.randn(1, 3, 32, 32)
        >>> reply = '{"importance": "magnitude_l1", "pruning_ratio": 0.3, "rationale": "start small"}'
        >>> p = at.propose_strategy(at.profile_macs(model, x), at.describe_scopes(model, x), [], "20M",
        ...                         backend=lambda prompt: reply)
        >>> p.strategy.pruning_ratio, p.proposer, p.fallback
        (0.3, 'callable', False)
    """
    ctx = build_context(
        profile, scopes, history, target_macs, tolerance, base_macs=base_macs, revision=revision,
        max_revisions=max_revisions, solve_budget=solve_budget, base_strategy=base_strategy,
        constraints=constraints, latency=latency, min_macs=min_macs,
    )
    engine = make_backend(backend)
    fields = prompt_fields(ctx)
    prompt_text = render_prompt(prompt, fields, role="analysis")
    if engine.is_llm:
        check_system(engine, system)
        system_text = None if system is None else render_prompt(system, fields, role="system")
        return _propose_llm(engine, ctx, prompt_text, repair_prompt, system_text)
    strategy, rationale = engine.propose(ctx)
    raw = json.dumps({**strategy.to_dict(), "rationale": rationale}, sort_keys=True)
    return Proposal(strategy, rationale, prompt_text, raw, engine.name)


__all__ = [
    "REQUIRED_FIELDS",
    "ROLES",
    "Proposal",
    "build_context",
    "check_system",
    "history_table",
    "load_prompt",
    "parse_strategy_reply",
    "prompt_fields",
    "propose_strategy",
    "render_prompt",
    "reply_schema",
    "scopes_table",
    "template_text",
]
