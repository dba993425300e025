"""Run a study's tasks: in this process, or as Ray tasks; the :class:`~.store.ResultStore` keeps
every finished record.

With ``executor=None`` the unfinished tasks run one after the other in this process (a task
after its dependencies). With Ray each task becomes a Ray task asking for the task's
``num_cpus`` / ``num_gpus`` and re-run up to ``max_retries`` times when its worker process
dies; a task's dependencies reach it as object refs (Ray starts it once they are done), the
records finished before the run as one shared read-only copy. Only this process (the driver)
writes the store, as each task finishes, so the workers need no shared file system, and a
driver that dies loses only the tasks in flight: running the same command again skips every
finished key.

    run_tasks(tasks, ResultStore("runs/study", settings), executor="ray")
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ToolkitError
from .executor import Executor, RayExecutor, resolve_executor
from .store import RecordView, ResultStore, Task

Log = Callable[[str], None]


def run_tasks(tasks: Sequence[Task], store: ResultStore, *, executor: Executor = None, log: Log = print) -> int:
    """Run every task of ``tasks`` that ``store`` has no record of, each after its ``deps``.

    Args:
        tasks: the study's tasks (a dependency is a key of another task or of a finished record).
        store: where each finished task's record is appended (``task_seconds`` added).
        executor: None (this process, in order), ``"ray"`` or a :class:`~.executor.RayExecutor`.
        log: where one line per finished task goes.

    Returns:
        The number of tasks run. A task's exception is raised; with Ray only after every
        other task has finished (and been recorded).

    Example:
        >>> import tempfile
        >>> store = ResultStore(tempfile.mkdtemp(), {})
        >>> run_tasks([Task("b", lambda s: {"v": s.get("a")["v"] + 1}, deps=("a",)),
        ...            Task("a", lambda s: {"v": 1})], store, log=lambda line: None)
        2
        >>> store.get("b")["v"]
        2
    """
    todo = ordered(tasks, store)
    ex = resolve_executor(executor)
    if not todo:
        return 0
    if ex is None:
        for t in todo:
            t0 = time.perf_counter()
            log(f"[{time.strftime('%H:%M:%S')}] {t.key}: started (~{t.estimate_s:.0f} s)")
            rec = store.put(t.key, {**t.fn(store), "task_seconds": round(time.perf_counter() - t0, 1)})
            log(f"[{time.strftime('%H:%M:%S')}] {t.key}: done in {rec['task_seconds']:.0f} s")
        return len(todo)
    return _run_on_ray(todo, store, ex, log)


def ordered(tasks: Sequence[Task], store: RecordView) -> list[Task]:
    """The unfinished tasks, each after its dependencies (otherwise in the given order).

    Raises:
        KeyError: a dependency that no task produces and ``store`` has no record of.
        ToolkitError: dependencies in a cycle.
    """
    keys = {t.key for t in tasks}
    for t in tasks:
        missing = [d for d in t.deps if d not in keys and d not in store]
        if missing:
            raise KeyError(f"task {t.key} depends on {missing}, which no task produces")
    pending = [t for t in tasks if t.key not in store]
    placed: set[str] = set()
    out: list[Task] = []
    while pending:
        ready = [t for t in pending if all(d in placed or d in store for d in t.deps)]
        if not ready:
            raise ToolkitError(f"tasks depend on each other in a cycle: {sorted(t.key for t in pending)}")
        for t in ready:
            placed.add(t.key)
        out += ready
        pending = [t for t in pending if t.key not in placed]
    return out


def _run_on_ray(todo: list[Task], store: ResultStore, ex: RayExecutor, log: Log) -> int:
    with ex.session() as ray:
        remote = ray.remote(_run_remote)
        finished = ray.put(store.view())  # one copy of the records done before, for every task
        refs: dict[str, Any] = {}
        for t in todo:
            deps = [d for d in t.deps if d in refs]
            opts = {"num_cpus": t.num_cpus, "num_gpus": t.num_gpus, "max_retries": ex.max_retries,
                    "name": t.key}
            refs[t.key] = remote.options(**opts).remote(t.fn, finished, deps, max(1, int(t.num_cpus)),
                                                        *(refs[d] for d in deps))
        log(f"[{time.strftime('%H:%M:%S')}] {len(todo)} tasks on Ray ({_resources(ray)})")
        waiting = {ref: key for key, ref in refs.items()}
        errors: list[BaseException] = []
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            key = waiting.pop(done[0])
            try:
                rec = store.put(key, ray.get(done[0]))
            except Exception as exc:  # the task (or one it depends on) raised: keep the others' work
                errors.append(exc)
                log(f"[{time.strftime('%H:%M:%S')}] {key}: failed: {str(exc).splitlines()[0] if str(exc) else exc!r}")
                continue
            log(f"[{time.strftime('%H:%M:%S')}] {key}: done in {rec['task_seconds']:.0f} s")
        if errors:
            raise errors[0]
    return len(todo)


def _resources(ray: Any) -> str:
    res = ray.cluster_resources()
    return ", ".join(f"{res[k]:g} {k}" for k in ("CPU", "GPU") if res.get(k)) or "no resources"


def _run_remote(fn: Callable[[Any], dict[str, Any]], finished: RecordView, dep_keys: list[str], threads: int,
                *dep_records: dict[str, Any]) -> dict[str, Any]:
    """One task in a Ray worker: ``fn`` sees the records finished before the run and its
    dependencies' records; torch runs on ``threads`` threads."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:  # torch reads it when the task imports torch (a task without torch need not load it)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    view = RecordView({**finished.records, **dict(zip(dep_keys, dep_records, strict=True))}, finished.settings)
    t0 = time.perf_counter()
    rec = fn(view)
    # as the store reads it back (a dependent task sees exactly what the sequential run sees)
    return json.loads(json.dumps({**rec, "task_seconds": round(time.perf_counter() - t0, 1)}))
