"""Tables on disk: write a DataFrame as CSV, and stamp each row with what it was measured on.

:func:`annotate` appends the machine description (CPU model, core count, torch threads,
GPU), the date and the versions of torch, timm, torch-pruning and this package to every
row, so a CSV says where its numbers come from; :func:`write_table` writes it. The
notebooks, benchmarks and ``reproduce/`` drivers all write their tables with these two.

Example:
    >>> import pandas as pd
    >>> from agentic_toolkit.tables import MACHINE_COLUMNS, annotate
    >>> row = annotate(pd.DataFrame({"model": ["resnet20"], "top1": [91.2]}), threads=1)
    >>> list(row.columns) == ["model", "top1", *MACHINE_COLUMNS]
    True
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .version import __version__

#: The columns :func:`machine_info` adds, in order.
MACHINE_COLUMNS = (
    "machine", "cpu_cores", "torch_threads", "gpu", "date",
    "python", "torch", "timm", "torch_pruning", "agentic_toolkit",
)


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask where available)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def machine_info(threads: int | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The machine, date and versions as one flat dict (keys :data:`MACHINE_COLUMNS`).

    ``threads`` is the torch thread count the measurement used (default: the current
    setting); ``device`` names the GPU in ``gpu`` when it is a CUDA device.
    """
    dev = torch.device(device)
    gpu = ""
    if dev.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(dev)
    return {
        "machine": cpu_model(),
        "cpu_cores": cpu_cores(),
        "torch_threads": int(threads) if threads is not None else torch.get_num_threads(),
        "gpu": gpu,
        "date": _dt.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": _version("timm"),
        "torch_pruning": _version("torch-pruning"),
        "agentic_toolkit": __version__,
    }


def machine_line(threads: int | None = None, device: str | torch.device = "cpu") -> str:
    """One human-readable line of :func:`machine_info`."""
    m = machine_info(threads, device)
    gpu = f", {m['gpu']}" if m["gpu"] else ""
    return (f"{m['machine']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads{gpu}; "
            f"{m['date']}; torch {m['torch']}, timm {m['timm']}, torch-pruning {m['torch_pruning']}")


def annotate(df: pd.DataFrame, threads: int | None = None, device: str | torch.device = "cpu") -> pd.DataFrame:
    """``df`` with the :func:`machine_info` columns appended (same value on every row).

    A column ``df`` already has (e.g. a per-row ``torch_threads``) is kept as is.
    """
    info = machine_info(threads, device)
    return df.assign(**{k: v for k, v in info.items() if k not in df.columns})


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV (no index), creating the folder; returns the path.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import pandas as pd
        >>> from agentic_toolkit.tables import write_table
        >>> path = write_table(pd.DataFrame({"a": [1]}), Path(tempfile.mkdtemp()) / "out" / "t.csv")
        >>> pd.read_csv(path)["a"].tolist()
        [1]
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path
