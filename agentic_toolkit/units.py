"""Parsing and formatting of MAC and parameter counts ("1.77G" <-> 1_770_000_000, "60%") and
latencies ("12ms", "0.5s")."""

from __future__ import annotations

import math
import re

from .errors import ToolkitError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


_UNITS = {  # what -> (unit words accepted after the number, examples for the error message)
    "MAC count": (r"MACs?", "1.77G, 450M or 4.1e9"),
    "parameter count": (r"(?:params?|parameters?)", "15M, 350K or 1.5e7"),
}


def parse_count(value: str | int | float, what: str = "MAC count") -> int:
    """Parse ``"1.77G"``, ``"450M"``, ``"4.1e9"`` or a number into a positive integer count.

    ``what`` is ``"MAC count"`` (an optional ``MACs`` suffix) or ``"parameter count"`` (an
    optional ``params`` suffix, e.g. ``"15M params"``).
    """
    if what not in _UNITS:
        raise ToolkitError(f"what must be one of {', '.join(map(repr, _UNITS))}; got {what!r}")
    words, examples = _UNITS[what]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ToolkitError(f"a {what} must be a finite number, got {value!r}")
        result = int(round(value))
    else:
        pattern = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGtT]?)\s*(?:" + words + r")?\s*"
        m = re.fullmatch(pattern, str(value), flags=re.IGNORECASE)
        if not m or isinstance(value, bool):
            raise ToolkitError(f"cannot read {value!r} as a {what}; use e.g. {examples}")
        result = int(round(float(m.group(1)) * _SUFFIX[m.group(2).upper()]))
    if result <= 0:
        raise ToolkitError(f"a {what} must be > 0, got {value!r}")
    return result


def parse_macs(value: str | int | float) -> int:
    """Parse ``"1.77G"``, ``"450M"``, ``"4.1e9"`` or a number into an integer MAC count."""
    return parse_count(value, "MAC count")


def parse_params(value: str | int | float) -> int:
    """Parse ``"15M"``, ``"350K params"``, ``"1.5e7"`` or a number into a parameter count."""
    return parse_count(value, "parameter count")


_TIME_UNITS = {"ns": 1e-6, "us": 1e-3, "\u00b5s": 1e-3, "ms": 1.0, "s": 1e3}


def parse_latency(value: str | int | float) -> float:
    """Parse ``"12ms"``, ``"12 ms"``, ``"0.5s"``, ``"800us"`` or a number (milliseconds) into
    a positive latency in milliseconds."""
    hint = "use e.g. 12ms, 0.5s, 800us, or 60% of the unpruned model's latency"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = float(value)
        if not math.isfinite(ms):
            raise ToolkitError(f"a latency must be a finite number of milliseconds, got {value!r}")
    else:
        m = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z\u00b5]*)\s*", str(value), flags=re.I)
        unit = m.group(2).lower() if m else ""
        if not m or isinstance(value, bool) or (unit and unit not in _TIME_UNITS):
            raise ToolkitError(f"cannot read {value!r} as a latency; {hint}")
        ms = float(m.group(1)) * _TIME_UNITS.get(unit or "ms")
    if ms <= 0:
        raise ToolkitError(f"a latency must be > 0, got {value!r}")
    return ms


def parse_percent(value: object) -> float | None:
    """``"60%"`` -> ``0.6`` (a fraction in (0, 1]); ``None`` for anything that is not a string
    ending in ``%``."""
    if not isinstance(value, str) or not value.strip().endswith("%"):
        return None
    text = value.strip()[:-1].strip()
    try:
        pct = float(text)
    except ValueError:
        raise ToolkitError(f"cannot read {value!r} as a percentage; use e.g. 60%") from None
    if not math.isfinite(pct) or not 0 < pct <= 100:
        raise ToolkitError(f"a percentage budget must be in (0%, 100%], got {value!r}")
    return pct / 100.0


def format_macs(macs: float, digits: int = 3) -> str:
    """Format a MAC count with an SI suffix: ``1770000000 -> '1.77G'``."""
    for suffix in ("T", "G", "M", "K"):
        if abs(macs) >= _SUFFIX[suffix]:
            return f"{macs / _SUFFIX[suffix]:.{digits}g}{suffix}"
    return f"{macs:.{digits}g}"
