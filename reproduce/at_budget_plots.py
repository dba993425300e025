"""Figures of the accuracy-at-budget and proxy-fidelity studies, drawn from their CSVs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

ORDER = ("uniform_l1", "global_magnitude", "isomorphic_taylor", "fastnas_sensitivity", "fastnas_sensitivity_fine",
         "agent", "agent_sensitivity", "agent_kd_rerank", "agent_fine", "agent_ft_rerank")


def plot_accuracy_at_budget(cells: pd.DataFrame, baseline_top1: float | None = None):
    """Test top-1 of every seed (dots) and its mean +- std (bar), one panel per budget; the
    search seconds are written beside each strategy's name."""
    budgets = sorted(cells["budget"].unique(), reverse=True)
    order = [s for s in ORDER if s in set(cells["strategy"])] + sorted(set(cells["strategy"]) - set(ORDER))
    width = max(5.2, 0.6 * len(order) + 1.0)  # one strategy label per 0.6 inch
    fig, axes = plt.subplots(1, len(budgets), figsize=(width * len(budgets), 4.6), squeeze=False)
    for ax, b in zip(axes[0], budgets, strict=True):
        d = cells[cells["budget"] == b]
        sns.pointplot(data=d, x="strategy", y="test_top1", order=order, errorbar="sd", linestyle="none",
                      color="k", markers="_", capsize=0.25, ax=ax)
        sns.stripplot(data=d, x="strategy", y="test_top1", order=order, hue="strategy", legend=False,
                      size=6, jitter=0.12, ax=ax)
        secs = d.groupby("strategy")["search_seconds"].first()
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{s} ({secs.get(s, 0):.0f} s)" for s in order], rotation=35, ha="right",
                           rotation_mode="anchor", fontsize=8)
        if baseline_top1 is not None:
            ax.axhline(baseline_top1, color="grey", ls="--", lw=0.8, label=f"unpruned {baseline_top1:.2f}%")
            ax.legend(fontsize=8, loc="lower right")
        macs = d["macs"].mean() / 1e6
        ax.set_title(f"{b:.0%} of the MACs (~{macs:.1f} MMACs)")
        ax.set_xlabel("")
        ax.set_ylabel("top-1 on the JPEG CIFAR-10 test set (%)")
    fig.tight_layout()
    return fig


def plot_proxy_fidelity(table: pd.DataFrame, candidates: pd.DataFrame, proxy: str):
    """Left: each proxy's Spearman rho with its 95% interval per budget, against its cost.
    Right: ``proxy`` against the fine-tuned test top-1, one dot per strategy and budget."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.4))
    proxies = list(dict.fromkeys(table["proxy"]))
    for k, (budget, d) in enumerate(table.groupby("budget")):
        d = d.set_index("proxy").loc[proxies].reset_index()
        a.errorbar(d.index + (k - 0.5) * 0.18, d["spearman"],
                   yerr=[d["spearman"] - d["ci_low"], d["ci_high"] - d["spearman"]], fmt="o", capsize=3,
                   label=f"{budget:.0%} MACs")
    cost = table.groupby("proxy")["seconds_per_candidate"].mean()
    a.set_xticks(range(len(proxies)))
    a.set_xticklabels([f"{p}\n{cost[p]:.1f} s" for p in proxies], rotation=25, ha="right", fontsize=8)
    a.axhline(0.8, color="grey", ls="--", lw=0.8)
    a.set_xlabel("proxy (seconds per candidate, 1 thread)")
    a.set_ylabel("Spearman rho with fine-tuned test top-1\n(bootstrap 95% interval)")
    a.legend(fontsize=8)
    shown = candidates.assign(budget=candidates["budget"].map(lambda v: f"{v:.0%} MACs"))
    sns.scatterplot(data=shown, x=proxy, y="test_top1", hue="budget", style="budget", ax=b, s=50,
                    palette="deep")
    b.set_xlabel(f"{proxy} (val)")
    b.set_ylabel("top-1 after fine-tuning (JPEG test, %)")
    fig.tight_layout()
    return fig
