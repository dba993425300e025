"""A local stand-in for an OpenAI-compatible chat server (``POST /v1/chat/completions``) for tests.

A real HTTP server on 127.0.0.1 in a daemon thread (``with OpenAIStandIn(...) as srv``). It
behaves like the servers the backend meets:

* ``reject``: what it refuses, each with an HTTP error in the chosen ``style``:
  ``"json_schema"`` (``response_format`` of type ``json_schema``), ``"json_object"``
  (``response_format`` of type ``json_object``), ``"temperature"``, ``"top_p"``, ``"seed"``,
  ``"max_tokens"`` (asks for ``max_completion_tokens``), ``"any400"`` (every request, a 400
  naming nothing);
* ``style``: ``"openai"`` (400, ``error.param`` set), ``"fastapi"`` (422 with ``detail[].loc``),
  ``"llama_cpp_python"`` (500 whose message is a pydantic validation error, as the
  llama-cpp-python server answers a ``json_schema`` response_format), ``"bare"`` (400 naming
  nothing);
* ``script``: the answers to accepted requests, in order: ``("json", obj)``, ``("text", str)``,
  ``("length", str)`` (cut off: ``finish_reason="length"``), ``("status", code)``; then
  ``default`` repeats.

Every request (path, headers, JSON body, and whether it was accepted) is kept in ``requests``.
"""

from __future__ import annotations

import json
import threading

from standin_http import JsonHandler, LoopbackServer

MAX_REQUESTS = 200  # a runaway client gets 503s past this, so a test can never loop forever



class OpenAIStandIn:
    def __init__(self, script=(), *, reject=(), style="openai", default=("json", {"pruning_ratio": 0.3}),
                 usage=(120, 30)):
        self.script = list(script)
        self.reject = set(reject)
        self.style = style
        self.default = default
        self.usage = usage
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stand_in = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"


            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.loads(raw or b"{}")
                with stand_in.lock:
                    entry = {"path": self.path, "headers": dict(self.headers), "body": body, "accepted": False}
                    stand_in.requests.append(entry)
                    if len(stand_in.requests) > MAX_REQUESTS:
                        return self._send(503, {"error": {"message": "stand-in request limit"}})
                    refusal = stand_in.refusal(body)
                    if refusal is None:
                        entry["accepted"] = True
                        action = stand_in.script.pop(0) if stand_in.script else stand_in.default
                if refusal is not None:
                    return self._send(*refusal)
                kind, value = action
                if kind == "status":
                    return self._send(value, {"error": {"message": f"stand-in error {value}"}},
                                      {"retry-after": "0.01"} if value == 429 else None)
                content = json.dumps(value) if kind == "json" else value
                finish = "length" if kind == "length" else "stop"
                prompt_tokens, completion_tokens = stand_in.usage
                self._send(200, {
                    "id": "chatcmpl-standin", "object": "chat.completion", "model": body.get("model", "stand-in"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": finish}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                })


        self.http = LoopbackServer(Handler)
        self.server, self.url = self.http.server, self.http.url

    # --- what the server refuses ---------------------------------------------------------------------
    def refusal(self, body: dict):
        """``(code, body)`` of the error for a request this server refuses, or None."""
        fmt = (body.get("response_format") or {}).get("type")
        if "any400" in self.reject:
            return 400, "Bad Request"
        if fmt == "json_schema" and "json_schema" in self.reject:
            return self._error("response_format", "json_schema", "'json_schema' is not a supported response_format type")
        if fmt == "json_object" and "json_object" in self.reject:
            return self._error("response_format", "json_object", "response_format is not supported by this server")
        for name in ("temperature", "top_p", "seed"):
            if name in body and name in self.reject:
                return self._error(name, None, f"Unsupported parameter: '{name}' is not supported with this model.")
        if "max_tokens" in body and "max_tokens" in self.reject:
            return self._error("max_tokens", None, "Unsupported parameter: 'max_tokens' is not supported with "
                               "this model. Use 'max_completion_tokens' instead.")
        return None

    def _error(self, param, value, message):
        if self.style == "bare":
            return 400, "Bad Request"
        # pydantic's wording: a literal for the response_format type, a number for the others
        why, kind = ("Input should be 'text' or 'json_object'", "literal_error") if value else (
            "Input should be a valid number", "float_type")
        if self.style == "fastapi":
            loc = ["body", param] + (["type"] if value else [])
            return 422, {"detail": [{"type": kind, "loc": loc, "msg": why, "input": value}]}
        if self.style == "llama_cpp_python":
            where = f"{param}.type" if value else param
            return 500, {"error": {"message": f"1 validation error for CreateChatCompletionRequest\n{where}\n  "
                                   f"{why} [type={kind}, input_value={value!r}]", "type": "internal_server_error",
                                   "param": None, "code": None}}
        return 400, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                               "code": "unsupported_parameter"}}

    # --- helpers for assertions -------------------------------------------------------------------------
    def accepted(self) -> list[dict]:
        return [r for r in self.requests if r["accepted"]]

    def __enter__(self):
        self.http.__enter__()
        return self

    def __exit__(self, *exc):
        self.http.__exit__(*exc)
