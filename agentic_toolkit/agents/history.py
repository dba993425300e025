"""The search history as a JSONL file: one header line, one line per revision, one result line.

Every line is flushed and fsync'ed as soon as it is written, so a killed search loses at most
the revision that was running. A truncated last line (the process died mid-write) is
ignored on reading and cut off before appending; a corrupt line elsewhere is skipped (with
a warning) on reading and refused on resume, never deleted. One search writes a history at
a time (:mod:`~agentic_toolkit.agents.log_lock`). Strings listed as secrets (API keys) are
replaced by ``[REDACTED]`` before anything reaches the disk: by structure (:func:`redact`),
inside every string value of a record, never by text replacement on the JSON line, so any
secret (even ``"x"`` or ``"1"``) leaves a valid line whose field names are intact.
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ToolkitError
from .log_lock import LogLock

REDACTED = "[REDACTED]"
#: 2: structural redaction, the takeover decision on the diverging record, a header that
#: identifies the evaluator, its data, the calibration and the prompt templates.
FORMAT_VERSION = 2
#: A dict key (a field name) is only rewritten by a secret at least this long, or equal to it:
#: a short secret such as ``"x"`` must not turn ``max_layer_ratio`` into another field.
MIN_KEY_SECRET = 8


def _secret_pattern(secrets: Iterable[str]) -> re.Pattern | None:
    """One regex matching any secret, longest first (a single pass never re-redacts)."""
    found = sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, found))) if found else None


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (JSON-ready: dicts, lists, strings, numbers) with every secret replaced.

    Every occurrence of a secret inside a string value becomes ``[REDACTED]``, recursively
    through dicts and lists. A dict key is rewritten the same way when it equals a secret or
    contains one of at least :data:`MIN_KEY_SECRET` characters (a credential, which no
    field name holds by accident); numbers, booleans and ``None`` are kept as they are.
    """
    pattern = _secret_pattern(secrets)
    if pattern is None:
        return value
    exact = {s for s in secrets if isinstance(s, str) and s}
    long_pattern = _secret_pattern(s for s in exact if len(s) >= MIN_KEY_SECRET)

    def key(k: Any) -> Any:
        if not isinstance(k, str):
            return k
        if k in exact:
            return REDACTED
        return long_pattern.sub(REDACTED, k) if long_pattern is not None else k

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return pattern.sub(REDACTED, v)
        if isinstance(v, dict):
            return {key(k): walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)


def as_logged(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` as a history line holds it: JSON-ready (tuples as lists...), secrets redacted."""
    return redact(json.loads(json.dumps(value, default=_jsonable)), list(secrets))


def to_json_line(record: dict[str, Any], secrets: Iterable[str] = ()) -> str:
    """One JSONL line for ``record``: made JSON-ready, redacted by structure, then serialised."""
    return json.dumps(as_logged(record, secrets), sort_keys=True)


def _scan(path: Path) -> tuple[list[dict], int, list[int]]:
    """Every valid record, the byte length up to the last complete line, and the (1-based)
    numbers of the complete lines that are not a JSON object (corrupt records).

    A last line without its newline is a line cut short by a kill: not a record, not corrupt.
    """
    data = path.read_bytes()
    records, bad = [], []
    pos = good = number = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:  # no newline: a line cut short by a kill
            break
        number += 1
        line = data[pos:nl].strip()
        if line:
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None
            if isinstance(obj, dict):
                records.append(obj)
            else:
                bad.append(number)
        pos = good = nl + 1
    return records, good, bad


def _corrupt(path: Path, bad: list[int]) -> str:
    lines = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
    return f"{path}: line(s) {lines} {'is' if len(bad) == 1 else 'are'} not a valid JSON record (corrupt)"


def read_history(path: str | Path) -> list[dict]:
    """All complete records of a history file (header, revisions, result), oldest first.

    A corrupt line is skipped with a warning naming its number; the records on both sides
    of it are kept.
    """
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"no search history at {path}")
    records, _, bad = _scan(path)
    if bad:
        warnings.warn(_corrupt(path, bad) + "; skipped, the other records are read", stacklevel=2)
    return records


class HistoryLog:
    """Append-only JSONL writer with redaction; ``records`` holds what the file contains.

    The writer holds an exclusive lock on the file (:class:`~agentic_toolkit.agents.log_lock.LogLock`,
    a sidecar ``<log>.lock``) from construction until the result line is written, :meth:`close`
    is called, the log is garbage-collected or its process dies; a second writer on the same
    file gets a :class:`ToolkitError` naming the holder's pid. On resume a corrupt line in the
    middle of the file is refused (:class:`ToolkitError` naming its line number; nothing is
    deleted), while a half-written last line (no newline: a kill during a write) is cut off.
    """

    def __init__(self, path: str | Path, secrets: Iterable[str] = (), resume: bool = False):
        self.path = Path(path)
        self.secrets = [s for s in secrets if s]
        self.records: list[dict] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock: LogLock | None = LogLock(self.path)
        try:
            self._open(resume)
        except BaseException:
            self.close()
            raise

    def _open(self, resume: bool) -> None:
        if not (self.path.exists() and self.path.stat().st_size > 0):
            self.path.touch()
            return
        if not resume:
            raise ToolkitError(
                f"the search log {self.path} already exists; pass resume=True (CLI: --resume) "
                "to continue that search, or choose another path"
            )
        records, good, bad = _scan(self.path)
        if bad:
            raise ToolkitError(
                _corrupt(self.path, bad) + ": resuming would lose or redo the records around it. Repair or "
                "remove that line (the other lines are intact and were left as they are), or use a new log path"
            )
        self.records = records
        if good < self.path.stat().st_size:  # drop a half-written last line
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

    def redact(self, value: Any) -> Any:
        """``value`` as the log writes and reads it back (JSON-ready, secrets redacted)."""
        return as_logged(value, self.secrets)

    def append(self, record: dict[str, Any], redact: bool = True) -> dict:
        """Write one record (redacted unless ``redact=False``: measurements that hold no text
        from a backend, whose names a short secret could otherwise mangle), flush and fsync;
        returns the record as written.

        A ``result`` record completes the history: the lock is released after it (taken
        again should anything be appended later)."""
        if self._lock is None or not self._lock.held:
            self._lock = LogLock(self.path)
        line = to_json_line(record, self.secrets if redact else ())
        written = json.loads(line)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records.append(written)
        if written.get("type") == "result":
            self.close()
        return written

    def close(self) -> None:
        """Release the lock on the file (idempotent; the records stay readable)."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> HistoryLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MemoryLog(HistoryLog):
    """The same interface without a file (when no ``log_path`` is given)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.path = None
        self.secrets = [s for s in secrets if s]
        self.records = []
        self._lock = None

    def close(self) -> None:
        """Nothing to release."""

    def append(self, record: dict[str, Any], redact: bool = True) -> dict:
        written = json.loads(to_json_line(record, self.secrets if redact else ()))
        self.records.append(written)
        return written


def releases_log_on_error(init):
    """Decorate a constructor that opens ``self.log``: when it raises, the log's lock is
    released at once (not when the half-built object is collected, which a notebook's
    kept traceback may delay for ever)."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except BaseException:
            log = self.__dict__.get("log")
            if log is not None:
                log.close()
            raise

    return wrapper


#: The leading columns of :func:`history_frame` (the other record fields follow).
HISTORY_FRONT = (
    "revision", "backend", "proposer", "pruning_ratio", "multipliers", "importance", "achieved_macs",
    "error_pct", "in_band", "score", "fallback", "repaired", "divergence", "error", "elapsed_s",
)


def history_frame(
    records: Iterable[dict], target_macs: int | None = None, tolerance: tuple[float, float] | None = None
):
    """The revision records as a pandas DataFrame, one row per revision.

    The strategy's ``pruning_ratio``, ``importance`` and ``multipliers`` get their own
    columns (for tables and plots). Header and result lines are skipped; a record without a
    ``type`` counts as a revision. With ``target_macs``, ``error_pct`` is computed from
    ``achieved_macs`` where a record lacks it; with ``tolerance=(over, under)`` in percent,
    ``in_band`` is filled where missing and a ``status`` column says ``converged`` (in
    band), ``over``, ``under`` or ``error`` (nothing measured).
    """
    import pandas as pd

    rows = [_history_row(r, target_macs, tolerance) for r in records if r.get("type", "revision") == "revision"]
    front = list(HISTORY_FRONT) + (["status"] if tolerance is not None else [])
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=front)
    return df[[c for c in front if c in df] + [c for c in df.columns if c not in front]]


def _history_row(record: dict, target_macs: int | None, tolerance: tuple[float, float] | None) -> dict:
    row = dict(record)
    strategy = record.get("strategy") or record.get("proposed") or {}
    row["pruning_ratio"] = strategy.get("pruning_ratio")
    row["importance"] = strategy.get("importance")
    row["multipliers"] = strategy.get("multipliers")
    row.setdefault("proposer", record.get("backend", ""))
    macs = record.get("achieved_macs")
    if row.get("error_pct") is None and target_macs and macs:
        row["error_pct"] = 100.0 * (macs - target_macs) / target_macs
    if tolerance is not None:
        over, under = tolerance
        err = row.get("error_pct")
        if "in_band" not in row:
            row["in_band"] = err is not None and -under <= err <= over
        if not macs or err is None:
            row["status"] = "error"
        else:
            row["status"] = "converged" if row["in_band"] else ("over" if err > over else "under")
    return row


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)
