"""Fan independent calls out to workers that each hold one copy of a shared state.

``fn(shared, item)`` for every item, results in the items' order. ``shared`` (e.g. a model's
pruning plan and a proxy's images) travels once per worker: on Ray it is put in the object
store once (``ray.put``) and each worker, a Ray actor on one CPU with ``threads`` torch
threads, loads it once when it starts; then only the items and ``fn`` (pickled by reference:
a module-level function) travel per call. Without an executor the calls run here, in order.
A worker that dies fails the call (probes are cheap to measure again; a study's tasks, which
are not, are retried by :func:`~.tasks.run_tasks`).

    with worker_pool((plan, evaluator), executor="ray") as pool:
        first = pool.map(score, jobs)
        more = pool.map(score, more_jobs)     # the same workers: no second copy of the state
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from .executor import Executor, RayExecutor, resolve_executor

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


class Pool(Protocol):
    """What :func:`worker_pool` yields."""

    workers: int

    def map(self, fn: Callable[[Any, Any], R], items: Sequence[Any],
            on_result: Callable[[R], None] | None = None) -> list[R]: ...


class LocalPool:
    """The calls in this process, one after the other (``executor=None``)."""

    workers = 1

    def __init__(self, shared: Any):
        self.shared = shared

    def map(self, fn: Callable[[Any, T], R], items: Sequence[T],
            on_result: Callable[[R], None] | None = None) -> list[R]:
        """``[fn(shared, item) for item in items]``; ``on_result`` sees each result as it comes."""
        out = []
        for item in items:
            out.append(fn(self.shared, item))
            if on_result is not None:
                on_result(out[-1])
        return out


class _Holder:
    """A Ray actor's body: the shared state, loaded once, and calls on it."""

    def __init__(self, shared: Any, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.shared = shared

    def call(self, fn: Callable[[Any, Any], Any], item: Any) -> Any:
        return fn(self.shared, item)


@contextlib.contextmanager
def _recursion_limit(limit: int) -> Iterator[None]:
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


class RayPool:
    """Ray actors (one CPU each) holding one copy of the shared state each, started on the
    first :meth:`map` (no more of them than that call has items)."""

    def __init__(self, ray: Any, shared: Any, ex: RayExecutor):
        self._ray, self._ex = ray, ex
        # a deep model's dependency graph (torch-pruning's, e.g. ResNet-56's) pickles recursively
        # past Python's default limit of 1,000 frames; raise it for this one put
        with _recursion_limit(20_000):
            self._shared = ray.put(shared)  # into the object store once; each worker reads it once
        self._actors: list[Any] = []
        self.workers = ex.workers or max(1, int(ray.available_resources().get("CPU", 1)))

    def _start(self, n: int) -> None:
        actor = self._ray.remote(num_cpus=1)(_Holder)  # no restarts: a worker that dies fails the map
        self._actors = [actor.remote(self._shared, self._ex.threads) for _ in range(max(1, min(n, self.workers)))]

    def map(self, fn: Callable[[Any, T], R], items: Sequence[T],
            on_result: Callable[[R], None] | None = None) -> list[R]:
        """``[fn(shared, item) for item in items]`` on the workers: each worker takes the next
        item when it is free; results in the items' order."""
        if not items:
            return []
        if not self._actors:
            self._start(len(items))
        ray = self._ray
        out: list[Any] = [None] * len(items)
        free, running = list(self._actors), {}
        todo = iter(enumerate(items))
        left = len(items)
        while left:
            for actor in list(free):
                nxt = next(todo, None)
                if nxt is None:
                    break
                free.remove(actor)
                running[actor.call.remote(fn, nxt[1])] = (nxt[0], actor)
            done, _ = ray.wait(list(running), num_returns=1)
            i, actor = running.pop(done[0])
            out[i] = ray.get(done[0])
            free.append(actor)
            left -= 1
            if on_result is not None:
                on_result(out[i])
        return out

    def close(self) -> None:
        """Stop the workers (their CPUs go back to the cluster)."""
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []


@contextlib.contextmanager
def worker_pool(shared: S, executor: Executor = None) -> Iterator[LocalPool | RayPool]:
    """A pool whose workers hold ``shared``: this process (None) or Ray actors (``"ray"``,
    a :class:`~.executor.RayExecutor`); the workers stop on exit.

    Example:
        >>> with worker_pool({"offset": 10}) as pool:
        ...     pool.map(lambda s, i: s["offset"] + i, [1, 2, 3])
        [11, 12, 13]
    """
    ex = resolve_executor(executor)
    if ex is None:
        yield LocalPool(shared)
        return
    with ex.session() as ray:
        pool = RayPool(ray, shared, ex)
        try:
            yield pool
        finally:
            pool.close()
