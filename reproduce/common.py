"""What the drivers of this repository's studies share: where their tables go, and the
result object some of them return."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agentic_toolkit.paths import PROJECT_ROOT


def output_dir(smoke: bool = False, root: str | Path | None = None) -> Path:
    """``data/`` of the checkout (``data/smoke/``, git-ignored, for smoke runs)."""
    base = Path(root) if root is not None else PROJECT_ROOT / "data"
    return base / "smoke" if smoke else base


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


def parse_study_args(ap: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, bool]:
    """A study's command line: ``(args, smoke)`` (``--smoke`` or ``SMOKE`` set); ``--threads``,
    when given, sets torch's threads."""
    args = ap.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return args, args.smoke or bool(os.environ.get("SMOKE"))
