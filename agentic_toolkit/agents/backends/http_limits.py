"""Limits on one HTTP request of a language-model backend: a deadline, and a cap on the body.

A socket timeout bounds each read, not the request: a server that drips one byte every two
seconds holds a ``timeout=3`` request for as long as it likes. A :class:`RequestGuard` (one per
backend object) holds the deadline of the request in flight and counts the bytes received:

* the OpenAI-compatible backend (``urllib``) opens its connections through
  :func:`guarded_opener`, whose connections are shut down by a timer at the deadline;
* the Anthropic SDK's ``httpx`` client gets :func:`guard_http_client`: every socket operation
  waits at most until the deadline, and reads stop past :data:`MAX_BODY_BYTES`.

Both then say "timed out after ``timeout`` s" (retried like any timeout).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from functools import partial

from .base import MAX_REPLY_BYTES

#: The largest HTTP body read for one reply (the reply itself is capped at MAX_REPLY_BYTES;
#: the body around it holds JSON escapes and fields).
MAX_BODY_BYTES = 4 * MAX_REPLY_BYTES


class RequestGuard:
    """The deadline and byte count of the request in flight (none between requests)."""

    def __init__(self):
        self.deadline: float | None = None
        self.expired = False
        self.received = 0
        self.overflow = False
        self._timers: list[threading.Timer] = []

    @contextlib.contextmanager
    def request(self, seconds: float) -> Iterator[RequestGuard]:
        """Run one request within ``seconds`` from now."""
        self.deadline, self.expired, self.received, self.overflow = time.monotonic() + seconds, False, 0, False
        try:
            yield self
        finally:
            for timer in self._timers:
                timer.cancel()
            self._timers, self.deadline = [], None

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None outside a request)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def clamp(self, timeout: float | None, error: type[Exception] = TimeoutError) -> float | None:
        """``timeout`` shortened to what is left; raises ``error`` once the deadline passed."""
        left = self.remaining()
        if left is None:
            return timeout
        if left <= 0:
            self.expired = True
            raise error("the request's deadline passed")
        return left if timeout is None else min(timeout, left)

    def count(self, n: int, error: type[Exception] = OSError) -> None:
        """Count ``n`` received bytes; raises ``error`` past :data:`MAX_BODY_BYTES`."""
        self.received += n
        if self.deadline is not None and self.received > MAX_BODY_BYTES:
            self.overflow = True
            raise error(f"the reply is too long (over {MAX_BODY_BYTES:,} bytes)")

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline (a blocked read then returns at once)."""
        left = self.remaining()
        if left is None:
            return

        def expire():
            self.expired = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(max(left, 0.0), expire)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()


# --- urllib ---------------------------------------------------------------------------------------
class _Watched:
    """An ``http.client`` connection that connects within the deadline and is shut down at it."""

    def __init__(self, *args, guard: RequestGuard, **kwargs):
        super().__init__(*args, **kwargs)
        self._guard = guard

    def connect(self):
        self.timeout = self._guard.clamp(self.timeout)
        super().connect()
        self._guard.watch(self.sock)


class _HTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, guard: RequestGuard):
        super().__init__()
        self.guard = guard

    def http_open(self, req):
        return self.do_open(partial(_HTTPConnection, guard=self.guard), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, guard: RequestGuard):
        super().__init__()
        self.guard = guard

    def https_open(self, req):
        return self.do_open(partial(_HTTPSConnection, guard=self.guard), req, context=self._context)


def guarded_opener(guard: RequestGuard) -> urllib.request.OpenerDirector:
    """A ``urllib`` opener (proxies from the environment still apply) whose connections keep
    ``guard``'s deadline."""
    return urllib.request.build_opener(_HTTPHandler(guard), _HTTPSHandler(guard))


def read_capped(resp) -> tuple[bytes, bool]:
    """``(body, too_long)``: at most :data:`MAX_BODY_BYTES` of an HTTP response."""
    data = resp.read(MAX_BODY_BYTES + 1)
    return data[:MAX_BODY_BYTES], len(data) > MAX_BODY_BYTES


# --- httpx (the Anthropic SDK) --------------------------------------------------------------------
class _GuardedStream:
    """An httpcore socket stream whose reads and writes wait at most until the deadline;
    reads are counted. ``errors`` is the httpcore module the stream comes from (its timeout
    and read errors are the ones the SDK maps to its own)."""

    def __init__(self, inner, guard: RequestGuard, errors):
        self.inner, self.guard, self.errors = inner, guard, errors

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self.inner.read(max_bytes, self.guard.clamp(timeout, self.errors.ReadTimeout))
        self.guard.count(len(data), self.errors.ReadError)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.guard.clamp(timeout, self.errors.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        timeout = self.guard.clamp(timeout, self.errors.ConnectTimeout)
        return _GuardedStream(self.inner.start_tls(ssl_context, server_hostname, timeout), self.guard, self.errors)

    def get_extra_info(self, info: str):
        return self.inner.get_extra_info(info)


class _GuardedNetwork:
    """An httpcore network backend whose every connection is a :class:`_GuardedStream`."""

    def __init__(self, inner, guard: RequestGuard):
        self.inner, self.guard = inner, guard
        self.errors = importlib.import_module(type(inner).__module__.partition(".")[0])

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        timeout = self.guard.clamp(timeout, self.errors.ConnectTimeout)
        stream = self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _GuardedStream(stream, self.guard, self.errors)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        timeout = self.guard.clamp(timeout, self.errors.ConnectTimeout)
        return _GuardedStream(self.inner.connect_unix_socket(path, timeout, socket_options), self.guard, self.errors)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def guard_http_client(client, guard: RequestGuard) -> bool:
    """Make every transport of an ``httpx`` client (the SDK's own ``DefaultHttpxClient``) keep
    ``guard``'s deadline and byte cap: their network backend is wrapped, nothing else changes.
    False when the client's transports are not httpx's connection pools (then nothing is guarded)."""
    transports = [getattr(client, "_transport", None), *(getattr(client, "_mounts", None) or {}).values()]
    guarded = False
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if inner is not None and hasattr(inner, "connect_tcp"):
            pool._network_backend = _GuardedNetwork(inner, guard)
            guarded = True
    return guarded


__all__ = ["MAX_BODY_BYTES", "RequestGuard", "guard_http_client", "guarded_opener", "read_capped"]
