"""Streaming sha256 of files, shared by the data and model loaders."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ChecksumError


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> str:
    """Check that ``path`` hashes to ``expected`` (a full digest or a prefix of it).

    Returns the full digest; raises :class:`ChecksumError` naming the file, the expected
    and the found checksum otherwise.
    """
    found = sha256_file(path)
    if not found.startswith(expected.lower()):
        raise ChecksumError(
            f"checksum mismatch for {path}: expected sha256 {expected}..., found {found}. "
            "The file is corrupt or not the one this toolkit expects; restore the original "
            "file (see ../shared/data/README.md) or pass a path to the right one."
        )
    return found
