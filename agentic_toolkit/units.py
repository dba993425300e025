"""Parsing and formatting of MAC counts ("1.77G" <-> 1_770_000_000)."""

from __future__ import annotations

import re

from .errors import ToolkitError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_macs(value: str | int | float) -> int:
    """Parse ``"1.77G"``, ``"450M"``, ``"4.1e9"`` or a number into an integer MAC count."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        result = int(round(value))
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGtT]?)(?:MACs?)?\s*", str(value))
        if not m:
            raise ToolkitError(f"cannot read {value!r} as a MAC count; use e.g. 1.77G, 450M or 4.1e9")
        result = int(round(float(m.group(1)) * _SUFFIX[m.group(2).upper()]))
    if result <= 0:
        raise ToolkitError(f"a MAC count must be > 0, got {value!r}")
    return result


def format_macs(macs: float, digits: int = 3) -> str:
    """Format a MAC count with an SI suffix: ``1770000000 -> '1.77G'``."""
    for suffix in ("T", "G", "M", "K"):
        if abs(macs) >= _SUFFIX[suffix]:
            return f"{macs / _SUFFIX[suffix]:.{digits}g}{suffix}"
    return f"{macs:.{digits}g}"
