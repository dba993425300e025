"""Where the toolkit looks for offline data and where it caches derived files."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataNotFoundError, ToolkitError

#: Environment variable naming a data root (checked right after an explicit path).
DATA_ENV = "AGENTIC_TOOLKIT_DATA"
#: Environment variable naming the cache directory for decoded data sets.
CACHE_ENV = "AGENTIC_TOOLKIT_CACHE"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_roots(root: str | Path | None = None) -> list[Path]:
    """Candidate data roots in search order, without duplicates.

    Order: the explicit ``root``, ``$AGENTIC_TOOLKIT_DATA``, ``./data``, ``../shared/data``
    (each relative to the working directory, then to the project checkout).
    """
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root).expanduser())
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]).expanduser())
    for base in (Path.cwd(), PROJECT_ROOT):
        candidates.append(base / "data")
    for base in (Path.cwd(), PROJECT_ROOT):
        candidates.append(base.parent / "shared" / "data")
    seen: set[Path] = set()
    ordered = []
    for cand in candidates:
        key = cand.resolve() if cand.exists() else cand.absolute()
        if key not in seen:
            seen.add(key)
            ordered.append(cand)
    return ordered


def find_data_file(relative: str, root: str | Path | None = None, what: str = "file") -> Path:
    """Return the first existing ``<data root>/<relative>``.

    An explicit ``root`` may also point straight at the file (or at the folder holding it).
    Raises :class:`DataNotFoundError` listing every place it looked otherwise.
    """
    looked: list[Path] = []
    if root is not None:
        direct = Path(root).expanduser()
        if direct.is_file():
            return direct
        leaf = direct / Path(relative).name
        if leaf.is_file():
            return leaf
        looked.append(leaf)
    for base in data_roots(root):
        cand = base / relative
        if cand.is_file():
            return cand
        looked.append(cand)
    places = "\n  ".join(str(p) for p in looked)
    raise DataNotFoundError(
        f"could not find the {what} '{relative}'. Looked in:\n  {places}\n"
        f"Fix: pass root=<folder>, set {DATA_ENV}=<folder holding '{relative}'>, "
        "or place the offline data in ../shared/data next to the project."
    )


def cache_dir() -> Path:
    """Directory for decoded data caches (``$AGENTIC_TOOLKIT_CACHE`` or ``~/.cache/agentic_toolkit``),
    created if needed; :class:`ToolkitError` when it is a file or cannot be created."""
    path = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "agentic_toolkit")).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission
        raise ToolkitError(
            f"cannot use the cache folder {path}: {exc.strerror or exc}. Set {CACHE_ENV}=<a writable folder>"
        ) from None
    return path
