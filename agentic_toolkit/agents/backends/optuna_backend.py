"""Black-box baselines: Optuna's TPE (``backend="optuna"``) and random search (``backend="random"``).

The space is the analyst's: the importance criterion (``magnitude_l1`` or ``magnitude_l2``)
and one log-uniform multiplier in ``[0.05, 2]`` per scope of the plan (``ctx.scopes``; the
``attn.heads`` scope is left alone: a multiplier there switches on head pruning). The
global ratio is the base strategy's: run it with ``solve_budget=True`` (the default of a
search), so that the budget solver lands every trial in the MAC band and the sampler only
learns the shape.

Reach. A group's ratio is the global ratio times the multipliers of its position scope
(stem, stages, head) and its kind scope (residual stream, block inner widths, attention),
so a common factor on one family mostly rescales the solved ratio. Each sampled point is
scaled per family so that the family's largest multiplier is 2 (the point proposed, logged
and fed back to the sampler), which keeps most shapes within the solver's reach; in a
search a point whose smallest reachable MACs (``ctx.min_macs``) are still above the band is
rejected and sampled again (up to :data:`MAX_TRIES` times).

Stateless by construction. Every :meth:`~OptunaBackend.propose` builds a fresh in-memory
study whose sampler is seeded with ``seed + revision``, adds every earlier revision of the
history as a finished trial (params read back from its proposed strategy; a scored in-band
revision is COMPLETE with its score, any other one FAIL; a strategy outside the space is
left out), and asks it for one trial. The proposal is a function of the history alone, so
a resumed search replays the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

from ...errors import ToolkitError
from ...pruning.strategy import Strategy
from .base import PlannerBackend, ProposalContext

#: The importance criteria the samplers choose from.
IMPORTANCES = ("magnitude_l1", "magnitude_l2")
#: Bounds of each scope's log-uniform multiplier.
MULTIPLIER_BOUNDS = (0.05, 2.0)
SAMPLERS = ("tpe", "random")
#: Samples per revision before an unreachable shape is proposed anyway (and fails).
MAX_TRIES = 32
#: Scope kinds that say where a group is (the other family says what it is).
POSITION_KINDS = ("stem", "stage", "head")
_PREFIX = "multiplier:"


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a dev dependency
        raise ToolkitError("the optuna and random backends need optuna: pip install 'optuna>=3.6'") from None
    return optuna


@contextlib.contextmanager
def _quiet(optuna) -> Iterator[None]:
    """Optuna's INFO lines and experimental warnings off for this block only."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)


def scope_families(scopes) -> list[list[str]]:
    """The scopes of the space, by family: position scopes, then kind scopes (heads left out).

    Args:
        scopes: the plan's scope table (``describe_scopes``; a ``kind`` column), or None.

    Returns:
        One or two non-empty lists of scope names (one list when the table has no ``kind``).
    """
    if scopes is None or len(scopes) == 0:
        return []
    if "kind" not in scopes:
        return [[str(n) for n in scopes["name"]]]
    kinds = dict(zip(map(str, scopes["name"]), scopes["kind"], strict=True))
    position = [n for n, k in kinds.items() if k in POSITION_KINDS]
    other = [n for n, k in kinds.items() if k not in POSITION_KINDS and k != "heads"]
    return [f for f in (position, other) if f]


def normalised(values: dict[str, float], families: list[list[str]]) -> dict[str, float]:
    """``values`` scaled per family so that each family's largest is the upper bound (rounded to 4 decimals)."""
    low, high = MULTIPLIER_BOUNDS
    out = {}
    for family in families:
        factor = high / max(values[n] for n in family)
        out.update({n: min(max(round(values[n] * factor, 4), low), high) for n in family})
    return out


def reachable(ctx: ProposalContext, strategy: Strategy) -> bool:
    """False when ``ctx.min_macs`` says ``strategy`` cannot get below the top of the band."""
    if ctx.min_macs is None:
        return True
    try:
        return ctx.min_macs(strategy) <= ctx.band[1]
    except ToolkitError:  # an invalid strategy fails (and is recorded) when pruned
        return True


def search_space(optuna, scopes: list[str]) -> dict[str, Any]:
    """Optuna distributions: ``importance`` and one ``multiplier:<scope>`` per scope."""
    low, high = MULTIPLIER_BOUNDS
    space: dict[str, Any] = {"importance": optuna.distributions.CategoricalDistribution(IMPORTANCES)}
    for name in scopes:
        space[_PREFIX + name] = optuna.distributions.FloatDistribution(low, high, log=True)
    return space


def record_params(record: dict, scopes: list[str]) -> dict[str, Any] | None:
    """The trial params of a revision's proposed strategy, or None when it is outside the space."""
    proposed = record.get("proposed") or {}
    mults = proposed.get("multipliers") or {}
    if proposed.get("importance") not in IMPORTANCES or set(mults) - set(scopes):
        return None
    params: dict[str, Any] = {"importance": proposed["importance"]}
    low, high = MULTIPLIER_BOUNDS
    for name in scopes:
        value = float(mults.get(name, 1.0))
        if not (low <= value <= high and math.isfinite(value)):
            return None
        params[_PREFIX + name] = value
    return params


def history_trials(optuna, history, scopes: list[str], space: dict[str, Any]) -> list:
    """Earlier revisions as frozen trials: COMPLETE with the score when scored in band, else FAIL."""
    trials = []
    for record in history:
        params = record_params(record, scopes)
        if params is None:
            continue
        score = record.get("score")
        done = bool(record.get("in_band")) and score is not None and math.isfinite(float(score))
        state = optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL
        trials.append(optuna.trial.create_trial(
            state=state, value=float(score) if done else None, params=params, distributions=space,
        ))
    return trials


class OptunaBackend(PlannerBackend):
    """Propose strategies with Optuna's TPE (``sampler="tpe"``) or random sampler; see the module docstring.

    Args:
        sampler: ``"tpe"`` (name ``optuna``) or ``"random"`` (name ``random``).
        seed: the sampler of revision ``k`` is seeded with ``seed + k``.
        n_startup_trials: TPE samples at random until this many revisions are scored.
    """

    def __init__(self, sampler: str = "tpe", seed: int = 0, n_startup_trials: int = 4):
        if sampler not in SAMPLERS:
            raise ToolkitError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ToolkitError(f"seed must be an integer, got {seed!r}")
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) or n_startup_trials < 1:
            raise ToolkitError(f"n_startup_trials must be an integer >= 1, got {n_startup_trials!r}")
        _optuna()  # fail now, not at the first revision, when optuna is missing
        self.sampler, self.seed, self.n_startup_trials = sampler, seed, n_startup_trials
        self.name = "optuna" if sampler == "tpe" else "random"

    def describe(self) -> dict:
        low, high = MULTIPLIER_BOUNDS
        out = {"backend": self.name, "sampler": self.sampler, "seed": self.seed,
               "optuna": _optuna().__version__,
               "space": {"importance": list(IMPORTANCES), "multipliers": f"log-uniform [{low}, {high}] per scope"}}
        if self.sampler == "tpe":
            out["n_startup_trials"] = self.n_startup_trials
        return out

    def _make_sampler(self, seed: int):
        samplers = _optuna().samplers
        if self.sampler == "random":
            return samplers.RandomSampler(seed=seed)
        return samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials)

    def propose(self, ctx: ProposalContext) -> tuple[Strategy, str]:
        optuna, families = _optuna(), scope_families(ctx.scopes)
        scopes = [n for f in families for n in f]
        with _quiet(optuna):
            space = search_space(optuna, scopes)
            study = optuna.create_study(direction="maximize", sampler=self._make_sampler(self.seed + ctx.revision))
            trials = history_trials(optuna, ctx.history, scopes, space)
            study.add_trials(trials)
            tries = 0
            while tries < MAX_TRIES:
                tries += 1
                trial = study.ask(space)
                strategy = self._strategy(ctx, trial.params, families)
                if reachable(ctx, strategy):
                    break
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        scored = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        shape = ", ".join(f"{k} x{v:.3g}" for k, v in strategy.multipliers.items()) or "no scopes"
        why = (f"{self.name} ({self.sampler} sampler, seed {self.seed + ctx.revision}) after {scored} scored "
               f"of {len(trials)} earlier trial(s), sample {tries}: {strategy.importance}; {shape}")
        return strategy, why

    @staticmethod
    def _strategy(ctx: ProposalContext, params: dict[str, Any], families: list[list[str]]) -> Strategy:
        raw = {n: float(params[_PREFIX + n]) for f in families for n in f}
        return ctx.base_strategy.replace(importance=params["importance"], multipliers=normalised(raw, families))


__all__ = [
    "IMPORTANCES",
    "MAX_TRIES",
    "MULTIPLIER_BOUNDS",
    "OptunaBackend",
    "history_trials",
    "normalised",
    "reachable",
    "record_params",
    "scope_families",
    "search_space",
]
