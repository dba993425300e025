"""The decoded-data cache of :mod:`agentic_toolkit.data`: built from a checksummed archive, and
never trusted blindly.

A cache file ``<name>.pt`` (tensors saved with ``torch.save``, read with ``weights_only``) has a
sidecar ``<name>.json`` naming the sha256 of the archive it was built from and of the cache file
itself. :func:`cached_tensors` reads the cache only when both match and every tensor has the
expected dtype and shape; a truncated, planted or stale cache is rebuilt from the archive (with
a warning). A cache folder that cannot be written raises :class:`ToolkitError` saying how to fix it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import ToolkitError
from .paths import CACHE_ENV

Blob = dict[str, torch.Tensor]


def _valid(blob, image_shape: tuple[int, ...]) -> bool:
    """``{split_images: uint8 N x image_shape, split_labels: int64 N}`` for at least one split."""
    if not isinstance(blob, dict) or not blob:
        return False
    splits = {k.rsplit("_", 1)[0] for k in blob}
    for s in splits:
        x, y = blob.get(f"{s}_images"), blob.get(f"{s}_labels")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            return False
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != image_shape or x.ndim != len(image_shape) + 1:
            return False
        if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
            return False
    return True


def _read(cache: Path, archive_sha256: str, image_shape: tuple[int, ...]) -> Blob | None:
    """The cached tensors, or None when the cache is absent, corrupt or not built from this archive."""
    side = cache.with_suffix(".json")
    if not cache.is_file():
        return None
    try:
        info = json.loads(side.read_text())
        data = cache.read_bytes()
    except (OSError, ValueError):
        info, data = {}, b""
    if info.get("archive_sha256") == archive_sha256 and info.get("cache_sha256") == hashlib.sha256(data).hexdigest():
        try:
            blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any unreadable cache is rebuilt
            blob = None
        if _valid(blob, image_shape):
            return blob
    warnings.warn(f"the data cache {cache} cannot be verified (corrupt, written by an older toolkit, or "
                  "not built from this archive); rebuilding it from the archive", RuntimeWarning, stacklevel=3)
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # readable like any cache file (mkstemp makes it private)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(cache: Path, blob: Blob, archive_sha256: str) -> None:
    buf = io.BytesIO()
    torch.save(blob, buf)
    data = buf.getvalue()
    side = {"archive_sha256": archive_sha256, "cache_sha256": hashlib.sha256(data).hexdigest()}
    try:
        _write_atomic(cache, data)  # the cache first: a stale sidecar makes the next read rebuild
        _write_atomic(cache.with_suffix(".json"), (json.dumps(side) + "\n").encode())
    except OSError as exc:
        raise ToolkitError(
            f"cannot write the data cache {cache}: {exc}. Set {CACHE_ENV}=<a writable folder> "
            "(or make that folder writable)"
        ) from None


def cached_tensors(
    folder: Path, name: str, archive_sha256: str, build: Callable[[], Blob], image_shape: tuple[int, ...]
) -> Blob:
    """The tensors cached as ``folder/<name>.pt`` for the archive with ``archive_sha256``;
    built with ``build()`` and cached when the cache is missing or cannot be trusted."""
    cache = folder / f"{name}.pt"
    blob = _read(cache, archive_sha256, image_shape)
    if blob is None:
        blob = build()
        if not _valid(blob, image_shape):
            raise ToolkitError(f"the archive decoded into no usable images for {name}")
        _write(cache, blob, archive_sha256)
    return blob


__all__ = ["cached_tensors"]
