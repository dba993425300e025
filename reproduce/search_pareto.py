"""Tables and figure of the search study (``benchmarks/search_pareto.py``): the presets
against FastNAS-style, Optuna TPE and random search and uniform L1, at equal MACs."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

import agentic_toolkit as at
from agentic_toolkit.paths import PROJECT_ROOT

PRESETS = ("fast", "default", "thorough")
SAMPLED = ("tpe_x1", "tpe_x3", "random_x1", "random_x3")
SEARCHERS = PRESETS + ("fastnas",) + SAMPLED + ("uniform_l1",)
#: The searchers that are not ours: the acceptance compares ``default`` with the best of them.
PEERS = ("fastnas",) + SAMPLED + ("uniform_l1",)
README_MARKERS = ("<!-- search-pareto:start -->", "<!-- search-pareto:end -->")


# What the study's tasks share, built once per process and kept for every task that process
# runs (a Ray worker runs many; each used to rebuild them). Pure functions of their arguments,
# so the cache changes the seconds only.
@functools.cache
def teacher(model: str) -> torch.nn.Module:
    """The adapted CIFAR ``model`` (``data/cifar_<model>_adapted.safetensors``): the unpruned
    reference and the KD teacher."""
    return at.create_model(f"cifar_{model}", pretrained=PROJECT_ROOT / "data" / f"cifar_{model}_adapted.safetensors")


@functools.cache
def evaluator(eval_images: int, bn_images: int):
    """The study's proxy on held-out val (one object per process: its ``calls`` count proxy evaluations)."""
    return at.default_evaluator(eval_images=eval_images, bn_images=bn_images)


@functools.cache
def calibration():
    """The calibration batches of every plan."""
    return at.calibration_batches("cifar10", n_batches=4, batch_size=64)


def example() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def fresh_plan(model: str):
    """A new plan: every searcher pays for its own (charged from scratch)."""
    return at.get_plan(teacher(model), example(), calibration())


def target(model: str, budget: float) -> int:
    return int(budget * at.profile_macs(teacher(model), example_inputs=example()).total_macs)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of test top-1 per (model, budget, searcher) over the finished seeds, with
    the search's cost and proxy score; ``vs_best_peer``: the mean minus the best peer's mean."""
    done = df.dropna(subset=["test_top1"])
    out = (done.groupby(["model", "budget", "searcher"], sort=False)
           .agg(seeds=("seed", "nunique"), test_top1=("test_top1", "mean"), std=("test_top1", "std"),
                search_seconds=("search_seconds", "first"), proxy_evals=("proxy_evals", "first"),
                proxy_score=("proxy_score", "first")).reset_index())
    peers = out[out["searcher"].isin(PEERS)].groupby(["model", "budget"])["test_top1"].max().rename("best_peer")
    out = out.join(peers, on=["model", "budget"])
    out["vs_best_peer"] = out["test_top1"] - out["best_peer"]
    return out.drop(columns="best_peer")


def readme_block(df: pd.DataFrame) -> str:
    """The README's headline table: test top-1 (mean ± std over seeds) and search seconds per
    searcher, one column per (model, budget)."""
    s = summary(df)
    cells = list(dict.fromkeys(zip(s["model"], s["budget"], strict=True)))
    lines = ["| searcher | " + " | ".join(f"{m} @ {b:.0%} MACs" for m, b in cells) + " |",
             "|---|" + "---|" * len(cells)]
    for name in [n for n in SEARCHERS if n in set(s["searcher"])]:
        row = []
        for m, b in cells:
            r = s[(s["model"] == m) & (s["budget"] == b) & (s["searcher"] == name)]
            spread = "" if r.empty or pd.isna(r["std"].iloc[0]) else f" ± {r['std'].iloc[0]:.2f}"
            row.append("–" if r.empty else f"{r['test_top1'].iloc[0]:.2f}{spread} ({r['search_seconds'].iloc[0]:.0f} s)")
        lines.append(f"| `{name}` | " + " | ".join(row) + " |")
    seeds = "/".join(map(str, sorted(set(s["seeds"])))) if len(s) else "0"
    lines.append(f"\nTop-1 (%) on the JPEG CIFAR-10 test set after the same KD fine-tune (20,000 images; "
                 f"seeds per cell: {seeds}; mean ± std where more than one), search seconds on one CPU thread "
                 "from scratch; `python benchmarks/search_pareto.py` → `data/search_pareto.csv`.")
    return "\n".join(lines)


def update_readme(path: Path, block: str) -> None:
    """Replace the text between :data:`README_MARKERS` in ``path`` with ``block``."""
    start, end = README_MARKERS
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    path.write_text(f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}")


def plot_search_pareto(df: pd.DataFrame):
    """Test top-1 (mean ± std over seeds) against search seconds (log axis), one panel per
    (model, budget); our presets are filled, the peers hollow."""
    s = summary(df)
    cells = list(dict.fromkeys(zip(s["model"], s["budget"], strict=True)))
    fig, axes = plt.subplots(1, max(1, len(cells)), figsize=(4.6 * max(1, len(cells)), 4.2), squeeze=False)
    colors = dict(zip(SEARCHERS, plt.get_cmap("tab10").colors, strict=False))
    for ax, (m, b) in zip(axes[0], cells, strict=False):
        d = s[(s["model"] == m) & (s["budget"] == b)]
        for r in d.itertuples():
            ours = r.searcher in PRESETS
            ax.errorbar(max(r.search_seconds, 0.1), r.test_top1, yerr=0 if pd.isna(r.std) else r.std, fmt="o",
                        ms=8 if ours else 6, color=colors.get(r.searcher, "k"),
                        mfc=colors.get(r.searcher, "k") if ours else "none", capsize=3, label=r.searcher)
        ax.set_xscale("log")
        ax.set_title(f"{m} at {b:.0%} of its MACs")
        ax.set_xlabel("search seconds (one CPU thread, log)")
        ax.set_ylabel("top-1 on the JPEG test set (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 9), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


__all__ = ["PEERS", "PRESETS", "README_MARKERS", "SAMPLED", "SEARCHERS", "plot_search_pareto", "readme_block",
           "summary", "update_readme"]
