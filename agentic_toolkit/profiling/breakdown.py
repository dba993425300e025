"""MACs per stage and per layer type of several profiles, as one long table, and its plot.

:func:`mac_breakdown` turns :class:`~agentic_toolkit.profiling.MacProfile` objects into one
table (write it with :func:`agentic_toolkit.tables.write_table`); :func:`plot_mac_profile`
draws one model's part of that table, so a figure can be redrawn from the CSV alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..units import format_macs
from .profile import MacProfile


def mac_breakdown(profiles: Mapping[str, MacProfile], split_dominant: float = 0.9) -> pd.DataFrame:
    """Long table of MACs per stage and per layer type, for every profile.

    Columns: ``model``, ``kind`` (``stage`` or ``type``), ``group``, ``modules``, ``macs``,
    ``params``, ``share``, ``total_macs``, ``total_params``, ``input``, ``convention``.
    When one stage holds more than ``split_dominant`` of the MACs (the blocks container of
    a ViT) the stages are taken one level deeper (``blocks.0``, ``blocks.1``, ...).

    Example:
        >>> import torch.nn as nn
        >>> from agentic_toolkit import profile_macs
        >>> from agentic_toolkit.profiling import mac_breakdown
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
        >>> table = mac_breakdown({"tiny": profile_macs(net, input_size=(1, 3, 32, 32))})
        >>> sorted(set(table["kind"]))
        ['stage', 'type']
        >>> int(table.query("kind == 'stage'")["macs"].sum()) == int(table["total_macs"].iloc[0])
        True
    """
    parts = []
    for name, prof in profiles.items():
        stages = prof.by_stage()
        if split_dominant and stages["share"].max() > split_dominant:
            stages = prof.by_stage(depth=2)
        meta = {"model": name, "total_macs": int(prof.total_macs), "total_params": int(prof.params),
                "input": "x".join(map(str, prof.input_shape)), "convention": prof.convention}
        parts.append(stages.rename(columns={"stage": "group"}).assign(kind="stage", **meta))
        parts.append(prof.by_type().rename(columns={"type": "group"}).assign(kind="type", **meta))
    cols = ["model", "kind", "group", "modules", "macs", "params", "share",
            "total_macs", "total_params", "input", "convention"]
    return pd.concat(parts, ignore_index=True)[cols]


def plot_mac_profile(breakdown: pd.DataFrame, model: str | None = None, top_types: int = 10) -> Any:
    """One model's MACs per stage and per module type, side by side (as ``MacProfile.plot``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    model = model or breakdown["model"].iloc[0]
    part = breakdown[breakdown["model"] == model]
    stages = part[part["kind"] == "stage"]
    types = part[(part["kind"] == "type") & (part["macs"] > 0)].head(top_types)
    fig, (ax_stage, ax_type) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    sns.barplot(data=stages.assign(gmacs=stages["macs"] / 1e9), x="gmacs", y="group", ax=ax_stage,
                color="#4c72b0", orient="h")
    ax_stage.set(xlabel="MACs (G)", ylabel="stage", title="MACs per stage")
    sns.barplot(data=types.assign(gmacs=types["macs"] / 1e9), x="gmacs", y="group", ax=ax_type,
                color="#dd8452", orient="h")
    ax_type.set(xlabel="MACs (G)", ylabel="module type", title="MACs per module type")
    first = part.iloc[0]
    fig.suptitle(f"{model}: {format_macs(int(first['total_macs']))} MACs ({first['convention']}), "
                 f"{format_macs(int(first['total_params']))} params, input {first['input']}")
    return fig
