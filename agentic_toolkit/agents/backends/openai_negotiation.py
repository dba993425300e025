"""How :class:`.openai_compat.OpenAICompatBackend` negotiates with a server: the reply
formats and sampling parameters it may try (:data:`FORMATS`, :data:`SAMPLING`), the
``response_format`` request field (:func:`response_schema`, :func:`response_format_body`),
and how a refusal is read: :class:`Rejected`, the request fields an error body names
(:func:`named_fields`, :func:`error_text`) and the fields a refusal can be answered by
changing.

Re-exported by :mod:`.openai_compat` (import from there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ...errors import ToolkitError
from .base import BackendError

#: Reply formats, most constrained first; a server that refuses one gets the next.
FORMATS = ("json_schema", "json_object+schema", "json_object", "text")
#: Sampling parameters dropped when a server or model refuses them.
SAMPLING = ("temperature", "top_p", "seed")

_VALIDATION_WORDS = re.compile(
    r"validation error|input should be|literal_error|unsupported|not supported|unrecognized|"
    r"unknown (?:field|parameter|argument)|extra (?:fields|inputs) (?:are )?not permitted|invalid",
    re.I,
)
RATIONALE_MAX_CHARS = 400  # bounds the rationale in structured output


def response_schema(schema: dict) -> dict:
    """The JSON schema sent as structured output for a reply ``schema``.

    ``schema`` without ``$schema``, with a ``rationale`` string (added when missing) bounded by
    ``maxLength`` so that a grammar-constrained decoder always gets to close the object, and
    with ``pruning_ratio`` required when nothing is (so such a decoder cannot stop at ``{}``).
    """
    out = {k: v for k, v in schema.items() if k != "$schema"}
    props = dict(out.get("properties") or {})
    rationale = dict(props.get("rationale") or {"type": "string", "description": "Why this strategy."})
    rationale.setdefault("maxLength", RATIONALE_MAX_CHARS)
    props["rationale"] = rationale
    out["properties"] = props
    if "pruning_ratio" in props and not out.get("required"):
        out["required"] = ["pruning_ratio"]
    return out


def response_format_body(mode: str, schema: dict, strict: bool) -> dict | None:
    """The ``response_format`` request field for a mode of :data:`FORMATS` (``None`` for ``text``)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "strategy", "schema": schema, "strict": strict}}
    if mode == "json_object+schema":
        return {"type": "json_object", "schema": schema}
    if mode == "json_object":
        return {"type": "json_object"}
    if mode == "text":
        return None
    raise ToolkitError(f"unknown response_format {mode!r}; choose one of {', '.join(FORMATS)}")


class Rejected(BackendError):
    """The server refused the request itself (HTTP 400/422, or a validation error): ``named`` are
    the request fields its answer names, ``param`` the one it points at (OpenAI's ``error.param``)."""

    def __init__(self, message: str, code: int, detail: str, named: set[str], param: str | None):
        super().__init__(message)
        self.code, self.detail, self.named, self.param = code, detail, named, param


def _error_param(detail: str) -> str | None:
    """The parameter an error body points at: OpenAI's ``error.param`` or FastAPI's ``detail[].loc``."""
    try:
        body = json.loads(detail)
    except (json.JSONDecodeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, dict) and isinstance(err.get("param"), str) and err["param"]:
        return err["param"].split(".")[0].split("[")[0]
    for item in body.get("detail") or [] if isinstance(body.get("detail"), list) else []:
        loc = item.get("loc") if isinstance(item, dict) else None
        if isinstance(loc, list) and len(loc) >= 2 and loc[0] == "body" and isinstance(loc[1], str):
            return loc[1]
    return None


def error_text(detail: str) -> str:
    """An error body as plain text: every string in a JSON body (FastAPI ``loc`` lists joined by
    dots) on its own line, so that words can be matched without JSON escapes around them."""
    try:
        body = json.loads(detail)
    except (json.JSONDecodeError, ValueError):
        return detail
    parts: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            if key == "loc" and all(isinstance(v, (str, int)) for v in node):
                parts.append(".".join(map(str, node)))
            else:
                for v in node:
                    walk(v)

    walk(body)
    return "\n".join(parts)


def named_fields(detail: str, sent: Sequence[str], format_type: str | None = None) -> set[str]:
    """Which of the request fields ``sent`` an error body names: OpenAI's ``error.param``,
    FastAPI's ``detail[].loc``, or the name as a word of the message (``response_format`` also
    as "response format" or by the type sent, e.g. ``json_schema``); word-bounded, so ``seed``
    is not found in "exceeded"."""
    text = error_text(detail)
    found = set()
    for name in sent:
        if name == "response_format":
            words = r"response[_ ]format|structured output"
            if format_type:
                words += "|" + re.escape(format_type)
            if re.search(words, text, re.I):
                found.add(name)
        elif re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text):
            found.add(name)
    param = _error_param(detail)
    if param in sent:
        found.add(param)
    return found


def _adaptable(body: dict) -> set[str]:
    """The request fields a refusal can be answered by changing."""
    out = {k for k in SAMPLING if k in body}
    if "response_format" in body:
        out.add("response_format")
    for k in ("max_tokens", "max_completion_tokens"):
        if k in body:
            out.add(k)
    return out


__all__ = [
    "FORMATS",
    "RATIONALE_MAX_CHARS",
    "SAMPLING",
    "Rejected",
    "error_text",
    "named_fields",
    "response_format_body",
    "response_schema",
]
