"""Claude through the official ``anthropic`` SDK, the strategy requested as a forced tool call.

Notes on the SDK (2.x, API version 2026-10-21):

* sampling parameters (``temperature``, ``top_p``, ``top_k``) were removed from the SDK and the
  API answers 400 when they are sent, so this backend sends none by default; a forced tool
  call (``tool_choice={"type": "tool"}``) already constrains the reply to the schema.
  ``temperature=0`` can still be sent (via ``extra_body``) to a proxy or an older API version.
* the SDK's own retries are switched off (``max_retries=0``) and replaced by
  :class:`~agentic_toolkit.agents.backends.base.RetryPolicy`, so that backoff is configurable (tests
  use milliseconds) and every failed attempt is recorded in the search history.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from ...errors import ToolkitError
from .base import (
    BackendError,
    LLMBackend,
    Reply,
    RetryableError,
    RetryPolicy,
    system_prompt,
    undecodable_reply,
)
from .http_limits import RequestGuard, guard_http_client

#: A current Claude model that the installed SDK does not list as deprecated.
DEFAULT_MODEL = "claude-sonnet-5-5"
TOOL_NAME = "propose_strategy"
#: The Messages API's stop reasons as :attr:`Reply.stop_reason` (others are kept as sent).
STOP_REASONS = {"end_turn": "end", "tool_use": "tool", "max_tokens": "max_tokens"}
TOOL_DESCRIPTION = (
    "Propose the next structured-pruning strategy for the MAC budget. Call this exactly once; "
    "put your reasoning in 'rationale'."
)


def redact_url(url: str | None) -> str | None:
    """A URL without user info or query (these may carry credentials)."""
    if not url:
        return url
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def tool_input_schema(schema: dict) -> dict:
    """The tool's input schema: the strategy schema plus a free-text ``rationale``.

    ``$schema`` is dropped (tool schemas are plain JSON Schema objects).
    """
    out = {k: v for k, v in schema.items() if k != "$schema"}
    props = dict(out.get("properties", {}))
    props.setdefault("rationale", {"type": "string", "description": "Why this strategy (a few sentences)."})
    out["properties"] = props
    return out


class AnthropicBackend(LLMBackend):
    """Claude via ``anthropic.Anthropic().messages.create`` with a forced strategy tool call.

    The key comes from ``api_key`` or ``$ANTHROPIC_API_KEY`` (``$ANTHROPIC_AUTH_TOKEN`` also
    works); the base URL from ``base_url`` or the SDK's own ``$ANTHROPIC_BASE_URL``. A missing
    key raises :class:`ToolkitError` at construction, before any work is done.
    """

    name = "anthropic"

    def __init__(
        self,
        model: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 2048,
        temperature: float | None = None,
        client=None,
    ):
        self.model = model or os.environ.get("AGENTIC_TOOLKIT_ANTHROPIC_MODEL") or DEFAULT_MODEL
        self.timeout = float(timeout)
        self.max_tokens = int(max_tokens)
        self.temperature = temperature
        self.policy = RetryPolicy(retries=retries, backoff=backoff)
        self._key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
        self._auth_token = None if self._key else (os.environ.get("ANTHROPIC_AUTH_TOKEN") or None)
        if client is None and not (self._key or self._auth_token):
            raise ToolkitError(
                "the anthropic backend needs an API key: set ANTHROPIC_API_KEY (or pass "
                "api_key=...), or use backend='analyst' which needs no key"
            )
        if self.timeout <= 0:
            raise ToolkitError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self._client = client
        #: ``timeout`` is the deadline of each whole request (not of each socket read).
        self._guard = RequestGuard()

    # ------------------------------------------------------------------------------------
    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": redact_url(self.base_url) or "https://api.anthropic.com",
            "timeout_s": self.timeout,
            "retries": self.policy.retries,
        }

    def secrets(self) -> list[str]:
        return [s for s in (self._key, self._auth_token) if s]

    def client(self):
        """The SDK client (created on first use; SDK retries off, ours apply)."""
        if self._client is None:
            import anthropic

            kwargs = {"timeout": self.timeout, "max_retries": 0}
            if self.base_url:
                kwargs["base_url"] = self.base_url
            if self._key:
                kwargs["api_key"] = self._key
            else:
                kwargs["auth_token"] = self._auth_token
            http_client = anthropic.DefaultHttpxClient()
            guard_http_client(http_client, self._guard)
            self._client = anthropic.Anthropic(**kwargs, http_client=http_client)
        return self._client

    def repair_messages(self, prompt: str, reply: Reply, repair_text: str) -> list[dict]:
        """Answer a tool call with an ``is_error`` tool result quoting the problems."""
        tool_id = reply.meta.get("tool_use_id")
        if not tool_id:
            return super().repair_messages(prompt, reply, repair_text)
        assistant = [{"type": "tool_use", "id": tool_id, "name": TOOL_NAME, "input": reply.data or {}}]
        if reply.text:
            assistant.insert(0, {"type": "text", "text": reply.text})
        return [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": assistant},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_id, "is_error": True, "content": repair_text}
                ],
            },
        ]

    def request(self, messages: Sequence[dict], tool_schema: dict, system: str | None = None) -> Reply:
        import anthropic

        kwargs = dict(
            model=self.model,
            max_tokens=self.max_tokens,
            system=system_prompt() if system is None else system,
            tools=[{"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": tool_input_schema(tool_schema)}],
            tool_choice={"type": "tool", "name": TOOL_NAME},
            messages=list(messages),
        )
        if self.temperature is not None:
            kwargs["extra_body"] = {"temperature": self.temperature}
        failures: list[str] = []

        def call():
            try:
                with self._guard.request(self.timeout):
                    return self.client().messages.create(**kwargs)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # an HTTP 200 body that is no reply
                return undecodable_reply(_body_of(exc), f"{type(exc).__name__}: {exc}"[:200])
            except anthropic.APITimeoutError as exc:
                raise RetryableError(f"timed out after {self.timeout:g} s") from exc
            except anthropic.APIConnectionError as exc:
                if self._guard.overflow:
                    return undecodable_reply(b"", str(exc.__cause__ or exc)[:200])
                if self._guard.expired:
                    raise RetryableError(f"timed out after {self.timeout:g} s") from exc
                raise RetryableError(f"connection failed: {exc}") from exc
            except anthropic.APIStatusError as exc:
                status = exc.status_code
                if status == 429 or status >= 500 or status == 408:
                    raise RetryableError(f"HTTP {status}: {_short(exc)}", _retry_after(exc)) from exc
                raise BackendError(f"HTTP {status}: {_short(exc)}") from exc
            except anthropic.AnthropicError as exc:
                raise BackendError(f"{type(exc).__name__}: {exc}") from exc

        t0 = time.perf_counter()
        message = self.policy.run(call, f"anthropic request to {self.model}", failures)
        seconds = time.perf_counter() - t0
        if isinstance(message, Reply):  # undecodable: a bad reply (repaired, else the analyst)
            message.meta.update(model=self.model, failed_attempts=failures)
            message.seconds = seconds
            return message
        text_parts, data, tool_id = [], None, None
        for block in message.content or []:
            kind = getattr(block, "type", None)
            if kind == "text":
                text_parts.append(block.text)
            elif kind == "tool_use" and data is None:
                tool_id = block.id
                data = block.input if isinstance(block.input, dict) else {"_raw_input": block.input}
        usage = getattr(message, "usage", None)
        tokens = {}
        for key in ("input_tokens", "output_tokens"):
            if isinstance(getattr(usage, key, None), int):
                tokens[key] = getattr(usage, key)
        raw_stop = getattr(message, "stop_reason", None)
        meta = {
            "model": getattr(message, "model", self.model),
            "stop_reason": raw_stop,
            "tool_use_id": tool_id,
            "failed_attempts": failures,
        }
        return Reply(
            text="\n".join(text_parts), data=data, meta=meta, stop_reason=STOP_REASONS.get(raw_stop, raw_stop),
            usage=tokens, seconds=seconds,
        )


def _body_of(exc: ValueError) -> bytes | str:
    """The undecodable body a JSON or UTF-8 error was raised on (as far as it says)."""
    if isinstance(exc, json.JSONDecodeError):
        return exc.doc
    return getattr(exc, "object", b"") or b""


def _retry_after(exc) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for key, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return float(headers.get(key)) * scale
        except (TypeError, ValueError):
            continue
    return None


def _short(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(exc)[:300]


__all__ = ["AnthropicBackend", "BackendError", "DEFAULT_MODEL", "TOOL_NAME"]
