"""What the prefix replay of sensitivity probes buys, and what the searches cost with it.

For the adapted CIFAR ResNet-20 and ResNet-56, on one torch thread each:

- ``table``: the ``default`` preset's sensitivity table (its cheap loss probe on the study's
  proxy), measured plainly and then with the probes replaying the unpruned forward up to
  their first cut (:mod:`agentic_toolkit.training.prefix_replay`); the two tables must be equal;
- ``search``: the ``default`` preset and the FastNAS-style baseline at 50 % of the MACs, run
  from scratch exactly as ``benchmarks/search_pareto.py`` charges them (both use the replay
  now), and whether each lands on the strategy recorded in the study's store.

    python benchmarks/bench_replay.py --workers 2     # -> data/bench_replay.csv
    python benchmarks/bench_replay.py --smoke         # seconds -> data/smoke/bench_replay.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_pareto as sp  # noqa: E402  (the study's shared state and searches)

from agentic_toolkit.agents.presets import search_preset  # noqa: E402
from agentic_toolkit.agents.sensitivity import measure_sensitivity  # noqa: E402
from agentic_toolkit.parallel import (  # noqa: E402
    ResultStore,
    Task,
    add_executor_arguments,
    executor_from_args,
    run_tasks,
)
from agentic_toolkit.paths import PROJECT_ROOT  # noqa: E402
from agentic_toolkit.tables import annotate, write_table  # noqa: E402
from reproduce.common import output_dir  # noqa: E402

SEARCHERS = ("default", "fastnas")


def table_task(cfg: sp.Config, model: str, store: ResultStore) -> dict:
    """The default preset's table, plain then replayed: seconds of each and their equality."""
    torch.set_num_threads(1)
    probe = search_preset("default").probe(sp.evaluator(cfg.eval_images, cfg.bn_images))
    teacher, plan = sp.teacher(model), sp.fresh_plan(model)
    out, frames = {}, {}
    for arm, scorer in (("plain", lambda m: probe(m)), ("replay", probe)):
        t0 = time.perf_counter()
        frames[arm] = measure_sensitivity(teacher, sp.example(), scorer, plan=plan, progress=False, adaptive=True).frame
        out[f"{arm}_seconds"] = time.perf_counter() - t0
    return {**out, "rows": len(frames["plain"]), "equal": bool(frames["plain"].equals(frames["replay"]))}


def search_task(cfg: sp.Config, model: str, searcher: str, study: ResultStore,
                store: ResultStore) -> dict:
    torch.set_num_threads(1)
    rec = sp.run_search(cfg, model, 0.5, searcher, store)
    old = study.get(sp.search_key(model, 0.5, searcher))
    return {"search_seconds": rec["search_seconds"], "proxy_evals": rec["proxy_evals"],
            "proxy_score": rec["proxy_score"], "strategy": rec["strategy"],
            "same_as_study": None if old is None else old["strategy"] == rec["strategy"],
            "study_seconds": None if old is None else old["search_seconds"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--smoke", action="store_true")
    add_executor_arguments(ap)
    args = ap.parse_args(argv)
    cfg = sp.Config.smoke() if args.smoke else sp.Config()
    models = ("resnet20",) if args.smoke else tuple(args.models.split(","))
    torch.set_num_threads(1)
    suffix = "_smoke" if args.smoke else ""
    store = ResultStore(PROJECT_ROOT / "runs" / f"bench_replay{suffix}", cfg.settings())
    study = ResultStore(f"{sp.ROOT}{suffix}", cfg.settings(), scope=lambda key: ("proxy",))
    tasks = [Task(f"table/{m}", partial(table_task, cfg, m)) for m in models]
    tasks += [Task(f"search/{m}/{s}", partial(search_task, cfg, m, s, study)) for m in models for s in SEARCHERS]
    run_tasks(tasks, store, executor=executor_from_args(args))
    store.refresh()
    rows = []
    for m in models:
        t = store.get(f"table/{m}")
        rows += [{"model": m, "measurement": "default table", "arm": arm, "seconds": t[f"{arm}_seconds"],
                  "rows": t["rows"], "equal_tables": t["equal"]} for arm in ("plain", "replay")]
        for s in SEARCHERS:
            r = store.get(f"search/{m}/{s}")
            rows.append({"model": m, "measurement": "search at 50%", "arm": s, "seconds": r["search_seconds"],
                         "proxy_evals": r["proxy_evals"], "same_strategy_as_study": r["same_as_study"],
                         "study_seconds": r["study_seconds"]})
    df = annotate(pd.DataFrame(rows), threads=1)
    write_table(df, output_dir(smoke=args.smoke) / "bench_replay.csv")
    print(df.iloc[:, :8].round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
