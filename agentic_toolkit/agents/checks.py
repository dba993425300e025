"""Checks a search runs before any work: its inputs, and whether a history log may be resumed."""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn

from ..errors import ToolkitError
from ..inputs import check_model_inputs
from .history import HistoryLog
from .targets import check_target

#: Header fields that must match for ``resume=True`` to continue a log: everything that
#: changes the outcome (the backend's operational settings excepted, see
#: :data:`BACKEND_OPERATIONAL`).
RESUME_KEYS = (
    "version", "target_macs", "tolerance", "solve_budget", "max_revisions", "patience", "base_macs",
    "weights_sha256", "base_strategy", "backend_name", "backend", "evaluator", "calibration_sha256",
    "templates", "constraints", "sensitivity",
)
#: Backend settings that may change between sessions without changing what is proposed
#: (a resumed search may reach the same model through another endpoint, wait longer...).
BACKEND_OPERATIONAL = ("base_url", "timeout_s", "retries")

def validate_inputs(target_macs, max_revisions, patience, evaluator, model, example_inputs) -> int | str:
    """The target MACs; :class:`ToolkitError` naming the first bad input.

    A percentage target (``"50%"``) is returned as given, to be resolved against the
    model's MACs (:func:`~agentic_toolkit.agents.targets.resolve_target`).

    ``max_revisions`` and ``patience`` may be None (chosen by the search, see
    :func:`~agentic_toolkit.agents.candidates.revision_budget`)."""
    if not isinstance(model, nn.Module):
        raise ToolkitError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = check_target(target_macs)
    for name, value in (("max_revisions", max_revisions), ("patience", patience)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ToolkitError(f"{name} must be an integer >= 1 (or None for the default), got {value!r}")
    if example_inputs is None:
        raise ToolkitError("example_inputs is required, e.g. torch.randn(1, 3, 224, 224)")
    check_model_inputs(model, example_inputs)
    if evaluator is not None and not callable(evaluator):
        raise ToolkitError("evaluator must be a callable model -> score (higher is better), or None")
    return target


def model_name_of(model: nn.Module, given: str | None) -> str:
    """``given``, else the timm architecture name, else the class name."""
    if given:
        return given
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)


def weights_fingerprint(model: nn.Module) -> str | None:
    """sha256 of every parameter and buffer (names, shapes, values); None on the meta device.

    Recorded in the history header so that ``resume=True`` refuses a different model (e.g. a
    fresh random initialisation), whose pruning would not reproduce the recorded revisions.
    """
    digest = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            return None
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_resume(log: HistoryLog, header: dict) -> None:
    """Raise :class:`ToolkitError` unless ``log`` (being resumed) was started with these settings.

    Every field of :data:`RESUME_KEYS` that differs is named with its logged and its current
    value (as the log would write it: secrets redacted).
    """
    old = log.records[0]
    if old.get("type") != "header":
        raise ToolkitError(f"{log.path} is not a search history (no header line)")
    now = {k: log.redact(header.get(k)) for k in RESUME_KEYS}
    diff = [k for k in RESUME_KEYS if _comparable(k, old.get(k)) != _comparable(k, now.get(k))]
    if diff:
        raise ToolkitError(
            f"cannot resume {log.path}: it was started with different settings ("
            + "; ".join(f"{k}: {old.get(k)!r} in the log vs {now[k]!r} now" for k in diff)
            + "); use a new log path"
        )


def _comparable(key: str, value):
    if key == "backend" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in BACKEND_OPERATIONAL}
    return value


__all__ = ["BACKEND_OPERATIONAL", "RESUME_KEYS", "check_resume", "model_name_of", "validate_inputs", "weights_fingerprint"]
