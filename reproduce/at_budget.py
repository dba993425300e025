"""Accuracy at equal MACs: the agent against the strategies researchers use instead.

The adapted CIFAR ResNet-56 (:mod:`.adaptation`; unpruned reference and KD teacher) is pruned
to each budget (a fraction of its MACs) by each strategy, every one landed in the band by
:func:`~agentic_toolkit.fit_to_budget`:

- ``uniform_l1``: every layer loses the same share, L1 magnitude (Li et al., 2017);
- ``global_magnitude``: one L2-magnitude ranking over all groups;
- ``isomorphic_taylor``: first-order Taylor on calibration batches, isomorphic groups (the
  paper's pruner);
- ``fastnas_sensitivity``: per-group sensitivity measured with the proxy, threshold
  allocation under the budget (:mod:`agentic_toolkit.agents.sensitivity`, as NVIDIA
  ModelOpt's FastNAS does);
- ``agent``: the default search (offline analyst + the proxy evaluator, default revision
  budget);
- ``agent_sensitivity``: the same search with the Profiling agent's sensitivity table
  (``AgenticSearch(start=SearchStart(sensitivity=...))``, the table ``fastnas_sensitivity`` uses, its cost
  counted): revisions 2 and 3 are its allocations per MAC saved and by threshold, the analyst
  explores from the best;
- ``agent_kd_rerank``: ``agent_sensitivity``, then its 3 best candidates re-scored by a short
  KD fine-tune (100 steps of 64 training images, top-1 on the same val images;
  :func:`agentic_toolkit.agents.rerank.rerank_candidates`), the best of those chosen;
- ``fastnas_sensitivity_fine`` and ``agent_fine``: the same FastNAS-style baseline and the
  same re-ranking agent on a finer sensitivity table (7 shares per group: the 3 above plus
  :data:`FINE_FRACTIONS`, both measurements' cost counted), the agent's re-rank scored on
  all 5,000 val images (:data:`Config.rerank_val_images`) instead of 2,048. The fine table
  is given to the baseline too: the agent must win by its search, not by better data;
- ``agent_ft_rerank``: ``agent_fine``'s search, its :data:`Config.ft_rerank_top` best
  candidates re-scored by the study's own fine-tuning recipe (KD on
  :data:`Config.ft_rerank_images` seeded training images, seed 100, not a cell's seed), top-1 on
  all 5,000 val images: the costliest proxy there is, the recipe itself.

Searches and the sensitivity table score candidates on held-out ``val`` images only. Each
pruned model is fine-tuned with one recipe for all (KD from the unpruned model, per-step
cosine; :data:`Config.recipe`) on ``train_images`` seeded training images per seed (the seed
picks the images, their order and augmentation; the pruning is deterministic), and top-1 is
measured on the JPEG CIFAR-10 **test** set, for the final report only.

Every search and every (budget, strategy, seed) cell is a task of
:mod:`agentic_toolkit.parallel`: one JSON line when done, so the study resumes and can grow, and
Ray workers share the work (``--workers 2``: a local Ray on 2 cores; ``--address``: a cluster).

    python scripts/accuracy_at_budget.py --workers 2     # full study -> data/05_accuracy_at_budget*.csv
    python scripts/accuracy_at_budget.py --quick         # minutes -> data/smoke/
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from agentic_toolkit.agents.sensitivity import (
    FRACTIONS,
    SensitivityTable,
    measure_sensitivity,
    sensitivity_search,
)
from agentic_toolkit.data import calibration_batches, cifar10
from agentic_toolkit.hashing import sha256_file
from agentic_toolkit.parallel import ResultStore, Task
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.pruning.apply import get_plan
from agentic_toolkit.pruning.budget import fit_to_budget
from agentic_toolkit.pruning.strategy import Strategy, strategy_preset
from agentic_toolkit.training.evaluation import evaluate
from agentic_toolkit.training.finetune import finetune
from agentic_toolkit.training.proxy import default_evaluator
from agentic_toolkit.training.recipe import Recipe

from .adaptation import ADAPTED_WEIGHTS
from .kd import load_teacher

INPUT = (1, 3, 32, 32)
BASELINES = ("uniform_l1", "global_magnitude", "isomorphic_taylor")
#: Searched strategies whose searches score candidates with a proxy (the fidelity study checks those).
PROXY_SEARCHED = ("fastnas_sensitivity", "agent", "agent_sensitivity", "agent_kd_rerank", "fastnas_sensitivity_fine",
                  "agent_fine")
SEARCHED = PROXY_SEARCHED + ("agent_ft_rerank",)  # its final pick is scored by the recipe itself
#: The full-recipe re-rank's training images are picked, ordered and augmented by this seed.
FT_RERANK_SEED = 100
TRAIN_BATCH = 128  # the recipe's batch (fine-tuning cells and the full-recipe re-rank)
#: Shares added to the sensitivity table's (0.25, 0.5, 0.75) for the ``*_fine`` strategies,
#: measured as two tasks (two workers) of two shares each.
FINE_FRACTIONS = ((0.125, 0.625), (0.375, 0.875))
STRATEGIES = BASELINES + SEARCHED
ROOT = PROJECT_ROOT / "runs" / "at_budget"
#: Measured here (1 torch thread, KD from the unpruned ResNet-56): training images per second.
KD_IMAGES_PER_S = {0.5: 130.0, 0.3: 150.0}


@dataclass(frozen=True)
class Config:
    """Sizes of the study. :meth:`quick` is the smoke configuration."""

    budgets: tuple[float, ...] = (0.5, 0.3)
    seeds: tuple[int, ...] = (0, 1, 2)
    strategies: tuple[str, ...] = STRATEGIES
    train_images: int | None = 20_000
    recipe: Recipe = field(default_factory=lambda: Recipe.preset("cifar", epochs=1))
    eval_images: int = 2048  # val images the proxy scores (agent and sensitivity)
    bn_images: int = 1024  # val images for the proxy's BatchNorm re-estimation
    test_limit: int | None = None
    max_revisions: int | None = None  # None: the search's default budget
    weights: str = str(ADAPTED_WEIGHTS)
    kd_proxy_steps: int = 50  # the fidelity study's short-KD proxy
    rerank_steps: int = 100  # agent_kd_rerank's KD proxy
    rerank_val_images: int | None = None  # agent_fine's re-rank top-1 on this many val images (None: all)
    ft_rerank_top: int = 6  # agent_ft_rerank: candidates re-scored by the recipe itself
    ft_rerank_images: int = 20_000  # agent_ft_rerank: training images of each re-scoring fine-tune


    @classmethod
    def quick(cls) -> Config:
        return cls(budgets=(0.5,), seeds=(0,), train_images=256, eval_images=128, bn_images=128, test_limit=500,
                   max_revisions=3, kd_proxy_steps=4, rerank_steps=4, rerank_val_images=256, ft_rerank_top=2,
                   ft_rerank_images=128)

    def settings(self) -> dict[str, Any]:
        """What decides the results (cache key of every record)."""
        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe.to_dict()
        w = Path(self.weights)
        d["weights"] = sha256_file(w) if w.is_file() else "pretrained"
        for k in ("budgets", "seeds", "strategies", "kd_proxy_steps", "rerank_steps", "rerank_val_images",
                  "ft_rerank_top", "ft_rerank_images"):
            d.pop(k)  # growing the study must not invalidate finished cells (proxy records say their steps)
        return d


class Context:
    """What every task of one worker process shares, built on first use."""

    def __init__(self, cfg: Config, fixed: dict[str, Strategy] | None = None):
        self.cfg = cfg
        self.fixed = {name: strategy_preset(name) for name in BASELINES} | (fixed or {})
        self.x = torch.randn(INPUT, generator=torch.Generator().manual_seed(0))

    @cached_property
    def teacher(self) -> torch.nn.Module:
        model, self.teacher_source = load_teacher(self.cfg.weights)
        return model.eval()

    @cached_property
    def plan(self):
        return get_plan(self.teacher, self.x, calibration_batches("cifar10", n_batches=4, batch_size=64))

    @cached_property
    def evaluator(self):
        """The search's evaluator: the toolkit's default proxy on held-out val images."""
        return default_evaluator(eval_images=self.cfg.eval_images, bn_images=self.cfg.bn_images)

    @cached_property
    def small_evaluator(self):
        """The proxy on 512 val images (BatchNorm re-estimated on 512 others)."""
        return default_evaluator(eval_images=512, bn_images=512)

    @cached_property
    def rerank_batches(self) -> list:
        """``agent_fine``'s re-rank images: the first ``rerank_val_images`` of val (None: all)."""
        return list(cifar10("val", batch_size=250, limit=self.cfg.rerank_val_images))

    @cached_property
    def test(self):
        return cifar10("test", batch_size=500, limit=self.cfg.test_limit)

    def target(self, budget: float) -> int:
        return int(budget * self.plan.base_macs)

    def strategy(self, name: str, budget: float, store: ResultStore) -> Strategy:
        """The strategy ``name`` before landing (a search's result is read from ``store``)."""
        if name in self.fixed:
            return self.fixed[name]
        rec = store.get(search_key(name, budget))
        if rec is None:
            raise KeyError(f"no search result for {name} at {budget}")
        return Strategy.from_dict(rec["strategy"])

    def land(self, name: str, budget: float, store: ResultStore):
        """The fit of strategy ``name`` on ``budget`` (deterministic)."""
        return fit_to_budget(self.teacher, self.strategy(name, budget, store), self.target(budget), self.x,
                             plan=self.plan)


#: What a search or a sensitivity table depends on (not the fine-tuning recipe nor its images).
SEARCH_SETTINGS = ("eval_images", "bn_images", "max_revisions", "weights")


def record_scope(key: str) -> tuple[str, ...] | None:
    """The settings a task record depends on (the store's ``scope``): searches and sensitivity
    tables only :data:`SEARCH_SETTINGS`, so a study with more fine-tuning images reuses them;
    every other record all settings (None)."""
    return SEARCH_SETTINGS if key.startswith(("search/", "sensitivity")) else None


def search_key(name: str, budget: float) -> str:
    return f"search/{name}/{budget:g}"


def cell_key(budget: float, name: str, seed: int) -> str:
    return f"cell/{budget:g}/{name}/seed{seed}"


# ---------------------------------------------------------------------------- tasks
def _sensitivity_task(ctx: Context, fractions: tuple[float, ...] = FRACTIONS) -> Callable[[ResultStore], dict]:
    def run(store: ResultStore) -> dict:
        table = measure_sensitivity(ctx.teacher, ctx.x, ctx.evaluator, plan=ctx.plan, fractions=fractions,
                                    progress=False)
        print(table.summary(), flush=True)
        return table.to_dict()

    return run


FINE_KEYS = tuple(f"sensitivity_fine/{i}" for i in range(len(FINE_FRACTIONS)))


def sensitivity_table(store: ResultStore, fine: bool = False) -> SensitivityTable:
    """The measured table from ``store``: 3 shares per group, or 7 with ``fine``."""
    parts = ["sensitivity", *(FINE_KEYS if fine else ())]
    return SensitivityTable.combine(*(SensitivityTable.from_dict(store.get(k)) for k in parts))


def _fastnas_task(ctx: Context, budget: float, fine: bool = False) -> Callable[[ResultStore], dict]:
    def run(store: ResultStore) -> dict:
        table = sensitivity_table(store, fine)
        res = sensitivity_search(ctx.teacher, ctx.target(budget), ctx.x, table, plan=ctx.plan)
        score = ctx.evaluator(res.fit.prune().model)
        print(res.summary(), flush=True)
        return {"strategy": res.strategy.to_dict(), "search_seconds": res.seconds, "score": score,
                "allocation": res.allocation, "tau": res.tau}

    return run


def _agent_task(ctx: Context, budget: float, sensitivity: bool = False, rerank_top: int = 0,
                fine: bool = False, full_recipe: bool = False) -> Callable[[ResultStore], dict]:
    def run(store: ResultStore) -> dict:
        from agentic_toolkit.agents.backends import AnalystBackend
        from agentic_toolkit.agents.search import AgenticSearch
        from agentic_toolkit.agents.settings import SearchLogging, SearchStart

        table = sensitivity_table(store, fine) if sensitivity else None
        t0 = time.perf_counter()
        search = AgenticSearch(
            ctx.teacher, ctx.target(budget), ctx.x, evaluator=ctx.evaluator, max_revisions=ctx.cfg.max_revisions,
            backend=AnalystBackend(eval_images=ctx.evaluator.eval_images), logging=SearchLogging(progress=False),
            start=SearchStart(plan=ctx.plan, sensitivity=table if table is not None else False),  # the study's
        )  # own variants, not a preset's table
        res = search.run()
        print(f"agent{'_sensitivity' if sensitivity else ''} @ {budget:g}: {res.summary()}", flush=True)
        strategy, extra = res.strategy, {}
        if rerank_top:
            from agentic_toolkit.agents.rerank import rerank_candidates

            proxy, extra = _rerank_proxy(ctx, fine, full_recipe)
            rr = rerank_candidates(search, proxy, top=rerank_top)
            print(f"  {rr.summary()}", flush=True)
            strategy, extra = rr.strategy, {"rerank": rr.to_dict(), **extra}
        spent = time.perf_counter() - t0 + (table.seconds if table else 0.0)
        return {**extra, "strategy": strategy.to_dict(), "search_seconds": spent,
                "score": res.score, "score_se": res.score_se, "default_score": res.default_score,
                "revisions": res.revisions, "stop_reason": res.stop_reason}

    return run


def _rerank_proxy(ctx: Context, fine: bool, full_recipe: bool) -> tuple[Callable, dict[str, Any]]:
    """The re-rank's scorer and what its record says about it: a short KD fine-tune
    (``rerank_steps`` batches of 64), or with ``full_recipe`` the study's recipe on
    ``ft_rerank_images`` training images (seed :data:`FT_RERANK_SEED`)."""
    from agentic_toolkit.training.kd_proxy import KDProxy, kd_proxy

    cfg = ctx.cfg
    evals = ctx.rerank_batches if fine else ctx.evaluator.eval_batches
    if not full_recipe:
        return kd_proxy(ctx.teacher, steps=cfg.rerank_steps, eval_batches=evals), {"rerank_steps": cfg.rerank_steps}
    train = cifar10("train", batch_size=TRAIN_BATCH, limit=cfg.ft_rerank_images, seed=FT_RERANK_SEED)
    proxy = KDProxy(ctx.teacher, train, list(evals), recipe=cfg.recipe, seed=FT_RERANK_SEED)
    return proxy, {"rerank_images": len(train.dataset), "rerank_recipe": cfg.recipe.to_dict()}


def kd_finetune(pruned: torch.nn.Module, teacher: torch.nn.Module, recipe: Recipe, train_images: int | None,
                seed: int):
    """A copy of ``pruned`` fine-tuned by the study's recipe (KD from ``teacher``) on
    ``train_images`` training images picked, ordered and augmented by ``seed``:
    ``(student, FinetuneResult, images used)``."""
    student = copy.deepcopy(pruned).train()
    train = cifar10("train", batch_size=TRAIN_BATCH, limit=train_images, seed=seed)
    ft = finetune(student, train, None, recipe, teacher=teacher, amp=False, seed=seed, progress=False)
    return student, ft, len(train.dataset)


def _cell_task(ctx: Context, budget: float, name: str, seed: int) -> Callable[[ResultStore], dict]:
    def run(store: ResultStore) -> dict:
        fit = ctx.land(name, budget, store)
        pruned = fit.prune()
        student, ft, n_images = kd_finetune(pruned.model, ctx.teacher, ctx.cfg.recipe, ctx.cfg.train_images, seed)
        acc = evaluate(student, ctx.test)
        rec = store.get(search_key(name, budget)) or {}  # a searched strategy's cost; else the solver's
        return {"budget": budget, "strategy": name, "seed": seed, "macs": pruned.macs, "params": pruned.params,
                "target_macs": ctx.target(budget), "base_macs": ctx.plan.base_macs,
                "error_pct": fit.error_pct, "test_top1": acc["top1"], "test_loss": acc["loss"],
                "train_images": n_images, "ft_seconds": ft.seconds,
                "search_seconds": rec.get("search_seconds", fit.seconds),
                "strategy_json": fit.strategy.to_json()}

    return run


def cell_estimate(cfg: Config, budget: float) -> float:
    """Seconds of one fine-tuning cell on one thread (from :data:`KD_IMAGES_PER_S`)."""
    rate = KD_IMAGES_PER_S.get(budget, 140.0)
    return (cfg.train_images or 45_000) * cfg.recipe.epochs / rate + 25


def search_tasks(ctx: Context) -> list[Task]:
    """The sensitivity table and the searched strategies' searches, per budget."""
    cfg = ctx.cfg
    groups = 30  # ResNet-56's prunable groups
    out = []
    per_eval = 3.0 * (cfg.eval_images + cfg.bn_images) / 1000
    fine = {"fastnas_sensitivity_fine", "agent_fine", "agent_ft_rerank"} & set(cfg.strategies)
    if {"fastnas_sensitivity", "agent_sensitivity", "agent_kd_rerank"} & set(cfg.strategies) or fine:
        out.append(Task("sensitivity", _sensitivity_task(ctx), estimate_s=groups * 3 * per_eval))
    if fine:
        out += [Task(k, _sensitivity_task(ctx, f), estimate_s=groups * len(f) * per_eval)
                for k, f in zip(FINE_KEYS, FINE_FRACTIONS, strict=True)]
    fine_deps = ("sensitivity", *FINE_KEYS)
    if "fastnas_sensitivity" in cfg.strategies:
        out += [Task(search_key("fastnas_sensitivity", b), _fastnas_task(ctx, b), deps=("sensitivity",),
                     estimate_s=20) for b in cfg.budgets]
    if "agent" in cfg.strategies:
        out += [Task(search_key("agent", b), _agent_task(ctx, b), estimate_s=300) for b in cfg.budgets]
    if "agent_sensitivity" in cfg.strategies:
        out += [Task(search_key("agent_sensitivity", b), _agent_task(ctx, b, True), deps=("sensitivity",),
                     estimate_s=300) for b in cfg.budgets]
    if "agent_kd_rerank" in cfg.strategies:
        out += [Task(search_key("agent_kd_rerank", b), _agent_task(ctx, b, True, rerank_top=3),
                     deps=("sensitivity",), estimate_s=450) for b in cfg.budgets]
    if "fastnas_sensitivity_fine" in cfg.strategies:
        out += [Task(search_key("fastnas_sensitivity_fine", b), _fastnas_task(ctx, b, fine=True), deps=fine_deps,
                     estimate_s=20) for b in cfg.budgets]
    if "agent_fine" in cfg.strategies:
        out += [Task(search_key("agent_fine", b), _agent_task(ctx, b, True, rerank_top=3, fine=True),
                     deps=fine_deps, estimate_s=500) for b in cfg.budgets]
    if "agent_ft_rerank" in cfg.strategies:
        per = cfg.ft_rerank_images * cfg.recipe.epochs / 140.0 + 20
        out += [Task(search_key("agent_ft_rerank", b),
                     _agent_task(ctx, b, True, rerank_top=cfg.ft_rerank_top, fine=True, full_recipe=True),
                     deps=fine_deps, estimate_s=120 + cfg.ft_rerank_top * per) for b in cfg.budgets]
    return out


def cell_tasks(ctx: Context, names: tuple[str, ...], seeds: tuple[int, ...]) -> list[Task]:
    """Fine-tuning cells, seed-major (every strategy's seed 0 first)."""
    out = []
    for seed in seeds:
        for b in ctx.cfg.budgets:
            for name in names:
                deps = (search_key(name, b),) if name in SEARCHED else ()
                out.append(Task(cell_key(b, name, seed), _cell_task(ctx, b, name, seed), deps=deps,
                                estimate_s=cell_estimate(ctx.cfg, b)))
    return out


def tasks(ctx: Context) -> list[Task]:
    """Every task of the study, searches first."""
    return search_tasks(ctx) + cell_tasks(ctx, ctx.cfg.strategies, ctx.cfg.seeds)
