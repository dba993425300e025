"""The pruning strategy an agent proposes: a validated, JSON-serialisable dataclass.

Validation collects every problem at once (so an LLM repair request can quote them all)
and raises :class:`StrategyError`. ``importance`` may name any registered criterion
(:func:`~agentic_toolkit.pruning.criteria.register_importance`). Scope names in
``multipliers`` are checked against a concrete model later, by the pruning engine (see
:func:`agentic_toolkit.describe_scopes`).

Named presets (``strategy_preset("isomorphic_taylor")``, ``Strategy.preset(...)``,
``list_strategies()``) are registered with :func:`register_strategy`; the built-in ones are
registered at the end of this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ToolkitError
from .criteria import list_importances

MULTIPLIER_RANGE = (0.0, 4.0)  # exclusive lower bound, inclusive upper bound


class StrategyError(ToolkitError, ValueError):
    """An invalid strategy; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid strategy:\n- " + "\n- ".join(self.errors))


@dataclass(frozen=True)
class Strategy:
    """How to prune: importance criterion, global ratio and per-scope shape.

    The budget solver (:func:`~agentic_toolkit.fit_to_budget`) keeps importance and
    multipliers fixed and solves only for the ratio. Invalid values raise
    :class:`StrategyError` listing every problem at once.

    Args:
        importance: a registered criterion (:func:`~agentic_toolkit.list_importances`).
        pruning_ratio: the global channel ratio, in ``[0, 1)``.
        isomorphic: rank channels only within groups of identical structure.
        global_pruning: rank channels globally (True) or per layer (False).
        round_to: keep channel counts multiples of this integer; ``"auto"``: per-group
            multiples chosen from latency measured on the device; None: no rounding.
        multipliers: scale the ratio per named scope (:func:`~agentic_toolkit.describe_scopes`),
            e.g. ``{"stage4": 1.3, "vit.mlp": 1.2, "attn.head_dim": 0.5}``; each in ``(0, 4]``.
        ignored: module-name glob patterns never pruned (the classifier never is).
        max_layer_ratio: the largest fraction of channels any one layer loses, in ``(0, 1]``.

    Example:
        >>> import agentic_toolkit as at
        >>> s = at.Strategy(importance="taylor", multipliers={"stage3": 1.2})
        >>> wider = s.replace(pruning_ratio=0.4)
        >>> wider.pruning_ratio, wider.multipliers
        (0.4, {'stage3': 1.2})
        >>> at.Strategy.from_json(wider.to_json()) == wider
        True
        >>> at.Strategy(pruning_ratio=1.5)
        Traceback (most recent call last):
        ...
        agentic_toolkit.pruning.strategy.StrategyError: invalid strategy:
        - pruning_ratio must be a number in [0, 1); got 1.5
    """

    importance: str = "magnitude_l2"
    pruning_ratio: float = 0.3
    isomorphic: bool = True
    global_pruning: bool = True
    round_to: int | str | None = None  # an integer, or "auto": per-group multiples measured on the device
    multipliers: dict[str, float] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    max_layer_ratio: float = 0.9

    def __post_init__(self) -> None:
        errors = self.problems()
        if errors:
            raise StrategyError(errors)
        # store plain, copied containers so a strategy never aliases caller state
        object.__setattr__(self, "multipliers", {str(k): float(v) for k, v in self.multipliers.items()})
        object.__setattr__(self, "ignored", [str(p) for p in self.ignored])
        object.__setattr__(self, "pruning_ratio", float(self.pruning_ratio))
        object.__setattr__(self, "max_layer_ratio", float(self.max_layer_ratio))

    def problems(self) -> list[str]:
        """Every validation problem of this strategy (empty when valid)."""
        return _field_problems(self.__dict__)

    # --- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A plain dict (deep copy) of the fields."""
        return json.loads(self.to_json())

    def to_json(self, indent: int | None = None) -> str:
        """JSON text of the fields, keys sorted."""
        return json.dumps(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, indent=indent, sort_keys=True
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Strategy:
        """Build from a dict, reporting unknown fields and invalid values all at once."""
        if not isinstance(data, dict):
            raise StrategyError([f"a strategy must be a JSON object, got {type(data).__name__}"])
        known = {f.name for f in dataclasses.fields(cls)}
        errors = [f"unknown field '{k}' (allowed: {', '.join(sorted(known))})" for k in data if k not in known]
        merged = dict(cls().__dict__)
        merged.update({k: v for k, v in data.items() if k in known})
        errors += _field_problems(merged)
        if errors:
            raise StrategyError(errors)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> Strategy:
        """Parse JSON text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StrategyError([f"not valid JSON: {exc}"]) from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> Strategy:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Strategy:
        """The registered preset ``name`` with some fields overridden (see :func:`strategy_preset`)."""
        return strategy_preset(name, **overrides)

    @staticmethod
    def json_schema() -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of a strategy, e.g. for an LLM tool's input schema."""
        lo, hi = MULTIPLIER_RANGE
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Strategy",
            "description": "A structured-pruning strategy for a MAC budget.",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "importance": {
                    "type": "string",
                    "enum": list_importances(),
                    "description": "Channel importance criterion (a registered name).",
                },
                "pruning_ratio": {
                    "type": "number",
                    "minimum": 0.0,
                    "exclusiveMaximum": 1.0,
                    "description": "Global channel pruning ratio before multipliers.",
                },
                "isomorphic": {"type": "boolean", "description": "Rank channels only within groups of identical structure."},
                "global_pruning": {"type": "boolean", "description": "Rank channels globally (True) or per layer (False)."},
                "round_to": {
                    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}, {"const": "auto"}],
                    "description": "Keep channel counts multiples of this (hardware friendly); \"auto\": "
                    "per-layer multiples chosen from latency measured on the device.",
                },
                "multipliers": {
                    "type": "object",
                    "additionalProperties": {"type": "number", "exclusiveMinimum": lo, "maximum": hi},
                    "description": "Per-scope multipliers of the pruning ratio (scope name -> factor).",
                },
                "ignored": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Module-name glob patterns never pruned (the classifier always is).",
                },
                "max_layer_ratio": {
                    "type": "number",
                    "exclusiveMinimum": 0.0,
                    "maximum": 1.0,
                    "description": "Largest fraction of channels removed from any one layer.",
                },
            },
        }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _field_problems(d: dict[str, Any]) -> list[str]:
    errors = []
    imp = d.get("importance")
    registered = list_importances()
    if not isinstance(imp, str) or imp not in registered:
        errors.append(
            f"importance must be a registered criterion, one of {', '.join(registered)}; got {imp!r} "
            "(register your own with agentic_toolkit.register_importance)"
        )
    r = d.get("pruning_ratio")
    if not _is_number(r) or not 0.0 <= r < 1.0:
        errors.append(f"pruning_ratio must be a number in [0, 1); got {r!r}")
    for name in ("isomorphic", "global_pruning"):
        if not isinstance(d.get(name), bool):
            errors.append(f"{name} must be true or false; got {d.get(name)!r}")
    rt = d.get("round_to")
    if rt is not None and rt != "auto" and (not isinstance(rt, int) or isinstance(rt, bool) or rt < 1):
        errors.append(f"round_to must be null, an integer >= 1 or \"auto\"; got {rt!r}")
    mult = d.get("multipliers")
    lo, hi = MULTIPLIER_RANGE
    if not isinstance(mult, dict):
        errors.append(f"multipliers must be an object of scope name -> number; got {mult!r}")
    else:
        for k, v in mult.items():
            if not isinstance(k, str) or not k:
                errors.append(f"multiplier scope names must be non-empty strings; got {k!r}")
            if not _is_number(v) or not lo < v <= hi:
                errors.append(f"multiplier for '{k}' must be a number in ({lo}, {hi}]; got {v!r}")
    ign = d.get("ignored")
    if not isinstance(ign, (list, tuple)) or not all(isinstance(p, str) and p for p in ign):
        errors.append(f"ignored must be a list of non-empty module-name patterns; got {ign!r}")
    mlr = d.get("max_layer_ratio")
    if not _is_number(mlr) or not 0.0 < mlr <= 1.0:
        errors.append(f"max_layer_ratio must be a number in (0, 1]; got {mlr!r}")
    return errors


# ----------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class _Preset:
    strategy: Strategy
    description: str
    builtin: bool = False


_PRESETS: dict[str, _Preset] = {}


def register_strategy(name: str, strategy: Strategy, description: str = "", *, overwrite: bool = False) -> Strategy:
    """Register ``strategy`` as the named preset ``name`` (``strategy_preset(name)`` returns it).

    Args:
        name: the preset's name. A user preset registered again under the same name
            replaces the old one.
        strategy: the preset's fields.
        description: one line for :func:`describe_strategies`.
        overwrite: allow replacing a built-in preset.

    Returns:
        The registered strategy.

    Example:
        >>> import agentic_toolkit as at
        >>> _ = at.register_strategy("taylor_half_cap", at.Strategy(importance="taylor", max_layer_ratio=0.5),
        ...                          "Taylor importance; no layer loses more than half")
        >>> at.strategy_preset("taylor_half_cap").max_layer_ratio
        0.5
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ToolkitError(f"a strategy preset name must be a non-empty string without outer spaces; got {name!r}")
    if not isinstance(strategy, Strategy):
        raise ToolkitError(f"register_strategy needs a Strategy, got {type(strategy).__name__}")
    old = _PRESETS.get(name)
    if old is not None and old.builtin and not overwrite:
        raise ToolkitError(f"{name!r} is a built-in strategy preset; pass overwrite=True to replace it")
    _PRESETS[name] = _Preset(strategy.replace(), str(description))
    return strategy


def strategy_preset(name: str, **overrides: Any) -> Strategy:
    """A copy of the registered preset ``name``, with ``overrides`` applied.

    Args:
        name: a name :func:`list_strategies` returns.
        **overrides: :class:`Strategy` fields to change.

    Returns:
        A new :class:`Strategy`.

    Raises:
        StrategyError: an unknown name or field, listing what exists.

    Example:
        >>> import agentic_toolkit as at
        >>> s = at.strategy_preset("isomorphic_taylor", pruning_ratio=0.4)
        >>> s.importance, s.pruning_ratio, s.isomorphic
        ('taylor', 0.4, True)
    """
    if name not in _PRESETS:
        raise StrategyError([f"unknown strategy preset {name!r}; registered: {', '.join(_PRESETS)}"])
    if not overrides:
        return _PRESETS[name].strategy.replace()
    return Strategy.from_dict({**_PRESETS[name].strategy.to_dict(), **overrides})


def list_strategies() -> list[str]:
    """Names of the registered strategy presets (built-in ones first).

    Returns:
        The names :func:`strategy_preset` accepts.

    Example:
        >>> import agentic_toolkit as at
        >>> at.list_strategies()[:3]
        ['isomorphic_magnitude', 'isomorphic_taylor', 'global_magnitude']
    """
    return list(_PRESETS)


def describe_strategies():
    """The registered presets as a table.

    Returns:
        A DataFrame with ``name``, ``description``, ``importance``, ``isomorphic``,
        ``global_pruning``, ``max_layer_ratio``, ``round_to`` and ``builtin``.

    Example:
        >>> import agentic_toolkit as at
        >>> table = at.describe_strategies().set_index("name")
        >>> table.loc["uniform_l1", "importance"]
        'magnitude_l1'
    """
    import pandas as pd

    rows = []
    for name, p in _PRESETS.items():
        s = p.strategy
        rows.append({"name": name, "description": p.description, "importance": s.importance,
                     "isomorphic": s.isomorphic, "global_pruning": s.global_pruning,
                     "max_layer_ratio": s.max_layer_ratio, "round_to": s.round_to, "builtin": p.builtin})
    return pd.DataFrame(rows)


register_strategy(
    "isomorphic_magnitude",
    Strategy(importance="magnitude_l2", isomorphic=True, global_pruning=True),
    "the default: L2 magnitude, ranked globally within groups of identical structure "
    "(isomorphic pruning, Fang et al. 2024)",
)
register_strategy(
    "isomorphic_taylor",
    Strategy(importance="taylor", isomorphic=True, global_pruning=True),
    "the AgenticPruner paper's pruner: first-order Taylor importance on calibration batches, "
    "isomorphic ranking",
)
register_strategy(
    "global_magnitude",
    Strategy(importance="magnitude_l2", isomorphic=False, global_pruning=True),
    "L2 magnitude, one global ranking over all channel groups (cheap layers can be emptied first)",
)
register_strategy(
    "uniform_l1",
    Strategy(importance="magnitude_l1", isomorphic=False, global_pruning=False),
    "every layer loses the same fraction of its channels, the lowest L1 norms "
    "(Li et al. 2017, Pruning Filters for Efficient ConvNets)",
)
register_strategy(
    "uniform_magnitude",
    Strategy(importance="magnitude_l2", isomorphic=False, global_pruning=False),
    "every layer loses the same fraction of its channels, the lowest L2 norms",
)
for _name in list(_PRESETS):
    _PRESETS[_name] = dataclasses.replace(_PRESETS[_name], builtin=True)
