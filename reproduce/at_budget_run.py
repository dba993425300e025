"""Run and report the accuracy-at-budget and proxy-fidelity studies (one shared task store).

    python scripts/accuracy_at_budget.py --workers 2            # both studies, a local Ray with 2 CPUs
    python scripts/accuracy_at_budget.py --quick                # smoke: minutes, data/smoke/
    python scripts/accuracy_at_budget.py --report-only          # tables from what is finished
    python scripts/accuracy_at_budget.py --workers 2 --studies accuracy --train-images 45000 \
        --budgets 0.5 --out-dir data/long                        # a longer fine-tune, same searches

Searches and sensitivity tables are keyed by the proxy's settings only (``at_budget.record_scope``),
so a run with another ``--train-images`` fine-tunes every cell again but reuses them.
``--address auto|ray://HOST:PORT`` runs the tasks on a Ray cluster (:mod:`agentic_toolkit.parallel`).

Writes ``data/05_accuracy_at_budget.csv`` (one row per budget, strategy, seed),
``data/05_accuracy_at_budget_summary.csv`` (mean, std, paired difference to the agent, search
seconds), ``data/05_sensitivity_table.csv`` (the per-group sensitivity the FastNAS-style
baseline and the sensitivity agents share), ``data/proxy_fidelity.csv`` and
``data/proxy_fidelity_candidates.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agentic_toolkit.parallel import (
    ResultStore,
    add_executor_arguments,
    estimate,
    executor_from_args,
    run_tasks,
)
from agentic_toolkit.tables import annotate, machine_line, write_table

from . import at_budget as A
from . import proxy_fidelity as P
from .common import output_dir

AGENTS = tuple(n for n in A.STRATEGIES if n.startswith("agent"))
#: The agent the README reports as the toolkit's (fixed before its test numbers existed).
FINAL_AGENT = "agent_fine"


def all_tasks(ctx: A.Context, accuracy: bool = True, fidelity: bool = True) -> list:
    """Searches, the accuracy study's cells (seed-major), then the fidelity study's extras."""
    seen, out = set(), []
    for t in (A.tasks(ctx) if accuracy else []) + (P.tasks(ctx) if fidelity else []):
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)
    return out


def cells_frame(store: ResultStore, cfg: A.Config) -> pd.DataFrame:
    """One row per finished (budget, strategy, seed) cell of the accuracy study."""
    rows = [store.get(A.cell_key(b, n, s)) for b in cfg.budgets for n in cfg.strategies for s in cfg.seeds]
    cols = ["budget", "strategy", "seed", "macs", "params", "target_macs", "error_pct", "test_top1", "test_loss",
            "train_images", "ft_seconds", "search_seconds", "strategy_json"]
    return pd.DataFrame([r for r in rows if r], columns=cols)


def summary_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Per budget and strategy: seeds, mean and std of test top-1, the search seconds, and for
    each agent variant ``<agent>_minus_this_mean`` / ``_std``: the paired difference over
    shared seeds (agent - this strategy)."""
    agents = [a for a in AGENTS if a in set(cells["strategy"])]
    out = []
    for (b, name), g in cells.groupby(["budget", "strategy"], sort=False):
        mine = g.set_index("seed")["test_top1"]
        row = {"budget": b, "strategy": name, "seeds": len(g), "macs": int(g["macs"].iloc[0]),
               "test_top1_mean": g["test_top1"].mean(), "test_top1_std": g["test_top1"].std(ddof=1),
               "search_seconds": g["search_seconds"].iloc[0]}
        for a in agents:
            theirs = cells[(cells["budget"] == b) & (cells["strategy"] == a)].set_index("seed")["test_top1"]
            shared = sorted(set(theirs.index) & set(mine.index))
            diff = theirs[shared] - mine[shared]
            row[f"{a}_minus_this_mean"] = diff.mean() if len(diff) else np.nan
            row[f"{a}_minus_this_std"] = diff.std(ddof=1) if len(diff) > 1 else np.nan
        out.append(row)
    return pd.DataFrame(out)


def verdict(summary: pd.DataFrame) -> list[str]:
    """Per budget and agent variant: does it beat the best non-agent strategy, by how much."""
    lines = []
    for b, g in summary.groupby("budget", sort=False):
        others = g[~g["strategy"].str.startswith("agent")].sort_values("test_top1_mean", ascending=False)
        for a in [a for a in AGENTS if a in set(g["strategy"])]:
            if not len(others):
                continue
            agent, best = g[g["strategy"] == a].iloc[0], others.iloc[0]
            gap = agent["test_top1_mean"] - best["test_top1_mean"]
            lines.append(
                f"{b:.0%} of MACs: {a} {agent['test_top1_mean']:.2f} +- {agent['test_top1_std']:.2f} vs best "
                f"baseline {best['strategy']} {best['test_top1_mean']:.2f} +- {best['test_top1_std']:.2f} (paired "
                f"{best[f'{a}_minus_this_mean']:+.2f} +- {best[f'{a}_minus_this_std']:.2f} over "
                f"{int(min(agent['seeds'], best['seeds']))} seeds): "
                + (f"beats it by {gap:.2f} pp (>= 0.3)" if gap >= 0.3 else f"does NOT beat it by 0.3 pp ({gap:+.2f})"))
    return lines


README_MARKERS = ("<!-- accuracy-at-budget:start -->", "<!-- accuracy-at-budget:end -->")


def readme_block(summary: pd.DataFrame, cells: pd.DataFrame) -> str:
    """The README's result table and verdict, rendered from the study's tables."""
    imgs = int(cells["train_images"].iloc[0]) if len(cells) else 0
    agents = [a for a in ("agent", FINAL_AGENT) if f"{a}_minus_this_mean" in summary]
    lines = [
        f"Adapted CIFAR-10 ResNet-56, KD fine-tuning on {imgs:,} training images per seed (one recipe "
        "for all), top-1 on the JPEG test set, mean +- std over seeds; `<agent> - this` is the paired "
        f"difference over the same seeds (the default agent and the final one, `{FINAL_AGENT}`; every "
        "variant's differences are in `data/05_accuracy_at_budget_summary.csv`). From "
        "`data/05_accuracy_at_budget.csv` (`python scripts/accuracy_at_budget.py --workers 2`).",
        "",
        "| budget | strategy | seeds | MMACs | test top-1 | " + " | ".join(f"{a} - this" for a in agents) + " | search s |",
        "|---|---|---|---|---|" + "---|" * len(agents) + "---|",
    ]
    for r in summary.to_dict("records"):
        diffs = " | ".join("" if r["strategy"] == a else
                           f"{r[f'{a}_minus_this_mean']:+.2f} +- {r[f'{a}_minus_this_std']:.2f}" for a in agents)
        lines.append(f"| {r['budget']:.0%} | {r['strategy']} | {r['seeds']} | {r['macs'] / 1e6:.2f} | "
                     f"{r['test_top1_mean']:.2f} +- {r['test_top1_std']:.2f} | {diffs} | {r['search_seconds']:.0f} |")
    lines += ["", *[f"- {v}" for v in verdict(summary)]]
    return "\n".join(lines)


def update_readme(path: Path, block: str) -> bool:
    """Replace the text between :data:`README_MARKERS` in ``path``; False when they are missing."""
    text = path.read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    path.write_text(head + start + "\n" + block + "\n" + end + rest.split(end, 1)[1])
    return True


def candidates_frame(store: ResultStore, cfg: A.Config) -> pd.DataFrame:
    """One row per fidelity candidate: every proxy value and seconds, and the ground truth."""
    rows = []
    for b in cfg.budgets:
        for n in P.FIDELITY_STRATEGIES:
            p, c = store.get(P.proxies_key(b, n)), store.get(A.cell_key(b, n, 0))
            if p and c:
                rows.append({"budget": b, "strategy": n, "macs": c["macs"], "test_top1": c["test_top1"],
                             **p["proxies"], **{f"{k}_seconds": v for k, v in p["seconds"].items()}})
    return pd.DataFrame(rows)


def write_reports(store: ResultStore, cfg: A.Config, out_dir: Path, accuracy: bool = True, fidelity: bool = True,
                  update: bool = False) -> list[str]:
    """Write the tables that have data; return the summary lines."""
    store.refresh()
    lines = []
    cells = cells_frame(store, cfg)
    if accuracy and store.get("sensitivity"):
        table = pd.DataFrame(store.get("sensitivity")["rows"])  # the Profiling agent's measurement
        write_table(table, out_dir / "05_sensitivity_table.csv")
    if accuracy and len(cells):
        write_table(annotate(cells), out_dir / "05_accuracy_at_budget.csv")
        summ = summary_frame(cells)
        write_table(summ, out_dir / "05_accuracy_at_budget_summary.csv")
        lines += [summ.to_string(index=False, float_format=lambda v: f"{v:.2f}"), *verdict(summ)]
        if update:
            from agentic_toolkit.paths import PROJECT_ROOT

            ok = update_readme(PROJECT_ROOT / "docs" / "results.md", readme_block(summ, cells))
            lines.append("docs/results.md updated" if ok else "docs/results.md has no accuracy-at-budget markers")
    if fidelity:
        cand = candidates_frame(store, cfg)
        if len(cand):
            write_table(cand, out_dir / "proxy_fidelity_candidates.csv")
            table = P.fidelity_table(store, cfg.budgets)
            write_table(annotate(table), out_dir / "proxy_fidelity.csv")
            lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke configuration (minutes) -> data/smoke/")
    ap.add_argument("--studies", default="accuracy,fidelity", help="accuracy and/or fidelity (comma-separated)")
    ap.add_argument("--train-images", type=int, default=None, help="fine-tuning images per cell")
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2)")
    ap.add_argument("--budgets", default=None, help="comma-separated MAC fractions (default 0.5,0.3)")
    ap.add_argument("--strategies", default=None, help=f"comma-separated subset of {','.join(A.STRATEGIES)}")
    ap.add_argument("--root", type=Path, default=None, help=f"task store (default {A.ROOT})")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--update-readme", action="store_true", help="rewrite the result table in docs/results.md")
    add_executor_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = A.Config.quick() if args.quick else A.Config()
    changes: dict = {}
    if args.train_images:
        changes["train_images"] = args.train_images
    if args.seeds:
        changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.budgets:
        changes["budgets"] = tuple(float(b) for b in args.budgets.split(","))
    if args.strategies:
        changes["strategies"] = tuple(args.strategies.split(","))
        if set(changes["strategies"]) - set(A.STRATEGIES):
            ap.error(f"unknown strategies {sorted(set(changes['strategies']) - set(A.STRATEGIES))}; "
                     f"choose from {A.STRATEGIES}")
    cfg = dataclasses.replace(cfg, **changes)
    studies = set(args.studies.split(","))
    if not studies or studies - {"accuracy", "fidelity"}:
        ap.error(f"--studies takes accuracy and/or fidelity, got {args.studies!r}")
    accuracy, fidelity = "accuracy" in studies, "fidelity" in studies
    root = args.root or (output_dir(True) / "at_budget_runs" if args.quick else A.ROOT)
    store = ResultStore(root, cfg.settings(), scope=A.record_scope)  # searches survive recipe changes
    ctx = A.Context(cfg, fixed=P.EXTRAS)
    tasks = all_tasks(ctx, accuracy, fidelity)
    if args.gpus_per_task:
        tasks = [dataclasses.replace(t, num_gpus=args.gpus_per_task) for t in tasks]
    if not args.report_only:
        left = sum(t.key not in store for t in tasks)
        print(f"{left}/{len(tasks)} tasks left; estimated {estimate(tasks, store, args.workers) / 60:.0f} min "
              f"with {args.workers} worker(s) ({machine_line(1)})", flush=True)
    if not args.report_only:
        t0 = time.perf_counter()
        run_tasks(tasks, store, executor=executor_from_args(args))
        print(f"finished in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    out_dir = args.out_dir or output_dir(args.quick)
    for line in write_reports(store, cfg, out_dir, accuracy, fidelity, update=args.update_readme and not args.quick):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
