"""Any OpenAI-compatible chat endpoint (llama.cpp's ``llama-server``, the llama-cpp-python server,
Ollama, vLLM, OpenAI itself) over plain HTTP.

Only the standard library is used (``urllib``), so a local model needs no extra package. The
servers differ in what they accept, so the backend negotiates, and remembers the outcome for
every later request of the same backend object:

* the reply format, best first (:data:`FORMATS`): ``json_schema`` (the strategy schema as
  structured output: OpenAI, ``llama-server``, vLLM, Ollama), ``json_object+schema``
  (``{"type": "json_object", "schema": ...}``, the form the llama-cpp-python server takes),
  ``json_object`` (any JSON object), ``text`` (the prompt alone asks for JSON);
* the sampling parameters ``temperature``, ``top_p`` and ``seed`` (some models take only the
  defaults), and ``max_tokens`` (``max_completion_tokens`` on OpenAI's reasoning models).

A request the server refuses (HTTP 400 or 422, or a 500 whose body is a request-validation
error naming a parameter, as FastAPI-based servers send) is sent again without what the error
names: the format one step down, named sampling parameters dropped. An HTTP 400 that names
nothing steps the format down, then drops the sampling parameters, but only on this backend's
first request: once a request went through, such an error is a real failure. What happened is
in each reply's ``meta`` (``response_format``, ``dropped_params``, ``adaptations``) and in
:meth:`OpenAICompatBackend.describe`.

The formats, the ``response_format`` field and the reading of refusals live in
:mod:`.openai_negotiation` (re-exported here).
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import ToolkitError
from .anthropic_backend import redact_url
from .base import (
    PROMPT_DIR,
    BackendError,
    LLMBackend,
    Reply,
    RetryableError,
    RetryPolicy,
    undecodable_reply,
)
from .http_limits import RequestGuard, guarded_opener, read_capped
from .openai_negotiation import (
    _VALIDATION_WORDS,
    FORMATS,
    RATIONALE_MAX_CHARS,  # noqa: F401 - re-exported
    SAMPLING,
    Rejected,
    _adaptable,
    _error_param,
    error_text,
    named_fields,
    response_format_body,
    response_schema,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
DEFAULT_MODEL = "local-model"

#: OpenAI ``finish_reason`` -> the normalised :attr:`Reply.stop_reason`.
STOP_REASONS = {"stop": "end", "length": "max_tokens", "tool_calls": "tool", "function_call": "tool"}
_MAX_ATTEMPTS = len(FORMATS) + len(SAMPLING) + 3  # bounds the negotiation of one request


@lru_cache(maxsize=1)
def openai_system_prompt() -> str:
    """The system prompt of this backend (``prompts/system_openai.txt``): answer with one JSON object."""
    return (PROMPT_DIR / "system_openai.txt").read_text(encoding="utf-8").strip()


def chat_completions_url(base_url: str) -> str:
    """``<base>/v1/chat/completions``, accepting a base with or without ``/v1``."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


class OpenAICompatBackend(LLMBackend):
    """POST ``/v1/chat/completions`` with the rendered prompt; the reply must be strategy JSON.

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` then ``http://127.0.0.1:8080/v1`` (llama.cpp's
    server); ``model`` to ``$OPENAI_MODEL`` then ``local-model``; the key (optional for local
    servers) to ``$OPENAI_API_KEY``. ``response_format`` is the first format tried (one of
    :data:`FORMATS`; ``json_mode=False`` is the old spelling of ``"text"``); ``strict`` goes
    into the ``json_schema`` request (OpenAI's strict mode cannot express the free-form
    ``multipliers`` map, so it is off by default). ``temperature`` (default 0), ``top_p`` and
    ``seed`` are sent when not ``None``. ``system`` replaces the system prompt (text or a
    Path; default ``prompts/system_openai.txt``).
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        temperature: float | None = 0.0,
        top_p: float | None = None,
        seed: int | None = None,
        max_tokens: int = 2048,
        response_format: str = "json_schema",
        strict: bool = False,
        json_mode: bool = True,
        system: str | Path | None = None,
    ):
        self.model = model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if not str(self.base_url).startswith(("http://", "https://")):
            raise ToolkitError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        self._key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if timeout <= 0:
            raise ToolkitError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ToolkitError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        self.max_tokens = max_tokens
        mode = response_format if json_mode else "text"
        if mode not in FORMATS:
            raise ToolkitError(f"unknown response_format {mode!r}; choose one of {', '.join(FORMATS)}")
        self.strict = bool(strict)
        self.sampling = {k: v for k, v in (("temperature", temperature), ("top_p", top_p), ("seed", seed)) if v is not None}
        if isinstance(system, Path):
            system = system.read_text(encoding="utf-8").strip()
        self.system = system if system is not None else openai_system_prompt()
        self.policy = RetryPolicy(retries=retries, backoff=backoff)
        # negotiated state, kept for every later request of this object
        self.format = mode
        self.dropped: list[str] = []
        self.max_tokens_field = "max_tokens"
        self.adaptations: list[str] = []
        self.confirmed = False  # a request went through with the current settings
        #: ``timeout`` is the deadline of each whole request (not of each socket read).
        self._guard = RequestGuard()

    # --- public surface ---------------------------------------------------------------------------
    @property
    def json_mode(self) -> bool:
        """Whether a JSON reply format is requested (anything but ``text``)."""
        return self.format != "text"

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": redact_url(self.base_url),
            "timeout_s": self.timeout,
            "retries": self.policy.retries,
            "response_format": self.format,
            "sampling": {k: v for k, v in self.sampling.items() if k not in self.dropped},
            "dropped_params": list(self.dropped),
            "max_tokens": self.max_tokens,
            "adaptations": list(self.adaptations),
        }

    def secrets(self) -> list[str]:
        return [self._key] if self._key else []

    def body(self, messages: Sequence[dict], tool_schema: dict, system: str | None = None) -> dict:
        """The request body with the current (negotiated) settings; ``system`` replaces the system prompt."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system if system is None else system}]
            + [{"role": m["role"], "content": m["content"]} for m in messages],
            self.max_tokens_field: self.max_tokens,
        }
        body.update({k: v for k, v in self.sampling.items() if k not in self.dropped})
        fmt = response_format_body(self.format, response_schema(tool_schema or {}), self.strict)
        if fmt is not None:
            body["response_format"] = fmt
        return body

    # --- one request ----------------------------------------------------------------------------
    def request(self, messages: Sequence[dict], tool_schema: dict, system: str | None = None) -> Reply:
        start = time.perf_counter()
        url = chat_completions_url(self.base_url)
        failures: list[str] = []
        saved = self._state()
        adapted_now: list[str] = []
        for _ in range(_MAX_ATTEMPTS):
            body = self.body(messages, tool_schema, system)
            try:
                payload = self.policy.run(lambda b=body: self._post(url, b), f"chat request to {redact_url(url)}", failures)
                break
            except Rejected as exc:
                step = self._adapt(exc, body)
                if step is None:
                    if not self.confirmed:
                        self._restore(saved)  # the unnamed guesses did not help: forget them
                    raise BackendError(f"HTTP {exc.code} from {redact_url(url)}: {exc.detail[:300]}") from exc
                failures.append(f"HTTP {exc.code}: {exc.detail[:200]} -> {step}")
                adapted_now.append(step)
        else:
            if not self.confirmed:
                self._restore(saved)
            raise BackendError(f"{redact_url(url)} refused every variant of the request: {'; '.join(failures)[-600:]}")
        self.confirmed = True
        self.adaptations += adapted_now
        if isinstance(payload, Reply):  # an undecodable body: a bad reply (repaired, else the analyst)
            payload.meta.update(model=self.model, failed_attempts=failures, response_format=self.format)
            payload.seconds = time.perf_counter() - start
            return payload
        return self._reply(payload, failures, adapted_now, time.perf_counter() - start)

    def _post(self, url: str, body: dict) -> dict | Reply:
        """The decoded JSON answer, or a bad :class:`Reply` for a body that is none (not UTF-8,
        not JSON, too long); the whole request keeps the deadline ``timeout``."""
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        with self._guard.request(self.timeout):
            try:
                return self._exchange(req, url, body)
            except (OSError, http.client.HTTPException) as exc:
                if self._guard.expired or isinstance(exc, TimeoutError):
                    raise RetryableError(f"timed out after {self.timeout:g} s") from exc
                if isinstance(exc, urllib.error.URLError):
                    raise
                raise RetryableError(f"connection to {redact_url(url)} failed: {exc}") from exc

    def _exchange(self, req: urllib.request.Request, url: str, body: dict) -> dict | Reply:
        try:
            with guarded_opener(self._guard).open(req, timeout=self.timeout) as resp:
                data, too_long = read_capped(resp)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:2000]
            named = named_fields(detail, list(body), (body.get("response_format") or {}).get("type"))
            param = _error_param(detail)
            validation = _VALIDATION_WORDS.search(error_text(detail))
            if exc.code in (400, 422) or (exc.code >= 500 and named & _adaptable(body) and validation):
                raise Rejected(f"HTTP {exc.code}", exc.code, detail, named, param) from exc
            if exc.code == 429 or exc.code >= 500 or exc.code == 408:
                retry_after = exc.headers.get("retry-after") if exc.headers else None
                try:
                    retry_after = float(retry_after) if retry_after is not None else None
                except ValueError:
                    retry_after = None
                raise RetryableError(f"HTTP {exc.code}: {detail[:300]}", retry_after) from exc
            raise BackendError(f"HTTP {exc.code} from {redact_url(url)}: {detail[:300]}") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError) or self._guard.expired:
                raise RetryableError(f"timed out after {self.timeout:g} s") from exc
            raise RetryableError(f"connection to {redact_url(url)} failed: {exc.reason}") from exc
        if self._guard.expired:
            raise RetryableError(f"timed out after {self.timeout:g} s")
        if too_long:
            return undecodable_reply(data, f"the body is too long (over {len(data):,} bytes)")
        try:
            return json.loads(data.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return undecodable_reply(data, f"{type(exc).__name__}: {exc}"[:200])

    # --- negotiation ----------------------------------------------------------------------------
    def _state(self) -> tuple:
        return self.format, list(self.dropped), self.max_tokens_field

    def _restore(self, state: tuple) -> None:
        self.format, self.dropped, self.max_tokens_field = state[0], list(state[1]), state[2]

    def _step_format(self) -> str | None:
        i = FORMATS.index(self.format)
        if i + 1 >= len(FORMATS):
            return None
        old, self.format = self.format, FORMATS[i + 1]
        return f"response_format {old} -> {self.format}"

    def _adapt(self, exc: Rejected, body: dict) -> str | None:
        """Change the settings after a refusal; a description of the change, or None (give up)."""
        named = exc.named & _adaptable(body)
        if named:
            steps = []
            if "response_format" in named:
                steps.append(self._step_format() or "")
            drop = [k for k in SAMPLING if k in named]
            if drop:
                self.dropped += drop
                steps.append("without " + ", ".join(drop))
            if self.max_tokens_field in named and "max_completion_tokens" in exc.detail and self.max_tokens_field == "max_tokens":
                self.max_tokens_field = "max_completion_tokens"
                steps.append("max_tokens -> max_completion_tokens")
            steps = [s for s in steps if s]
            return "retried: " + "; ".join(steps) if steps else None
        if self.confirmed or exc.code != 400 or (exc.param and exc.param not in _adaptable(body)):
            return None  # an error about something else (e.g. the prompt is too long)
        step = self._step_format()
        if step:
            return f"retried: {step} (the error named no parameter)"
        drop = [k for k in SAMPLING if k in body]
        if drop:
            self.dropped += drop
            return f"retried: without {', '.join(drop)} (the error named no parameter)"
        return None

    # --- the answer -------------------------------------------------------------------------------
    def _reply(self, payload: Any, failures: list[str], adapted: list[str], seconds: float) -> Reply:
        try:
            choice = payload["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return undecodable_reply(json.dumps(payload), "not a chat completion", {"failed_attempts": failures})
        finish = choice.get("finish_reason")
        usage_in = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        usage = {}
        if usage_in.get("prompt_tokens") is not None:
            usage["input_tokens"] = usage_in["prompt_tokens"]
        if usage_in.get("completion_tokens") is not None:
            usage["output_tokens"] = usage_in["completion_tokens"]
        stop = STOP_REASONS.get(finish, finish)
        meta = {
            "model": payload.get("model", self.model),
            "finish_reason": finish,
            "stop_reason": stop,
            "usage": usage,
            "seconds": round(seconds, 3),
            "response_format": self.format,
            "dropped_params": list(self.dropped),
            "adaptations": list(adapted),
            "failed_attempts": failures,
        }
        return Reply(text=text, meta=meta, stop_reason=stop, usage=usage, seconds=seconds)


__all__ = [
    "FORMATS",
    "SAMPLING",
    "OpenAICompatBackend",
    "chat_completions_url",
    "error_text",
    "named_fields",
    "openai_system_prompt",
    "response_format_body",
    "response_schema",
]
