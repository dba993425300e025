"""Figure of the latency-budget study, drawn from :func:`.latency_budget.latency_budget_table`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .latency_budget import ACCEPT, efficiency_table

#: (target kind, stage) -> marker, fill, legend label of the scatter
KINDS = {
    ("macs", "solved"): ("s", True, "MAC target (x: latency-model prediction)"),
    ("latency", "solved"): ("o", False, "latency target, solved (x: target = prediction within -5/+1%)"),
    ("latency", "corrected"): ("o", True, "latency target, after the measured correction (x: target)"),
}


def _short(model: str) -> str:
    """``deit_small_patch16_224`` -> ``deit-S``, ``convnext_small`` -> ``convnext-S`` (tick and
    legend labels)."""
    return model.split("_patch")[0].replace("_small", "-S")


def plot_latency_budget(table: pd.DataFrame, title: str | None = None):
    """Two panels: measured against predicted/targeted speedup per fit (``y = x`` and the ±7%
    band; colour: model and batch size; an arrow joins a solved latency fit to its
    corrected one), and the efficiency (speedup / MAC reduction) of the MAC-target fits with
    ``round_to`` none, ``"auto"``, ``"auto"`` with the measured pick and ``"auto"``
    latency-shaped (bars, those present; auto's gain written above)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [1.1, 1]})
    cases = list(dict.fromkeys(zip(table["model"], table["batch_size"], strict=True)))
    colors = dict(zip(cases, plt.get_cmap("tab10")(np.arange(len(cases)) % 10), strict=True))
    hi = float(np.nanmax(table[["aim_speedup", "speedup"]].to_numpy())) * 1.1
    lo = max(0.0, min(1.0, float(np.nanmin(table[["aim_speedup", "speedup"]].to_numpy())) * 0.9))
    xs = np.linspace(lo, hi, 50)
    ax.fill_between(xs, xs * (1 - ACCEPT), xs * (1 + ACCEPT), color="grey", alpha=0.2, lw=0,
                    label=f"±{ACCEPT:.0%} of the prediction / target")
    ax.plot(xs, xs, ls=":", color="k", lw=0.8, label="measured = predicted")
    for (kind, stage), (marker, filled, label) in KINDS.items():
        d = table[(table["target_kind"] == kind) & (table["stage"] == stage)]
        c = [colors[(m, b)] for m, b in zip(d["model"], d["batch_size"], strict=True)]
        ax.scatter(d["aim_speedup"], d["speedup"], marker=marker, s=46, c=c if filled else "none",
                   edgecolors=c, linewidths=1.3)
        if len(d):  # legend entry in grey: the colour is the model's
            ax.scatter([], [], marker=marker, s=46, c="grey" if filled else "none", edgecolors="grey", label=label)
    lat = table[table["target_kind"] == "latency"]
    for _, g in lat.groupby(["model", "batch_size", "target"]):
        if set(g["stage"]) == {"solved", "corrected"}:
            s, e = g[g["stage"] == "solved"].iloc[0], g[g["stage"] == "corrected"].iloc[0]
            ax.annotate("", (e["aim_speedup"], e["speedup"]), (s["aim_speedup"], s["speedup"]),
                        arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.8})
    for (m, b), col in colors.items():
        ax.plot([], [], "s", color=col, label=f"{_short(m)}, batch {b}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted (MAC target) or targeted (latency target) speedup")
    ax.set_ylabel("measured speedup (median of interleaved pairs)")
    ax.set_title("Predicted vs measured speedup")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)

    eff = efficiency_table(table)
    eff = eff.assign(_order=[cases.index((m, b)) for m, b in zip(eff["model"], eff["batch_size"], strict=True)])
    eff = eff.sort_values("_order", ignore_index=True)
    several = eff["target"].nunique() > 1
    labels = [f"{_short(m)}\nb{b}" + (f"\n{t.replace(' MACs', '')}" if several else "")
              for m, b, t in zip(eff["model"], eff["batch_size"], eff["target"], strict=True)]
    pos = np.arange(len(eff))
    names = {"none": "round_to=None", "auto": 'round_to="auto"', "auto+measured": '"auto" + measured pick',
             "auto+shape": '"auto" + latency-shaped'}
    colours = ("#9aa7b8", "#2f6db3", "#4a9a5b", "#d9822b")
    shown = [rt for rt in names if eff.get(f"efficiency_{rt}", pd.Series(dtype=float)).notna().any()]
    width = 0.8 / max(1, len(shown))
    for k, rt in enumerate(shown):
        bx.bar(pos + (k - (len(shown) - 1) / 2) * width, eff[f"efficiency_{rt}"], width=width, label=names[rt],
               color=colours[list(names).index(rt)])
    if len(eff):
        tops = eff[[f"efficiency_{rt}" for rt in shown]].max(axis=1) if shown else eff["gain"] * np.nan
        for p, (top, gain) in enumerate(zip(tops, eff["gain"], strict=True)):
            if np.isfinite(gain):
                bx.text(p, top + 0.02, f"auto {100 * gain:+.0f}%", ha="center", fontsize=7)
    bx.axhline(1, color="k", lw=0.6)
    bx.set_xticks(pos)
    bx.set_xticklabels(labels, fontsize=7)
    bx.set_ylim(0, max(1.1, float(np.nanmax(eff.filter(like="efficiency_").to_numpy(dtype=float), initial=0)) + 0.15))
    target = ", ".join(dict.fromkeys(eff["target"])) if len(eff) else "MAC target"
    bx.set_ylabel("efficiency = speedup / MAC reduction")
    bx.set_title(f"Efficiency at {target}, before and after auto rounding")
    if bx.get_legend_handles_labels()[0]:
        bx.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
