"""What a measurement ran on, stamped onto every row of a benchmark or study table.

One place for the machine description (CPU model, core count, torch threads, GPU), the
date and the versions of torch, timm, torch-pruning and this package, so every CSV in
``data/`` says where its numbers come from. Benchmarks and notebooks both use
:func:`annotate` and :func:`write_table`.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..paths import PROJECT_ROOT
from ..version import __version__

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


def output_dir(smoke: bool = False, root: str | Path | None = None) -> Path:
    """``data/`` of the checkout (``data/smoke/``, git-ignored, for smoke runs)."""
    base = Path(root) if root is not None else PROJECT_ROOT / "data"
    return base / "smoke" if smoke else base


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV (no index), creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


@dataclass
class StudyResult:
    """A study's table (``frame``, one row per measurement) and ``report`` (settings and
    final numbers); subclasses add ``summary()``."""

    frame: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """A copy of the table."""
        return self.frame.copy()

    def to_dict(self) -> dict[str, Any]:
        """The report (JSON-ready)."""
        return dict(self.report)
