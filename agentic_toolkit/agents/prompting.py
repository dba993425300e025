"""Prompt templates of the Analysis agent: loading, rendering, and the fields they may use.

Templates are ``string.Template`` texts (``$name`` placeholders, ``$$`` for a literal ``$``):
the packaged ``prompts/analysis.txt``, ``repair.txt`` and ``system.txt``, or a text / Path
passed as ``prompt=``, ``repair_prompt=``, ``system=``. :func:`reply_schema` is the JSON
schema a language model answers in (the strategy, a ``rationale``, and which fields are
``required``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ToolkitError
from ..pruning.strategy import Strategy
from ..units import format_macs
from .backends import ProposalContext
from .backends.base import PROMPT_DIR
from .latency_view import constraints_text, latency_profile_text

ROLES = ("analysis", "repair", "system")
#: The fields a language model must give (a reply without them gets the repair request).
REQUIRED_FIELDS = ("pruning_ratio",)


def reply_schema() -> dict:
    """The JSON schema of a reply: the strategy's fields plus ``rationale``, with ``required``."""
    schema = Strategy.json_schema()
    props = dict(schema.get("properties", {}))
    props["rationale"] = {"type": "string", "description": "Why this strategy (a few sentences)."}
    return {**schema, "properties": props, "required": list(REQUIRED_FIELDS)}


def load_prompt(role: str = "analysis") -> str:
    """The packaged template text for an agent role (``analysis``, ``repair`` or ``system``)."""
    if role not in ROLES:
        raise ToolkitError(f"unknown prompt role {role!r}; choose one of {', '.join(ROLES)}")
    return (PROMPT_DIR / f"{role}.txt").read_text(encoding="utf-8")


def template_text(template: str | Path | None, role: str = "analysis") -> str:
    """The text of a template: ``template`` itself, the file it names, or the packaged one (None)."""
    if template is None:
        return load_prompt(role)
    if isinstance(template, Path):
        if not template.is_file():
            raise ToolkitError(f"{role} prompt template file not found: {template}")
        return template.read_text(encoding="utf-8")
    if isinstance(template, str):
        return template
    raise ToolkitError(f"a prompt template must be a string or a Path, got {type(template).__name__}")


def check_templates(**given: str | Path | None) -> None:
    """Load every given template (``analysis=``, ``repair=``, ``system=``) so a bad one fails early."""
    for role, template in given.items():
        if template is not None:
            template_text(template, role)


def render_prompt(template: str | Path | None, fields: dict[str, Any], role: str = "analysis") -> str:
    """Fill a ``string.Template`` (``$name`` placeholders, ``$$`` for a literal ``$``).

    ``template`` is the template text, a :class:`~pathlib.Path` to one, or ``None`` for the
    packaged template of ``role``. Unknown placeholders raise :class:`ToolkitError` naming
    the known ones. The system template is stripped of surrounding whitespace.
    """
    text = template_text(template, role)
    if role == "system":
        text = text.strip()
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
    for col in ("mac_share", "latency_share"):
        if col in df:
            df[col] = [f"{100 * float(v):.1f}%" for v in df[col]]
    if "latency_per_mac" in df:
        df["latency_per_mac"] = [f"x{float(v):.2f}" for v in df["latency_per_mac"]]
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
        "constraints": constraints_text(ctx.constraints),
        "latency_profile": latency_profile_text(ctx.scopes, ctx.latency),
        "strategy_schema": json.dumps(reply_schema()),
        "base_strategy": ctx.base_strategy.to_json(),
    }


__all__ = [
    "REQUIRED_FIELDS",
    "ROLES",
    "check_templates",
    "history_table",
    "load_prompt",
    "prompt_fields",
    "render_prompt",
    "reply_schema",
    "scopes_table",
    "template_text",
]
