"""Strategy backends and their registry (name -> class).

``make_backend("analyst")``, ``make_backend("anthropic", model=..., base_url=...)``,
``make_backend(my_function)`` (any ``prompt -> text`` callable) or an instance as is;
``make_backend("optuna")`` (TPE) and ``make_backend("random")`` are black-box baselines
(:mod:`~agentic_toolkit.agents.backends.optuna_backend`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from ...errors import ToolkitError
from .analyst import AnalystBackend
from .base import (
    Backend,
    BackendError,
    CallableBackend,
    LLMBackend,
    PlannerBackend,
    ProposalContext,
    Reply,
    RetryPolicy,
)
from .grid import GridBackend


def _anthropic(**kw: Any) -> Backend:
    from .anthropic_backend import AnthropicBackend

    return AnthropicBackend(**kw)


def _openai(**kw: Any) -> Backend:
    from .openai_compat import OpenAICompatBackend

    return OpenAICompatBackend(**kw)


def _optuna_tpe(**kw: Any) -> Backend:
    from .optuna_backend import OptunaBackend

    return OptunaBackend(sampler="tpe", **kw)


def _random(**kw: Any) -> Backend:
    from .optuna_backend import OptunaBackend

    return OptunaBackend(sampler="random", **kw)


#: Registered backend names -> factories taking keyword options.
BACKENDS: dict[str, Callable[..., Backend]] = {
    "analyst": AnalystBackend,
    "grid": GridBackend,
    "anthropic": _anthropic,
    "openai": _openai,
    "optuna": _optuna_tpe,
    "random": _random,
}


def make_backend(spec: str | Backend | Callable[[str], str], **options: Any) -> Backend:
    """Resolve a backend name, instance or ``prompt -> text`` callable into a :class:`Backend`.

    Raises :class:`ToolkitError` for an unknown name or bad options (e.g. no API key for
    ``anthropic``) before any work is done.
    """
    if isinstance(spec, Backend):
        if options:
            raise ToolkitError("backend options are only accepted with a backend name")
        return spec
    if isinstance(spec, str):
        factory = BACKENDS.get(spec.lower())
        if factory is None:
            close = difflib.get_close_matches(spec.lower(), list(BACKENDS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ToolkitError(
                f"unknown backend {spec!r}; choose one of {', '.join(BACKENDS)} "
                f"or pass a callable prompt -> text.{hint}"
            )
        try:
            return factory(**options)
        except TypeError as exc:
            raise ToolkitError(f"bad options for backend {spec!r}: {exc}") from None
    if callable(spec):
        return CallableBackend(spec, **options)
    raise ToolkitError(
        f"backend must be a name ({', '.join(BACKENDS)}), a Backend or a callable; got {type(spec).__name__}"
    )


__all__ = [
    "BACKENDS",
    "AnalystBackend",
    "Backend",
    "BackendError",
    "CallableBackend",
    "GridBackend",
    "LLMBackend",
    "PlannerBackend",
    "ProposalContext",
    "Reply",
    "RetryPolicy",
    "make_backend",
]
