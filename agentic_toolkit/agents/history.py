"""The search history as a JSONL file: one header line, one line per revision, one result line.

Every line is flushed and fsync'ed as soon as it is written, so a killed search loses at most
the revision that was running. A truncated last line (the process died mid-write) is
ignored on reading and cut off before appending. Strings listed as secrets (API keys) are
replaced by ``[REDACTED]`` before anything reaches the disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ToolkitError

REDACTED = "[REDACTED]"
FORMAT_VERSION = 1


def _valid_lines(path: Path) -> tuple[list[dict], int]:
    """Parsed records and the byte length of the valid prefix of the file."""
    data = path.read_bytes()
    records, good = [], 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:  # no newline: a line cut short by a kill
            break
        line = data[pos:nl].strip()
        if line:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(obj, dict):
                break
            records.append(obj)
        pos = nl + 1
        good = pos
    return records, good


def read_history(path: str | Path) -> list[dict]:
    """All complete records of a history file (header, revisions, result), oldest first."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"no search history at {path}")
    records, _ = _valid_lines(path)
    return records


class HistoryLog:
    """Append-only JSONL writer with redaction; ``records`` holds what the file contains."""

    def __init__(self, path: str | Path, secrets: Iterable[str] = (), resume: bool = False):
        self.path = Path(path)
        self.secrets = [s for s in secrets if s]
        self.records: list[dict] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            if not resume:
                raise ToolkitError(
                    f"the search log {self.path} already exists; pass resume=True (CLI: --resume) "
                    "to continue that search, or choose another path"
                )
            self.records, good = _valid_lines(self.path)
            if good < self.path.stat().st_size:  # drop a half-written last line
                with open(self.path, "r+b") as fh:
                    fh.truncate(good)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def append(self, record: dict[str, Any]) -> dict:
        """Write one record (redacted), flush and fsync; returns the record as written."""
        line = self.redact(json.dumps(record, sort_keys=True, default=_jsonable))
        written = json.loads(line)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records.append(written)
        return written


class MemoryLog(HistoryLog):
    """The same interface without a file (when no ``log_path`` is given)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.path = None
        self.secrets = [s for s in secrets if s]
        self.records = []

    def append(self, record: dict[str, Any]) -> dict:
        written = json.loads(self.redact(json.dumps(record, sort_keys=True, default=_jsonable)))
        self.records.append(written)
        return written


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)
