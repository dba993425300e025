"""Any OpenAI-compatible chat endpoint (llama.cpp server, Ollama, vLLM, ...) over plain HTTP.

Only the standard library is used (``urllib``), so a local model needs no extra package.
The strategy is requested as a JSON object (``response_format={"type": "json_object"}``,
which the servers above support; pass ``json_mode=False`` for one that does not).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence

from ...errors import ToolkitError
from .anthropic_backend import SYSTEM, redact_url
from .base import BackendError, LLMBackend, Reply, RetryableError, RetryPolicy

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
DEFAULT_MODEL = "local-model"


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
    servers) to ``$OPENAI_API_KEY``. ``temperature`` defaults to 0.
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
        max_tokens: int = 2048,
        json_mode: bool = True,
    ):
        self.model = model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if not str(self.base_url).startswith(("http://", "https://")):
            raise ToolkitError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        self._key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if timeout <= 0:
            raise ToolkitError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.temperature = temperature
        self.max_tokens = int(max_tokens)
        self.json_mode = bool(json_mode)
        self.policy = RetryPolicy(retries=retries, backoff=backoff)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": redact_url(self.base_url),
            "timeout_s": self.timeout,
            "retries": self.policy.retries,
        }

    def secrets(self) -> list[str]:
        return [self._key] if self._key else []

    def request(self, messages: Sequence[dict], tool_schema: dict) -> Reply:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM + " Reply with one JSON object only."}]
            + [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": self.max_tokens,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        url = chat_completions_url(self.base_url)
        data = json.dumps(body).encode()
        failures: list[str] = []

        def call():
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8", "replace"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                if exc.code == 429 or exc.code >= 500 or exc.code == 408:
                    retry_after = exc.headers.get("retry-after") if exc.headers else None
                    try:
                        retry_after = float(retry_after) if retry_after is not None else None
                    except ValueError:
                        retry_after = None
                    raise RetryableError(f"HTTP {exc.code}: {detail}", retry_after) from exc
                raise BackendError(f"HTTP {exc.code} from {redact_url(url)}: {detail}") from exc
            except TimeoutError as exc:
                raise RetryableError(f"timed out after {self.timeout:g} s") from exc
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError):
                    raise RetryableError(f"timed out after {self.timeout:g} s") from exc
                raise RetryableError(f"connection to {redact_url(url)} failed: {exc.reason}") from exc
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BackendError(f"the server's answer is not JSON: {exc}") from exc

        payload = self.policy.run(call, f"chat request to {redact_url(url)}", failures)
        try:
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f"unexpected chat completion shape: {str(payload)[:300]}") from exc
        meta = {
            "model": payload.get("model", self.model),
            "finish_reason": choice.get("finish_reason"),
            "failed_attempts": failures,
        }
        return Reply(text=text, meta=meta)
