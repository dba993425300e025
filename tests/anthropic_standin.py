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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

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

            def _send(self, code, body, headers=None):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


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
