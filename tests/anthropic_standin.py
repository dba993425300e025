"""A local stand-in for the Anthropic Messages API (``POST /v1/messages``) for tests.

A real HTTP server on 127.0.0.1 in a thread; each request pops the next scripted action:
``("tool", input)``, ``("text", text)``, ``("status", code)``, ``("hang", seconds)``,
``("garbage", body)``, ``("cut", input)`` (a tool call cut off at the token limit:
``stop_reason="max_tokens"``). When the script is empty the ``default`` action repeats; with
``respond=fn`` the action is ``fn(body)`` instead (a deterministic model: the same request
gets the same answer, in any session). Every request (headers and JSON body) is kept in
``requests`` for assertions. Tool-call ids and token usage are functions of the request body,
so that a replayed request gets the same reply.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time

from standin_http import JsonHandler, LoopbackServer

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
               500: "api_error", 503: "api_error", 529: "overloaded_error"}



class StandIn:
    def __init__(self, script=(), default=("status", 500), respond=None):
        self.script = list(script)
        self.default = default
        self.respond = respond
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stand_in = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"


            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw or b"{}")
                entry = {"path": self.path, "headers": dict(self.headers), "body": body}
                with stand_in.lock:
                    stand_in.requests.append(entry)
                    if stand_in.respond is not None:
                        action = stand_in.respond(body)
                    else:
                        action = stand_in.script.pop(0) if stand_in.script else stand_in.default
                digest = hashlib.sha256(raw).hexdigest()
                usage = {"input_tokens": len(raw) // 4, "output_tokens": 7}
                kind = action[0]
                entry["usage"] = usage  # what the reply reports (output tokens filled in below)
                if kind == "hang":
                    time.sleep(action[1])
                    action = ("text", "too late")
                    kind = "text"
                if kind in ("tool", "cut"):
                    content = [{"type": "tool_use", "id": f"toolu_{digest[:16]}",
                                "name": "propose_strategy", "input": action[1]}]
                    usage["output_tokens"] = 9 + len(json.dumps(action[1])) // 4
                    self._send(200, _message(content, "tool_use" if kind == "tool" else "max_tokens", usage))
                elif kind == "text":
                    self._send(200, _message([{"type": "text", "text": action[1]}], "end_turn", usage))
                elif kind == "status":
                    code = action[1]
                    body = {"type": "error", "error": {"type": ERROR_TYPES.get(code, "api_error"),
                                                       "message": f"stand-in error {code}"}}
                    headers = {"retry-after-ms": "20"} if code == 429 else {}
                    self._send(code, body, headers)
                elif kind == "garbage":
                    self._send(200, action[1])


        self.http = LoopbackServer(Handler)
        self.server, self.url = self.http.server, self.http.url

    def __enter__(self):
        self.http.__enter__()
        return self

    def __exit__(self, *exc):
        self.http.__exit__(*exc)


def revision_of(body: dict) -> int:
    """The revision a Messages request asks for (from the prompt's "revision N of at most")."""
    first = body["messages"][0]["content"]
    text = first if isinstance(first, str) else json.dumps(first)
    return int(re.search(r"revision (\d+) of at most", text).group(1))


def is_repair(body: dict) -> bool:
    """Whether a request is the repair request (the conversation goes on after a reply)."""
    return len(body["messages"]) > 1


def _message(content, stop_reason, usage=None):
    return {
        "id": "msg_standin",
        "type": "message",
        "role": "assistant",
        "model": "claude-standin",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 11, "output_tokens": 7},
    }
