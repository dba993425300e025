"""A resumable work queue for long studies: tasks with dependencies, several worker processes.

Every finished task is one JSON line ``{"key", "settings", "record"}`` in its worker's own
file ``<root>/<host>-<pid>.jsonl`` (appended, flushed, fsynced), so workers never write the
same file and an interrupted study loses at most the tasks in flight. A worker claims a task
by creating ``<root>/claims/<key>`` exclusively (with its pid inside); claims of workers that
are no longer alive are taken over. A line counts only when its ``settings`` equal the
study's, so a changed setting re-measures instead of mixing results; a store with a
``scope`` compares, per key, only the settings that record depends on (a search does not
depend on how its result is fine-tuned later, so a longer fine-tune reuses the searches).

    store = ResultStore("runs/at_budget", settings)
    run_tasks([Task("a", fn_a), Task("b", fn_b, deps=("a",))], store)
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(store)`` returns a JSON-ready record; runs after ``deps``."""

    key: str
    fn: Callable[[ResultStore], dict[str, Any]]
    deps: tuple[str, ...] = ()
    estimate_s: float = 0.0


def read_records(path: Path, settings: dict[str, Any],
                 scope: Callable[[str], Collection[str] | None] | None = None) -> dict[str, Any]:
    """``{key: record}`` of the lines of a JSONL cache whose ``settings`` equal ``settings``
    (with ``scope``: on the names ``scope(key)`` lists, all of them where it returns None; a
    line cut short by a crash is skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or "key" not in entry:
            continue
        names = scope(entry["key"]) if scope else None
        theirs = entry.get("settings")
        if names is None:
            ok = theirs == settings
        else:
            ok = isinstance(theirs, dict) and all(n in theirs and theirs[n] == settings.get(n) for n in names)
        if ok:
            out[entry["key"]] = entry.get("record")
    return out


class ResultStore:
    """Finished records of a study, read from every worker's JSONL file under ``root``."""

    def __init__(self, root: str | Path, settings: dict[str, Any],
                 scope: Callable[[str], Collection[str] | None] | None = None):
        self.root = Path(root)
        self.settings = json.loads(json.dumps(settings))
        self.scope = scope  # key -> the setting names its record depends on (None: all)
        self.records: dict[str, Any] = {}
        self._own = self.root / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self.refresh()

    def refresh(self) -> None:
        """Re-read every worker's file (other workers may have finished tasks)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*.jsonl")):
            self.records.update(read_records(path, self.settings, self.scope))

    def get(self, key: str) -> Any:
        return self.records.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (JSON-normalised, as a later run reads it back) and return it."""
        record = json.loads(json.dumps(record))
        self.records[key] = record
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "settings": self.settings, "record": record})
        with open(self._own, "ab") as fh:
            fh.write(line.encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return record


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(root: Path, key: str) -> bool:
    """Claim ``key`` for this process; take over a claim whose process is gone."""
    path = root / "claims" / key.replace("/", "__")
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = path.read_text().split(":")
                stale = host == socket.gethostname() and not _alive(int(pid))
            except (OSError, ValueError):
                stale = True  # unreadable or half-written claim
            if not stale:
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{socket.gethostname()}:{os.getpid()}")
        return True
    return False


def _release(root: Path, key: str) -> None:
    (root / "claims" / key.replace("/", "__")).unlink(missing_ok=True)


def estimate(tasks: Sequence[Task], store: ResultStore, workers: int = 1) -> float:
    """Seconds of the tasks not finished yet, divided among ``workers``."""
    return sum(t.estimate_s for t in tasks if t.key not in store) / max(1, workers)


def run_tasks(tasks: Sequence[Task], store: ResultStore, *, poll_s: float = 15.0,
              log: Callable[[str], None] = print) -> int:
    """Run every unfinished task this worker can claim, in order, once its deps are done.

    Returns the number of tasks this worker ran. Waits (polling) while the only tasks left
    depend on tasks other workers are running; returns when nothing is left to claim.
    """
    keys = {t.key for t in tasks}
    ran = 0
    while True:
        store.refresh()
        pending = [t for t in tasks if t.key not in store]
        if not pending:
            return ran
        started = False
        for t in pending:
            missing = [d for d in t.deps if d not in store]
            if any(d not in keys for d in missing):
                raise KeyError(f"task {t.key} depends on {missing}, which no task produces")
            if missing or not _claim(store.root, t.key):
                continue
            try:
                store.refresh()
                if t.key not in store:
                    t0 = time.perf_counter()
                    log(f"[{time.strftime('%H:%M:%S')}] {t.key}: started (~{t.estimate_s:.0f} s)")
                    rec = store.put(t.key, {**t.fn(store), "task_seconds": round(time.perf_counter() - t0, 1)})
                    log(f"[{time.strftime('%H:%M:%S')}] {t.key}: done in {rec['task_seconds']:.0f} s")
                    ran += 1
            finally:
                _release(store.root, t.key)
            started = True
            break
        if not started:
            if not any(_waits_for_deps(t, store) for t in pending):
                return ran  # what is left is in other workers' hands
            time.sleep(poll_s)


def _waits_for_deps(task: Task, store: ResultStore) -> bool:
    """True when ``task`` is nobody's yet and waits for a dependency another worker runs."""
    claim = store.root / "claims" / task.key.replace("/", "__")
    return not claim.exists() and any(d not in store for d in task.deps)
