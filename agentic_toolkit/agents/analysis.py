"""The Analysis agent: render a prompt, ask a backend for a strategy, validate what comes back.

``propose_strategy`` works with every backend in :mod:`agentic_toolkit.agents.backends`. A
language model's reply is untrusted text: it is parsed as JSON against the
:class:`~agentic_toolkit.pruning.strategy.Strategy` schema (never executed); an invalid reply gets
one repair request quoting every validation error; if that fails too (or the backend is
unreachable) the offline analyst proposes for this revision and the failure is recorded.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ToolkitError
from ..pruning.strategy import Strategy, StrategyError
from ..units import format_macs, parse_macs
from .backends import AnalystBackend, Backend, BackendError, ProposalContext, Reply, make_backend

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
ROLES = ("analysis", "repair")
MAX_REPLY_CHARS = 4000  # how much of a bad reply a repair request quotes


@dataclass
class Proposal:
    """One proposed strategy and how it came about (all of it is recorded in the history)."""

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
            "raw_reply": self.raw_reply,
            "repair_prompt": self.repair_prompt,
            "repair_reply": self.repair_reply,
            "backend_meta": self.meta,
        }


# --- prompts ------------------------------------------------------------------------------------
def load_prompt(role: str = "analysis") -> str:
    """The packaged template text for an agent role (``analysis`` or ``repair``)."""
    if role not in ROLES:
        raise ToolkitError(f"unknown prompt role {role!r}; choose one of {', '.join(ROLES)}")
    return (PROMPT_DIR / f"{role}.txt").read_text(encoding="utf-8")


def render_prompt(template: str | Path | None, fields: dict[str, Any], role: str = "analysis") -> str:
    """Fill a ``string.Template`` (``$name`` placeholders, ``$$`` for a literal ``$``).

    ``template`` is the template text, a :class:`~pathlib.Path` to one, or ``None`` for the
    packaged template of ``role``. Unknown placeholders raise :class:`ToolkitError` naming
    the known ones.
    """
    if template is None:
        text = load_prompt(role)
    elif isinstance(template, Path):
        if not template.is_file():
            raise ToolkitError(f"prompt template file not found: {template}")
        text = template.read_text(encoding="utf-8")
    elif isinstance(template, str):
        text = template
    else:
        raise ToolkitError(f"a prompt template must be a string or a Path, got {type(template).__name__}")
    try:
        return string.Template(text).substitute({k: str(v) for k, v in fields.items()})
    except KeyError as exc:
        raise ToolkitError(
            f"unknown placeholder ${exc.args[0]} in the {role} prompt template; "
            f"known: {', '.join('$' + k for k in sorted(fields))} (write $$ for a literal $)"
        ) from None
    except ValueError as exc:
        raise ToolkitError(f"invalid {role} prompt template: {exc} (write $$ for a literal $)") from None


def scopes_table(scopes) -> str:
    """The scopes DataFrame as a plain-text table for a prompt."""
    if scopes is None or len(scopes) == 0:
        return "(no named scopes: only the global pruning_ratio applies; leave multipliers empty)"
    df = scopes.copy()
    if "mac_share" in df:
        df["mac_share"] = [f"{100 * float(v):.1f}%" for v in df["mac_share"]]
    return df.to_string(index=False)


def _short_multipliers(mult: dict) -> str:
    if not mult:
        return "{}"
    return ", ".join(f"{k}={float(v):.3g}" for k, v in sorted(mult.items()))


def history_table(history: Sequence[dict]) -> str:
    """Past revisions as a plain-text table for a prompt (ratio, multipliers, MACs, error, score)."""
    rows = [r for r in history if r.get("type", "revision") == "revision"]
    if not rows:
        return "(no attempts yet: this is the first revision)"
    lines = ["rev | importance | pruning_ratio | multipliers | achieved MACs | error vs target | in band | score | note"]
    for r in rows:
        s = r.get("strategy") or r.get("proposed") or {}
        macs = r.get("achieved_macs")
        err = r.get("error_pct")
        score = r.get("score")
        notes = []
        if r.get("fallback"):
            notes.append("backend reply unusable, analyst proposed")
        if r.get("error"):
            notes.append(f"failed: {r['error']}")
        if r.get("divergence"):
            notes.append(f"divergence: {r['divergence']}")
        lines.append(
            " | ".join(
                [
                    str(r.get("revision", "?")),
                    str(s.get("importance", "?")),
                    f"{float(s['pruning_ratio']):.4f}" if "pruning_ratio" in s else "?",
                    _short_multipliers(s.get("multipliers", {})),
                    format_macs(macs) if macs else "-",
                    f"{err:+.2f}%" if err is not None else "-",
                    "yes" if r.get("in_band") else "no",
                    f"{score:.4g}" if score is not None else "-",
                    "; ".join(notes) or "-",
                ]
            )
        )
    return "\n".join(lines)


def prompt_fields(ctx: ProposalContext) -> dict[str, Any]:
    """Every placeholder a template may use, for this context."""
    low, high = ctx.band
    over, under = ctx.tolerance
    if ctx.solve_budget:
        ratio_note = (
            "The toolkit solves pruning_ratio to the budget after you answer (keeping your "
            "importance and multipliers), so focus on the shape: multipliers and importance."
        )
    else:
        ratio_note = "Your pruning_ratio is used as is: choose it so that the MACs land in the band."
    profile = ctx.profile.summary() if ctx.profile is not None and hasattr(ctx.profile, "summary") else "(no profile given)"
    return {
        "target_macs": format_macs(ctx.target_macs),
        "target_macs_int": ctx.target_macs,
        "base_macs": format_macs(ctx.base_macs),
        "target_fraction": f"{100 * ctx.target_macs / ctx.base_macs:.1f}%",
        "band_low": format_macs(low),
        "band_high": format_macs(high),
        "over_pct": f"{over:g}",
        "under_pct": f"{under:g}",
        "revision": ctx.revision,
        "max_revisions": ctx.max_revisions,
        "ratio_note": ratio_note,
        "profile": profile,
        "scopes": scopes_table(ctx.scopes),
        "scope_names": ", ".join(ctx.scope_names()) or "(none)",
        "history": history_table(ctx.history),
        "strategy_schema": json.dumps(Strategy.json_schema()),
        "base_strategy": ctx.base_strategy.to_json(),
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
    reply: Reply | str | dict, scope_names: Sequence[str] = (), base: Strategy | None = None
) -> tuple[Strategy, str]:
    """Validate an untrusted reply into ``(strategy, rationale)``; :class:`StrategyError` lists all problems.

    Missing fields are taken from ``base``; a ``{"strategy": {...}, "rationale": ...}`` wrapper
    is accepted; multiplier keys must be known scope names (when ``scope_names`` is given).
    """
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


def _check_tolerance(tolerance) -> tuple[float, float]:
    try:
        over, under = (float(t) for t in tolerance)
    except (TypeError, ValueError):
        raise ToolkitError(f"tolerance must be two percentages (over, under), e.g. (1.0, 5.0); got {tolerance!r}") from None
    if not (over >= 0 and under >= 0) or under >= 100 or over != over or under != under:
        raise ToolkitError(
            f"tolerance sides must be >= 0 percent (and under < 100): got over={over}, under={under}; "
            "e.g. (1.0, 5.0) accepts 1% above and 5% below the target"
        )
    return over, under


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
) -> ProposalContext:
    """Validate the inputs of :func:`propose_strategy` into a :class:`ProposalContext`."""
    target = parse_macs(target_macs)
    tol = _check_tolerance(tolerance)
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
    )


def _propose_llm(backend, ctx, prompt_text, repair_template) -> Proposal:
    schema = Strategy.json_schema()
    names = ctx.scope_names()
    errors: list[str] = []
    raw, repair_text, repair_raw, meta = "", None, None, {}
    try:
        reply = backend.request([{"role": "user", "content": prompt_text}], schema)
        raw, meta = reply.raw(), dict(reply.meta)
        try:
            strategy, rationale = parse_strategy_reply(reply, names, ctx.base_strategy)
            return Proposal(strategy, rationale, prompt_text, raw, backend.name, errors=list(meta.get("failed_attempts", [])), meta=meta)
        except StrategyError as exc:
            errors += exc.errors
        fields = {
            "errors": "\n".join(f"- {e}" for e in errors),
            "reply": raw[:MAX_REPLY_CHARS] or "(empty)",
            "strategy_schema": json.dumps(schema),
            "scope_names": ", ".join(names) or "(none)",
        }
        repair_text = render_prompt(repair_template, fields, role="repair")
        reply2 = backend.request(backend.repair_messages(prompt_text, reply, repair_text), schema)
        repair_raw = reply2.raw()
        meta["repair"] = dict(reply2.meta)
        try:
            strategy, rationale = parse_strategy_reply(reply2, names, ctx.base_strategy)
            return Proposal(
                strategy, rationale, prompt_text, raw, backend.name, repaired=True, errors=errors,
                repair_prompt=repair_text, repair_reply=repair_raw, meta=meta,
            )
        except StrategyError as exc:
            errors += [f"after repair: {e}" for e in exc.errors]
    except BackendError as exc:
        errors += list(getattr(exc, "attempts", []))
        errors.append(str(exc))
    strategy, rationale = AnalystBackend().propose(ctx)
    return Proposal(
        strategy,
        f"[analyst took over: {backend.name} gave no usable strategy] {rationale}",
        prompt_text,
        raw,
        backend.name,
        proposer="analyst",
        fallback=True,
        errors=errors,
        repair_prompt=repair_text,
        repair_reply=repair_raw,
        meta=meta,
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
) -> Proposal:
    """Ask the Analysis agent (``backend``) for the next strategy.

    ``profile`` is a :class:`~agentic_toolkit.profiling.profile.MacProfile` (its ``summary()`` goes into
    the prompt and its ``total_macs`` is the baseline unless ``base_macs`` is given),
    ``scopes`` the :func:`~agentic_toolkit.describe_scopes` table, ``history`` the past
    revision records (list of dicts or a DataFrame). ``prompt`` overrides the analysis
    template (text or a Path). The rendered prompt is always recorded in the
    :class:`Proposal`, also for the offline backends.
    """
    ctx = build_context(
        profile, scopes, history, target_macs, tolerance, base_macs=base_macs, revision=revision,
        max_revisions=max_revisions, solve_budget=solve_budget, base_strategy=base_strategy,
    )
    engine = make_backend(backend)
    prompt_text = render_prompt(prompt, prompt_fields(ctx), role="analysis")
    if engine.is_llm:
        return _propose_llm(engine, ctx, prompt_text, repair_prompt)
    strategy, rationale = engine.propose(ctx)
    raw = json.dumps({**strategy.to_dict(), "rationale": rationale}, sort_keys=True)
    return Proposal(strategy, rationale, prompt_text, raw, engine.name)


__all__ = [
    "Proposal",
    "build_context",
    "history_table",
    "load_prompt",
    "parse_strategy_reply",
    "prompt_fields",
    "propose_strategy",
    "render_prompt",
    "scopes_table",
]
