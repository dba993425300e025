"""Search presets: named bundles of the settings that trade search seconds for accuracy.

A preset says whether the Profiling agent measures a sensitivity table before the analyst
explores, at which shares and with how cheap a probe scorer, and how many revisions the
search may spend. ``AgenticSearch(..., preset="default")`` (the default) applies one; any
setting given explicitly (``SearchStart(sensitivity=...)``, ``max_revisions=``, ``patience=``)
wins over it.
:func:`list_search_presets` lists them with their cost and accuracy as measured by
``benchmarks/search_pareto.py`` (``data/search_pareto.csv``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ToolkitError
from ..paths import PROJECT_ROOT
from .sensitivity import FRACTIONS

#: The finer shares of the ``thorough`` preset (the study's ``*_fine`` table: 7 shares).
FINE_FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
#: Where the measured cost of each preset comes from.
PARETO_CSV = PROJECT_ROOT / "data" / "search_pareto.csv"


@dataclass(frozen=True)
class SearchPreset:
    """One named bundle of search settings.

    Args:
        name: the preset's name.
        description: one line on what it does.
        sensitivity: the Profiling agent measures a per-group sensitivity table (needs an
            evaluator) whose two allocations are revisions 2 and 3.
        fractions: the shares of each group's channels the table cuts.
        adaptive: measure the middle share first, then one side per group
            (:func:`~agentic_toolkit.agents.sensitivity.measure_sensitivity`).
        probe_images: ``(eval_images, bn_images)`` of the table's scorer when the evaluator is a
            :class:`~agentic_toolkit.training.proxy.ProxyAccuracy`: the first of its own
            held-out batches (None: all of them).
        probe_metric: what that scorer measures: ``"neg_loss"`` (minus the cross-entropy: a
            continuous score that ranks one group's damage on few images) or ``"top1"``.
            A plain callable evaluator scores the table itself.
        max_revisions: the search's revision budget (None: timed, about 15 minutes).

    Returns:
        An immutable preset; pass it (or its name) as ``AgenticSearch(preset=...)``.

    Example:
        >>> import dataclasses
        >>> from agentic_toolkit import SearchPreset
        >>> from agentic_toolkit.agents.presets import search_preset
        >>> quick = dataclasses.replace(search_preset("fast"), name="quick", max_revisions=3)
        >>> quick.fractions, quick.max_revisions, quick.sensitivity
        ((0.5,), 3, True)
        >>> isinstance(quick, SearchPreset)
        True
    """

    name: str
    description: str
    sensitivity: bool = True
    fractions: tuple[float, ...] = FRACTIONS
    adaptive: bool = True
    probe_images: tuple[int | None, int | None] = (512, 256)
    probe_metric: str = "neg_loss"
    max_revisions: int | None = 8

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def probe(self, evaluator):
        """The scorer of the sensitivity table: a cheaper copy of a proxy, else ``evaluator``."""
        subset = getattr(evaluator, "subset", None)
        return subset(*self.probe_images, metric=self.probe_metric) if callable(subset) else evaluator

    def table_spec(self, evaluator) -> dict[str, Any]:
        """What decides the table this preset measures with ``evaluator`` (the history header's
        ``sensitivity``)."""
        own = not callable(getattr(evaluator, "subset", None))
        return {"fractions": list(self.fractions), "adaptive": self.adaptive,
                "probe": "evaluator" if own else [*self.probe_images, self.probe_metric]}


PRESETS: dict[str, SearchPreset] = {
    p.name: p
    for p in (
        SearchPreset("fast", "one share (half of each group's channels) scored by a cheap loss probe; its "
                     "allocations seed the analyst; 5 revisions", fractions=(0.5,), adaptive=False, max_revisions=5),
        SearchPreset("default", "adaptive sensitivity table (2 of 3 shares per group) scored by a cheap loss probe; "
                     "its two allocations seed the analyst; 8 revisions"),
        SearchPreset("thorough", "7-share sensitivity table scored by the loss on all the evaluator's images; its "
                     "allocations seed the analyst; 16 revisions",
                     fractions=FINE_FRACTIONS, adaptive=False, probe_images=(None, None), max_revisions=16),
    )
}


def search_preset(preset: str | SearchPreset) -> SearchPreset:
    """The :class:`SearchPreset` named ``preset`` (a preset object is returned as is)."""
    if isinstance(preset, SearchPreset):
        return preset
    if preset not in PRESETS:
        raise ToolkitError(f"unknown search preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def list_search_presets():
    """The presets as a DataFrame: their settings and, where ``data/search_pareto.csv`` holds
    them, the measured mean search seconds, proxy score and test top-1 per model and budget.

    Returns:
        A pandas DataFrame, one row per preset (and per measured model and budget).

    Example:
        >>> from agentic_toolkit.agents.presets import list_search_presets
        >>> list(list_search_presets()["preset"].unique())
        ['fast', 'default', 'thorough']
    """
    import pandas as pd

    rows = pd.DataFrame([{"preset": p.name, "description": p.description, "shares": len(p.fractions),
                          "adaptive": p.adaptive, "probe_images": p.probe_images, "probe_metric": p.probe_metric,
                          "max_revisions": p.max_revisions} for p in PRESETS.values()])
    if not PARETO_CSV.is_file():
        return rows
    measured = pd.read_csv(PARETO_CSV)
    measured = measured[measured["searcher"].isin(PRESETS)]
    stats = (measured.groupby(["searcher", "model", "budget"], as_index=False)
             .agg(search_seconds=("search_seconds", "mean"), proxy_score=("proxy_score", "mean"),
                  test_top1=("test_top1", "mean"))
             .rename(columns={"searcher": "preset"}))
    return rows.merge(stats, on="preset", how="left")


__all__ = ["FINE_FRACTIONS", "PRESETS", "SearchPreset", "list_search_presets", "search_preset"]
