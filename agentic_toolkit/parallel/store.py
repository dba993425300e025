"""The durable record of a study: tasks and the JSONL store of their finished records.

Every finished task is one JSON line ``{"key", "settings", "record"}`` appended (flushed,
fsynced) to the writing process's own file ``<root>/<host>-<pid>.jsonl``; a store reads every
``*.jsonl`` under its root. An interrupted study loses at most the tasks in flight, and a
re-run skips every key already recorded. A line counts only when its ``settings`` equal the
study's, so a changed setting re-measures instead of mixing results; a store with a ``scope``
compares, per key, only the settings that record depends on (a search does not depend on how
its result is fine-tuned later, so a longer fine-tune reuses the searches).

    store = ResultStore("runs/at_budget", settings)
    run_tasks([Task("a", fn_a), Task("b", fn_b, deps=("a",))], store)   # .tasks.run_tasks
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Scope = Callable[[str], Collection[str] | None]


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(store)`` returns a JSON-ready record; runs after ``deps``.

    ``num_cpus`` / ``num_gpus`` are what one run needs (a Ray task asks the scheduler for
    them; torch gets ``num_cpus`` threads there); ``estimate_s`` its expected seconds.

    Example:
        >>> Task("a", lambda store: {"value": 1}).num_cpus
        1.0
    """

    key: str
    fn: Callable[[Any], dict[str, Any]]
    deps: tuple[str, ...] = ()
    estimate_s: float = 0.0
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def read_records(path: Path, settings: dict[str, Any], scope: Scope | None = None) -> dict[str, Any]:
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


class RecordView:
    """Read-only finished records (what a task running away from the driver sees as ``store``)."""

    def __init__(self, records: Mapping[str, Any], settings: dict[str, Any] | None = None):
        self.records = dict(records)
        self.settings = dict(settings or {})

    def get(self, key: str) -> Any:
        """The record of ``key``, or None when it is not finished."""
        return self.records.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.records


class ResultStore(RecordView):
    """Finished records of a study, read from every process's JSONL file under ``root``.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> ResultStore(root, {"v": 1}).put("a", {"x": 1})
        {'x': 1}
        >>> ResultStore(root, {"v": 1}).get("a"), "a" in ResultStore(root, {"v": 2})
        ({'x': 1}, False)
    """

    def __init__(self, root: str | Path, settings: dict[str, Any], scope: Scope | None = None):
        super().__init__({}, json.loads(json.dumps(settings)))
        self.root = Path(root)
        self.scope = scope  # key -> the setting names its record depends on (None: all)
        self._own = self.root / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self.refresh()

    def refresh(self) -> None:
        """Re-read every process's file (another process may have finished tasks)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*.jsonl")):
            self.records.update(read_records(path, self.settings, self.scope))

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

    def view(self, keys: Iterable[str] | None = None) -> RecordView:
        """A read-only copy of the records (of ``keys`` only, when given)."""
        records = self.records if keys is None else {k: self.records[k] for k in keys if k in self.records}
        return RecordView(records, self.settings)


def estimate(tasks: Iterable[Task], store: RecordView, workers: int = 1) -> float:
    """Seconds of the tasks not finished yet, divided among ``workers``.

    Example:
        >>> estimate([Task("a", print, estimate_s=60), Task("b", print, estimate_s=30)], RecordView({"a": {}}))
        30.0
    """
    return sum(t.estimate_s for t in tasks if t.key not in store) / max(1, workers)
