"""The settings of a search, grouped: what :class:`~agentic_toolkit.AgenticSearch` takes besides its basics.

Four small frozen dataclasses, each validated when built (a bad value raises
:class:`~agentic_toolkit.errors.ToolkitError` naming the field), each with its defaults:

* :class:`SearchBudget`: how the target is counted and met (tolerance, MAC counter, budgets
  besides MACs and the device they are measured on, whether the ratio is solved);
* :class:`SearchStart`: what the search starts from (a reused plan, calibration batches,
  the reference strategy, the sensitivity table);
* :class:`SearchPrompts`: the Analysis agent's prompt templates;
* :class:`SearchLogging`: the history file, resume, callbacks and progress bar.

:func:`grouped_options` maps the flat keywords that
:func:`~agentic_toolkit.run_agentic_pruning` accepts as shortcuts (``tolerance=``,
``log_path=``...) onto these groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ToolkitError
from ..parallel import Executor, resolve_executor
from ..pruning.budget import check_counter, check_tolerance
from ..pruning.plan import PrunePlan
from ..pruning.strategy import Strategy
from .prompting import check_templates


class _Group:
    """``replace`` and ``to_dict`` shared by the groups."""

    def replace(self, **changes: Any):
        """A copy with some fields changed (validated)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ToolkitError(f"{type(self).__name__} has no field {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (objects such as a plan or a callable as they are)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class SearchBudget(_Group):
    """How the MAC target is counted and met, and the budgets besides it.

    Args:
        tolerance: ``(over, under)`` in percent: a candidate is in band at most ``over`` %
            above and ``under`` % below the target.
        counter: the MAC convention of the target, the band and every MAC number of the
            search: ``"macs"`` or ``"torch_pruning"`` (``count_ops_and_params``, the paper's).
        constraints: budgets besides MACs, as :func:`~agentic_toolkit.fit_to_budget`'s (e.g.
            ``{"latency": "60%", "params": "15M"}``); a candidate is in band when all are met.
        device: where latency is measured (with a latency budget or ``latency_model``).
        threads: CPU threads for latency measurements (None: torch's setting).
        latency_model: a measured :class:`~agentic_toolkit.LatencyModel` to reuse; with it the
            prompt's scope table shows each scope's latency share and latency per MAC.
        latency_view: show the Analysis agent those latency columns (False hides them: an ablation).
        solve_budget: solve every proposal's global ratio onto the budget; False uses the
            proposer's ratio as is (the paper's setting).
        executor: where measurements may be fanned out: None (this process), ``"ray"`` or a
            :class:`~agentic_toolkit.parallel.RayExecutor` (its workers, threads, address).

    Returns:
        A validated, immutable settings object; :meth:`replace` gives a changed copy and
        :meth:`paper` the paper's setting.

    Example:
        >>> from agentic_toolkit import SearchBudget
        >>> SearchBudget(tolerance=(2, 2), constraints={"params": "50%"}).tolerance
        (2.0, 2.0)
        >>> SearchBudget.paper().solve_budget
        False
        >>> SearchBudget(executor="dask")
        Traceback (most recent call last):
        ...
        agentic_toolkit.errors.ToolkitError: executor must be None, 'ray' or a RayExecutor, got 'dask'
    """

    tolerance: tuple[float, float] = (1.0, 5.0)
    counter: str = "macs"
    constraints: Mapping[str, Any] | None = None
    device: str = "cpu"
    threads: int | None = None
    latency_model: Any = None
    latency_view: bool = True
    solve_budget: bool = True
    executor: Executor = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tolerance", check_tolerance(self.tolerance))
        check_counter(self.counter)
        if self.constraints is not None and not isinstance(self.constraints, Mapping):
            raise ToolkitError(f"constraints must be a dict such as {{'params': '15M'}}; got {self.constraints!r}")
        constraints = dict(self.constraints or {})
        if "macs" in constraints:
            raise ToolkitError("give the MAC budget as target_macs, not constraints['macs']")
        if constraints and not self.solve_budget:
            raise ToolkitError("constraints= need solve_budget=True (the solver meets them)")
        object.__setattr__(self, "constraints", constraints or None)
        if not isinstance(self.device, str) or not self.device:
            raise ToolkitError(f"device must be a device name such as 'cpu' or 'cuda', got {self.device!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ToolkitError(f"threads must be an integer >= 1 or None, got {self.threads!r}")
        if self.latency_model is not None and not callable(getattr(self.latency_model, "scope_shares", None)):
            raise ToolkitError(f"latency_model must be a LatencyModel (build_latency_model), got "
                               f"{type(self.latency_model).__name__}")
        resolve_executor(self.executor)  # refuses what it cannot run on
        object.__setattr__(self, "solve_budget", bool(self.solve_budget))
        object.__setattr__(self, "latency_view", bool(self.latency_view))

    @classmethod
    def paper(cls, **changes: Any) -> SearchBudget:
        """The paper's setting: the proposer's ratio as is, MACs counted as Torch-Pruning does."""
        return cls(**{"solve_budget": False, "counter": "torch_pruning", **changes})


@dataclass(frozen=True)
class SearchStart(_Group):
    """What the search starts from.

    Args:
        plan: a :class:`~agentic_toolkit.PrunePlan` of this model (e.g. ``BudgetFit.plan``)
            to reuse its dependency graph and importance scores (None: built once).
        calibration: batches for data-driven importance criteria when the plan is built.
        base_strategy: the reference strategy (revision 1) the proposals start from.
        sensitivity: the Profiling agent's sensitivity table, whose allocations are
            revisions 2 and 3: None (as the preset says: measured when there is an
            evaluator), True (measured), False (none) or a measured
            :class:`~agentic_toolkit.agents.sensitivity.SensitivityTable`.

    Returns:
        A validated, immutable settings object (:meth:`replace` gives a changed copy).

    Example:
        >>> from agentic_toolkit import SearchStart, Strategy
        >>> start = SearchStart(base_strategy=Strategy(importance="magnitude_l1"), sensitivity=False)
        >>> start.base_strategy.importance, start.sensitivity
        ('magnitude_l1', False)
    """

    plan: PrunePlan | None = None
    calibration: Any = None
    base_strategy: Strategy = field(default_factory=Strategy)
    sensitivity: Any = None

    def __post_init__(self) -> None:
        from .sensitivity import SensitivityTable

        if self.base_strategy is None:
            object.__setattr__(self, "base_strategy", Strategy())
        if not isinstance(self.base_strategy, Strategy):
            raise ToolkitError(f"base_strategy must be a Strategy, got {type(self.base_strategy).__name__}")
        if self.plan is not None and not isinstance(self.plan, PrunePlan):
            raise ToolkitError(f"plan must be a PrunePlan (e.g. BudgetFit.plan), got {type(self.plan).__name__}")
        if not (self.sensitivity is None or isinstance(self.sensitivity, (bool, SensitivityTable))):
            raise ToolkitError(
                f"sensitivity must be True, False or a SensitivityTable, got {type(self.sensitivity).__name__}")


@dataclass(frozen=True)
class SearchPrompts(_Group):
    """The Analysis agent's prompt templates (``string.Template`` text or a Path; None: packaged).

    Args:
        analysis: the prompt of every proposal (fields such as ``$target_macs``, ``$history``).
        repair: the follow-up when a reply does not parse.
        system: the system prompt of a language model backend (None: the backend's own).

    Returns:
        A validated, immutable settings object: a template file that does not exist fails here.

    Example:
        >>> from agentic_toolkit import SearchPrompts
        >>> SearchPrompts(system="You prune vision models.").system
        'You prune vision models.'
    """

    analysis: str | Path | None = None
    repair: str | Path | None = None
    system: str | Path | None = None

    def __post_init__(self) -> None:
        check_templates(analysis=self.analysis, repair=self.repair, system=self.system)


@dataclass(frozen=True)
class SearchLogging(_Group):
    """Where the search writes its history, and what it reports while it runs.

    Args:
        log_path: the JSONL history (flushed every revision); None keeps it in memory.
        resume: continue the search ``log_path`` holds (finished revisions are read back,
            not redone; a resume with different settings raises naming each field).
        on_revision: called with each revision's record as soon as it is logged (also for
            those read back on resume).
        progress: show a progress bar.
        model_name: the model's name in the history header (None: the timm architecture or
            the class name).

    Returns:
        A validated, immutable settings object (:meth:`to` is a shortcut for a log file).

    Example:
        >>> from agentic_toolkit import SearchLogging
        >>> SearchLogging.to("runs/search.jsonl", resume=True).log_path
        PosixPath('runs/search.jsonl')
    """

    log_path: str | Path | None = None
    resume: bool = False
    on_revision: Callable[[dict], None] | None = None
    progress: bool = True
    model_name: str | None = None

    def __post_init__(self) -> None:
        if self.log_path is not None:
            if not isinstance(self.log_path, (str, Path)) or not str(self.log_path):
                raise ToolkitError(f"log_path must be a file path or None, got {self.log_path!r}")
            object.__setattr__(self, "log_path", Path(self.log_path))
        if self.on_revision is not None and not callable(self.on_revision):
            raise ToolkitError("on_revision must be a callable record -> None, or None")
        if self.model_name is not None and not isinstance(self.model_name, str):
            raise ToolkitError(f"model_name must be a string or None, got {type(self.model_name).__name__}")
        object.__setattr__(self, "resume", bool(self.resume))
        object.__setattr__(self, "progress", bool(self.progress))

    @classmethod
    def to(cls, log_path: str | Path, **changes: Any) -> SearchLogging:
        """Log to ``log_path`` (with any other field changed)."""
        return cls(log_path=log_path, **changes)


#: The flat keyword shortcuts: ``name -> (group keyword, field)``.
SHORTCUTS: dict[str, tuple[str, str]] = {
    **{n: ("budget", n) for n in (f.name for f in dataclasses.fields(SearchBudget))},
    **{n: ("start", n) for n in (f.name for f in dataclasses.fields(SearchStart))},
    "prompt": ("prompts", "analysis"), "repair_prompt": ("prompts", "repair"), "system": ("prompts", "system"),
    **{n: ("logging", n) for n in (f.name for f in dataclasses.fields(SearchLogging))},
}
GROUPS: dict[str, type] = {"budget": SearchBudget, "start": SearchStart, "prompts": SearchPrompts,
                           "logging": SearchLogging}


def settings_group(value: Any, cls: type) -> Any:
    """``value`` when it is a ``cls`` group, the group's defaults for None; else :class:`ToolkitError`."""
    if value is None:
        return cls()
    if not isinstance(value, cls):
        name = next(k for k, v in GROUPS.items() if v is cls)
        raise ToolkitError(f"{name} must be a {cls.__name__} (or None for the defaults), got {type(value).__name__}")
    return value


def grouped_options(**options: Any) -> dict[str, Any]:
    """:class:`~agentic_toolkit.AgenticSearch`'s keywords from flat shortcuts (see :data:`SHORTCUTS`).

    A shortcut sets one field of its group: of the group given too (``budget=...``), else of
    the defaults. Every other keyword (``backend``, ``evaluator``, ``preset``,
    ``max_revisions``, ``patience``) passes through.

    Args:
        **options: AgenticSearch keywords and shortcuts, e.g. ``tolerance=(2, 2), log_path="h.jsonl"``.

    Returns:
        The keywords with the shortcuts folded into ``budget``, ``start``, ``prompts``, ``logging``.

    Example:
        >>> from agentic_toolkit.agents.settings import grouped_options
        >>> opts = grouped_options(tolerance=(2, 2), progress=False, max_revisions=3)
        >>> opts["budget"].tolerance, opts["logging"].progress, opts["max_revisions"]
        ((2.0, 2.0), False, 3)
    """
    out = {k: v for k, v in options.items() if k not in SHORTCUTS}
    changes: dict[str, dict[str, Any]] = {}
    for name, value in options.items():
        if name in SHORTCUTS:
            group, key = SHORTCUTS[name]
            changes.setdefault(group, {})[key] = value
    for group, fields in changes.items():
        out[group] = settings_group(out.get(group), GROUPS[group]).replace(**fields)
    return out


__all__ = ["GROUPS", "SHORTCUTS", "SearchBudget", "SearchLogging", "SearchPrompts", "SearchStart",
           "grouped_options", "settings_group"]
