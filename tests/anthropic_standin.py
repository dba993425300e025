"""A local stand-in for the Anthropic Messages API (``POST /v1/messages``) for tests.

A real HTTP server on 127.0.0.1 in a thread; each request pops the next scripted action:
``("tool", input)``, ``("text", text)``, ``("status", code)``, ``("hang", seconds)``,
``("garbage", body)``. When the script is empty the ``default`` action repeats. Every request
(headers and JSON body) is kept in ``requests`` for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
               500: "api_error", 503: "api_error", 529: "overloaded_error"}


class StandIn:
    def __init__(self, script=(), default=("status", 500)):
        self.script = list(script)
        self.default = default
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
                with stand_in.lock:
                    stand_in.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw or b"{}")}
                    )
                    action = stand_in.script.pop(0) if stand_in.script else stand_in.default
                kind = action[0]
                if kind == "hang":
                    time.sleep(action[1])
                    action = ("text", "too late")
                    kind = "text"
                if kind == "tool":
                    content = [{"type": "tool_use", "id": f"toolu_{len(stand_in.requests)}",
                                "name": "propose_strategy", "input": action[1]}]
                    self._send(200, _message(content, "tool_use"))
                elif kind == "text":
                    self._send(200, _message([{"type": "text", "text": action[1]}], "end_turn"))
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


def _message(content, stop_reason):
    return {
        "id": "msg_standin",
        "type": "message",
        "role": "assistant",
        "model": "claude-standin",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
    }
