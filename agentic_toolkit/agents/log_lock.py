"""An exclusive lock on a search history for the life of the search that writes it.

Two searches on one ``log_path`` would interleave their lines in one file. The writer holds
``fcntl.flock`` on a sidecar ``<log>.lock`` file holding its pid: a second writer gets a
:class:`~agentic_toolkit.errors.ToolkitError` naming that pid. The lock goes away when the
search finishes (:meth:`LogLock.release`), is closed or garbage-collected, or its process
dies (the kernel drops a flock with its process; a dead holder's file is simply taken over).
Where ``fcntl`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

from ..errors import ToolkitError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking
    fcntl = None


def lock_path(log: str | Path) -> Path:
    """The sidecar lock file of a history file: ``<log>.lock``."""
    log = Path(log)
    return log.with_name(log.name + ".lock")


def _release(fd: int, path: Path) -> None:
    """Remove the lock file (while still holding it, so nobody locks a removed file) and unlock."""
    try:
        if os.fstat(fd).st_ino == path.stat().st_ino:
            path.unlink()
    except OSError:
        pass
    try:
        os.close(fd)  # closing the descriptor drops the flock
    except OSError:
        pass


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _try_lock(path: Path) -> int | None:
    """A descriptor holding the lock on ``path`` (our pid written into it), or None when held."""
    for _ in range(10):  # another process may remove the file between our open and our lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise ToolkitError(f"cannot lock {path}: it keeps being replaced by another process")


class LogLock:
    """Holds the lock of the history ``log`` from construction until :meth:`release`."""

    def __init__(self, log: str | Path):
        self.path = lock_path(log)
        self._finalizer = None
        if fcntl is None:
            return
        fd = _try_lock(self.path)
        if fd is None:  # perhaps an unreachable search of this process: collect it, try again
            gc.collect()
            fd = _try_lock(self.path)
        if fd is None:
            pid = _holder(self.path)
            mine = " (this process: an earlier search on it is still open; call its close())" if pid == str(
                os.getpid()) else ""
            raise ToolkitError(
                f"the search log {log} is in use by another search (pid {pid}{mine}); two searches must not "
                "write one history: wait for it to finish, or choose another log path"
            )
        self._finalizer = weakref.finalize(self, _release, fd, self.path)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._finalizer is not None and self._finalizer.alive

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()


__all__ = ["LogLock", "lock_path"]
