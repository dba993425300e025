"""What identifies a search, for its history header: everything that changes the outcome.

A resumed search must replay the uninterrupted one exactly, so the header records (and
:func:`~agentic_toolkit.agents.checks.check_resume` compares) the evaluator's identity and a
fingerprint of its data, the calibration batches, the prompt templates, besides the target,
the model weights and the backend. :func:`score_model` scores a candidate and returns the
model as the evaluator scored it (e.g. with re-estimated BatchNorm statistics).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ..training.proxy import batches_sha256

#: What the header says about data a search cannot inspect (an arbitrary callable's).
UNKNOWN_DATA = "data unknown"


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function or class, or of an object's class (a callable instance)."""
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{target.__qualname__}" if module and module != "builtins" else target.__qualname__


def evaluator_identity(evaluator: Callable[[nn.Module], float] | None) -> dict | None:
    """``{"name", "settings", "data"}`` of an evaluator, or None without one.

    ``data`` is the evaluator's ``fingerprint()`` (e.g. the sha256 of
    :class:`~agentic_toolkit.training.proxy.ProxyAccuracy`'s batches) when it has one,
    else ``"data unknown"``; ``settings`` its ``settings()`` when it has them.
    """
    if evaluator is None:
        return None
    fingerprint = getattr(evaluator, "fingerprint", None)
    settings = getattr(evaluator, "settings", None)
    return {
        "name": qualified_name(evaluator),
        "settings": settings() if callable(settings) else {},
        "data": fingerprint() if callable(fingerprint) else UNKNOWN_DATA,
    }


def calibration_fingerprint(calibration) -> str | None:
    """sha256 of the calibration batches the plan uses (None without calibration)."""
    if calibration is None:
        return None
    return batches_sha256(list(calibration))


def text_sha256(text: str) -> str:
    """sha256 of a text (a prompt template), hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def score_model(evaluator: Callable[[nn.Module], float], model: nn.Module) -> tuple[float, nn.Module]:
    """``(score, the model as scored)``: ``evaluator.scored(model)`` when it has that method.

    A plain callable scores ``model`` itself, which is then returned as is.
    """
    scored = getattr(evaluator, "scored", None)
    if callable(scored):
        score, out = scored(model)
        return float(score), out
    return float(evaluator(model)), model


__all__ = [
    "UNKNOWN_DATA",
    "calibration_fingerprint",
    "evaluator_identity",
    "qualified_name",
    "score_model",
    "text_sha256",
]
