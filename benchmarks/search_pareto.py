"""The search presets against the peers a researcher would use instead, at equal MACs.

Models: the adapted CIFAR ResNet-20 and ResNet-56 (``data/cifar_resnet{20,56}_adapted.safetensors``,
each its own unpruned reference and KD teacher), at 50 % and 30 % of their MACs. Searchers:

- ``fast``, ``default``, ``thorough``: ``AgenticSearch(preset=...)`` (:mod:`agentic_toolkit.agents.presets`);
- ``fastnas``: the FastNAS-style baseline (``measure_sensitivity`` with 3 shares scored by the
  study's proxy, then ``sensitivity_search``'s threshold allocation), unhandicapped;
- ``tpe_x1``, ``tpe_x3``, ``random_x1``, ``random_x3``: Optuna's TPE and random samplers
  (``backend="optuna"`` / ``"random"``, importance plus per-scope multipliers) with as many
  proxy evaluations as ``default`` used, and 3 times that;
- ``uniform_l1``: every layer the same share, L1 magnitude (no search).

Every search scores candidates on held-out ``val`` images only (the proxy: BatchNorm
re-estimated on 1,024 images, top-1 on 2,048 others), runs on one torch thread, and is
charged from scratch per (model, budget): its plan, any table it needs, its revisions. Its
final pick is scored by the same proxy (``proxy_score``). Each pick is then fine-tuned by
notebook 05's recipe (KD from the unpruned model, 20,000 seeded training images, one epoch)
for each seed, and top-1 is measured on the JPEG CIFAR-10 **test** set (final report only).

Every search and every cell is one line in a resumable store (``runs/search_pareto``): an
interrupted study resumes, searches are reused across seeds. ``--workers N`` runs the tasks on
a local Ray with N CPUs, ``--address auto|ray://HOST:PORT`` on a Ray cluster
(:mod:`agentic_toolkit.parallel`); without them they run one after the other in this process.

    python benchmarks/search_pareto.py --workers 2             # -> data/search_pareto.csv
    python benchmarks/search_pareto.py --report-only --update-readme   # the CSV and README table from the store
    python benchmarks/search_pareto.py --smoke                 # seconds -> data/smoke/search_pareto.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from functools import partial

import pandas as pd
import torch

import agentic_toolkit as at
from agentic_toolkit.agents.sensitivity import measure_sensitivity, sensitivity_search
from agentic_toolkit.parallel import (
    ResultStore,
    Task,
    add_executor_arguments,
    executor_from_args,
    run_tasks,
)
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.tables import annotate, write_table
from reproduce.at_budget import kd_finetune
from reproduce.common import output_dir
from reproduce.search_pareto import (
    PRESETS,
    SAMPLED,
    SEARCHERS,
    evaluator,
    example,
    fresh_plan,
    readme_block,
    summary,
    target,
    teacher,
    update_readme,
)

MODELS = ("resnet20", "resnet56")
BUDGETS = (0.5, 0.3)
SEEDS = (0, 1, 2)
OUT = PROJECT_ROOT / "data" / "search_pareto.csv"
ROOT = PROJECT_ROOT / "runs" / "search_pareto"
COLUMNS = ["model", "budget", "searcher", "seed", "proxy_evals", "search_seconds", "proxy_score", "test_top1",
           "macs", "target_macs", "base_macs", "train_images"]


@dataclass(frozen=True)
class Config:
    """Sizes of the study; :meth:`smoke` is the seconds-long configuration."""

    models: tuple[str, ...] = MODELS
    budgets: tuple[float, ...] = BUDGETS
    searchers: tuple[str, ...] = SEARCHERS
    seeds: tuple[int, ...] = SEEDS
    train_images: int = 20_000
    eval_images: int = 2048
    bn_images: int = 1024
    test_limit: int | None = None

    @classmethod
    def smoke(cls) -> Config:
        return cls(models=("resnet20",), budgets=(0.5,), searchers=("default", "tpe_x1", "uniform_l1"), seeds=(0,),
                   train_images=128, eval_images=128, bn_images=128, test_limit=256)

    def settings(self) -> dict:
        """What the records depend on (a search only on the proxy's sizes)."""
        limit = {} if self.test_limit is None else {"test_limit": self.test_limit}
        return {"train_images": self.train_images, "proxy": f"bn{self.bn_images}_top1_{self.eval_images}_val", **limit}


# ---------------------------------------------------------------------------- searches
def run_search(cfg: Config, model: str, budget: float, searcher: str, store: ResultStore) -> dict:
    """One searcher from scratch: ``{"strategy", "search_seconds", "proxy_evals", ...}``."""
    ev = evaluator(cfg.eval_images, cfg.bn_images)
    calls0 = ev.calls
    t0 = time.perf_counter()
    plan = fresh_plan(model)
    goal = target(model, budget)
    extra: dict = {}
    if searcher == "uniform_l1":
        fit = at.fit_to_budget(teacher(model), at.strategy_preset("uniform_l1"), goal, example(), plan=plan)
        strategy, probes = fit.strategy, 0
    elif searcher == "fastnas":
        table = measure_sensitivity(teacher(model), example(), ev, plan=plan, progress=False)
        res = sensitivity_search(teacher(model), goal, example(), table, plan=plan)
        strategy, probes = res.strategy, 0
    else:
        opts = search_options(model, budget, searcher, store)
        start = at.SearchStart(plan=plan, sensitivity=opts.pop("sensitivity", None))
        search = at.AgenticSearch(teacher(model), goal, example(), evaluator=ev, start=start,
                                  logging=at.SearchLogging(progress=False), **opts)
        res = search.run()
        strategy = res.strategy
        # the table's probes (a cheaper copy of the proxy, its own object) and its unpruned score
        probes = 0 if search.sensitivity is None else len(search.sensitivity.frame) + 1
        extra = {"revisions": res.revisions, "stop_reason": res.stop_reason, "search_score": res.score}
    seconds = time.perf_counter() - t0
    landed = at.fit_to_budget(teacher(model), strategy, goal, example(), plan=plan)
    proxy_evals = ev.calls - calls0 + probes
    score = float(ev(landed.prune().model))
    return {**extra, "strategy": strategy.to_dict(), "search_seconds": seconds, "proxy_evals": proxy_evals,
            "proxy_score": score, "macs": landed.predicted_macs, "target_macs": goal}


def search_options(model: str, budget: float, searcher: str, store: ResultStore) -> dict:
    """The AgenticSearch keywords of a preset or a sampled peer (whose evaluations are
    ``default``'s times 1 or 3)."""
    if searcher in PRESETS:
        return {"preset": searcher}
    sampler, times = searcher.split("_x")
    n = int(times) * store.get(search_key(model, budget, "default"))["proxy_evals"]
    from agentic_toolkit.agents.backends.optuna_backend import OptunaBackend

    return {"sensitivity": False, "backend": OptunaBackend(sampler=sampler, seed=0, n_startup_trials=10),
            "max_revisions": n, "patience": n}


def search_key(model: str, budget: float, searcher: str) -> str:
    return f"search/{model}/{budget:g}/{searcher}"


def cell_key(model: str, budget: float, searcher: str, seed: int) -> str:
    return f"cell/{model}/{budget:g}/{searcher}/seed{seed}"


def run_cell(cfg: Config, model: str, budget: float, searcher: str, seed: int,
             store: ResultStore) -> dict:
    rec = store.get(search_key(model, budget, searcher))
    fit = at.fit_to_budget(teacher(model), at.Strategy.from_dict(rec["strategy"]), rec["target_macs"], example())
    pruned = fit.prune()
    recipe = at.Recipe.preset("cifar", epochs=1)
    student, ft, n = kd_finetune(pruned.model, teacher(model), recipe, cfg.train_images, seed)
    acc = at.evaluate(student, at.cifar10("test", batch_size=256, limit=cfg.test_limit))
    return {"test_top1": acc["top1"], "macs": pruned.macs, "train_images": n, "ft_seconds": ft.seconds}


# ---------------------------------------------------------------------------- the study
def tasks(cfg: Config, gpus: float = 0.0) -> list[Task]:
    """Searches of each model first, then its cells seed-major (each asks for ``gpus``)."""
    out = []
    for m in cfg.models:
        for b in cfg.budgets:
            for s in cfg.searchers:
                deps = (search_key(m, b, "default"),) if s in SAMPLED else ()
                out.append(Task(search_key(m, b, s), partial(run_search, cfg, m, b, s), deps=deps,
                                num_gpus=gpus))
        for seed in cfg.seeds:
            for b in cfg.budgets:
                for s in cfg.searchers:
                    out.append(Task(cell_key(m, b, s, seed), partial(run_cell, cfg, m, b, s, seed),
                                    deps=(search_key(m, b, s),), num_gpus=gpus))
    return out


def report(store: ResultStore, cfg: Config) -> pd.DataFrame:
    """One row per (model, budget, searcher, seed) whose search is done (test_top1 empty until
    its cell is)."""
    rows = []
    for m in cfg.models:
        for b in cfg.budgets:
            for s in cfg.searchers:
                rec = store.get(search_key(m, b, s))
                if rec is None:
                    continue
                for seed in cfg.seeds:
                    cell = store.get(cell_key(m, b, s, seed)) or {}
                    rows.append({"model": m, "budget": b, "searcher": s, "seed": seed,
                                 "proxy_evals": rec["proxy_evals"], "search_seconds": rec["search_seconds"],
                                 "proxy_score": rec["proxy_score"], "test_top1": cell.get("test_top1"),
                                 "macs": rec["macs"], "target_macs": rec["target_macs"],
                                 "base_macs": round(rec["target_macs"] / b), "train_images": cell.get("train_images")})
    return annotate(pd.DataFrame(rows, columns=COLUMNS), threads=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--searchers", default=",".join(SEARCHERS))
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--train-images", type=int, default=20_000)
    ap.add_argument("--smoke", action="store_true", help="seconds: one model, one budget, tiny proxy and recipe")
    ap.add_argument("--store", default=None, help="the resumable store (default runs/search_pareto[_smoke])")
    ap.add_argument("--out", default=None, help="the CSV (default data/search_pareto.csv, data/smoke/ with --smoke)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--update-readme", action="store_true", help="rewrite the README's headline table")
    add_executor_arguments(ap)
    args = ap.parse_args(argv)
    cfg = Config.smoke() if args.smoke else Config(
        models=tuple(args.models.split(",")), budgets=tuple(float(b) for b in args.budgets.split(",")),
        searchers=tuple(args.searchers.split(",")), seeds=tuple(int(s) for s in args.seeds.split(",")),
        train_images=args.train_images)
    torch.set_num_threads(1)
    store = ResultStore(args.store or f"{ROOT}{'_smoke' if args.smoke else ''}", cfg.settings(),
                        scope=lambda key: ("proxy",) if key.startswith("search/") else None)
    if not args.report_only:
        run_tasks(tasks(cfg, args.gpus_per_task), store, executor=executor_from_args(args))
    store.refresh()
    df = report(store, cfg)
    write_table(df, args.out or output_dir(smoke=args.smoke) / "search_pareto.csv")
    print(summary(df).round(2).to_string(index=False))
    if args.update_readme and not args.smoke:
        update_readme(PROJECT_ROOT / "README.md", readme_block(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
