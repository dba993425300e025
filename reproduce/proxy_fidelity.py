"""Which cheap score ranks pruning candidates like fine-tuning does? The proxy fidelity study.

Thirteen strategies spanning importance (L1, L2, Taylor, LAMP, random) x grouping (uniform,
global, isomorphic) x per-scope and per-group multipliers -- the accuracy study's baselines,
its searched strategies (FastNAS-style, the agent's) and six fixed extras -- are landed on each
budget of the adapted ResNet-56 (:mod:`.at_budget`'s context). For each landed candidate the study measures the
candidate proxies, all on held-out ``val`` images:

- ``bn_top1_512``: BatchNorm statistics re-estimated on 512 images, top-1 on 512 others;
- ``bn_top1_2048``: the same with 1,024 / 2,048 images (the search's evaluator in
  :mod:`.at_budget`);
- ``bn_neg_loss_2048``: minus the cross-entropy on those 2,048 images after re-estimation;
- ``bn_neg_kl_2048``: minus KL(unpruned || pruned) of the softmax outputs on them;
- ``kd_top1_k50``: 50 KD steps (batch 64, 3,200 training images) from the unpruned model,
  then top-1 on the 2,048 images.

Ground truth: the study's fine-tuning cell (seed 0) of the same strategy and budget, one
recipe for all, top-1 on the test split. Per proxy and budget: Spearman's rho over the
strategies with a bootstrap 95% interval (strategies resampled) and the seconds per
candidate. The cells are shared with :mod:`.at_budget` (same store, same settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from agentic_toolkit.data import cifar10
from agentic_toolkit.parallel import ResultStore, Task
from agentic_toolkit.pruning.strategy import Strategy
from agentic_toolkit.training.evaluation import evaluate
from agentic_toolkit.training.kd_proxy import KDProxy

from .at_budget import (
    BASELINES,
    PROXY_SEARCHED,
    Context,
    cell_key,
    cell_tasks,
    search_key,
    search_tasks,
)

#: Fixed strategies besides the accuracy study's baselines (whose cells are shared with it).
EXTRAS = {
    "isomorphic_l2": Strategy(),
    "uniform_l2": Strategy(isomorphic=False, global_pruning=False),
    "global_taylor": Strategy(importance="taylor", isomorphic=False, global_pruning=True),
    "isomorphic_lamp": Strategy(importance="lamp"),
    "uniform_random": Strategy(importance="random", isomorphic=False, global_pruning=False),
    "iso_l2_residual_x0.5": Strategy(multipliers={"residual": 0.5}),
}
#: Twelve-plus candidates: the baselines, the searched strategies (per-group and per-scope
#: shapes the agent actually compares; their cells are shared too) and the extras above.
FIDELITY_STRATEGIES = BASELINES + PROXY_SEARCHED + tuple(EXTRAS)
PROXIES = ("bn_top1_512", "bn_top1_2048", "bn_neg_loss_2048", "bn_neg_kl_2048", "kd_top1_k50")
KD_BATCH = 64  # the short-KD proxy's batch; its steps are Config.kd_proxy_steps (50)


def proxies_key(budget: float, name: str) -> str:
    return f"proxies/{budget:g}/{name}"


def _timed(fn: Callable[[], float]) -> tuple[float, float]:
    t0 = time.perf_counter()
    v = float(fn())
    return v, time.perf_counter() - t0


def _neg_kl(student: torch.nn.Module, teacher: torch.nn.Module, batches) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for x, _ in batches:
            s, t = F.log_softmax(student.eval()(x), 1), F.log_softmax(teacher.eval()(x), 1)
            total += float(F.kl_div(s, t, log_target=True, reduction="sum"))
            n += len(x)
    return -total / n


def _proxies_task(ctx: Context, budget: float, name: str) -> Callable[[ResultStore], dict]:
    def run(store: ResultStore) -> dict:
        model = ctx.land(name, budget, store).prune().model
        ev = ctx.evaluator
        small = ctx.small_evaluator
        out, secs = {}, {}
        out["bn_top1_512"], secs["bn_top1_512"] = _timed(lambda: small(model))
        t0 = time.perf_counter()
        top1, prepared = ev.scored(model)
        secs["bn_top1_2048"] = time.perf_counter() - t0
        out["bn_top1_2048"] = top1
        loss, dt = _timed(lambda: -evaluate(prepared, ev.eval_batches)["loss"])
        out["bn_neg_loss_2048"], secs["bn_neg_loss_2048"] = loss, secs["bn_top1_2048"] + dt
        kl, dt = _timed(lambda: _neg_kl(prepared, ctx.teacher, ev.eval_batches))
        out["bn_neg_kl_2048"], secs["bn_neg_kl_2048"] = kl, secs["bn_top1_2048"] + dt
        out["kd_top1_k50"], secs["kd_top1_k50"] = _timed(lambda: _kd_proxy(ctx, model))
        return {"budget": budget, "strategy": name, "proxies": out, "seconds": secs,
                "kd_steps": ctx.cfg.kd_proxy_steps}

    return run


def _kd_proxy(ctx: Context, model: torch.nn.Module) -> float:
    # the loader (not a list) is iterated inside the fine-tune, after its seeding: the
    # augmentation of the committed study's proxy
    train = cifar10("train", batch_size=KD_BATCH, limit=ctx.cfg.kd_proxy_steps * KD_BATCH, seed=0)
    return KDProxy(ctx.teacher, train, ctx.evaluator.eval_batches, seed=0)(model)


def tasks(ctx: Context) -> list[Task]:
    """The searches the searched candidates need, then per budget: every candidate's proxies
    and the seed-0 cells of the extra strategies."""
    out = search_tasks(ctx)
    for b in ctx.cfg.budgets:
        out += [Task(proxies_key(b, n), _proxies_task(ctx, b, n), estimate_s=60,
                     deps=(search_key(n, b),) if n in PROXY_SEARCHED else ()) for n in FIDELITY_STRATEGIES]
        cells = cell_tasks(ctx, FIDELITY_STRATEGIES, (0,))
        out += [t for t in cells if t.key.startswith(f"cell/{b:g}/")]
    return out


def fidelity_table(store: ResultStore, budgets, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per proxy and budget: Spearman rho with the fine-tuned test top-1, bootstrap 95% CI,
    seconds per candidate and strategies counted; ``default`` marks the cheapest proxy with
    rho >= 0.8 at every budget (else the best mean rho)."""
    rows = []
    rng = np.random.default_rng(seed)
    for b in budgets:
        pairs = [(store.get(proxies_key(b, n)), store.get(cell_key(b, n, 0))) for n in FIDELITY_STRATEGIES]
        pairs = [(p, c) for p, c in pairs if p and c]
        truth = np.array([c["test_top1"] for _, c in pairs])
        for proxy in PROXIES:
            vals = np.array([p["proxies"][proxy] for p, _ in pairs])
            rho, lo, hi = _spearman_ci(vals, truth, rng, n_boot)
            rows.append({"proxy": proxy, "budget": b, "strategies": len(pairs), "spearman": rho, "ci_low": lo,
                         "ci_high": hi, "seconds_per_candidate": float(np.mean([p["seconds"][proxy] for p, _ in pairs]))
                         if pairs else np.nan})
    df = pd.DataFrame(rows)
    df["default"] = df["proxy"] == default_proxy(df) if len(df) else []
    return df


def default_proxy(df: pd.DataFrame) -> str:
    """The cheapest proxy whose rho >= 0.8 at every budget, else the one with the best mean rho."""
    by = df.groupby("proxy").agg(worst=("spearman", "min"), mean=("spearman", "mean"),
                                 cost=("seconds_per_candidate", "mean"))
    good = by[by["worst"] >= 0.8]
    return str(good["cost"].idxmin() if len(good) else by["mean"].idxmax())


def _spearman_ci(x: np.ndarray, y: np.ndarray, rng, n_boot: int) -> tuple[float, float, float]:
    if len(x) < 3:
        return np.nan, np.nan, np.nan
    rho = _spearman(x, y)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if len(set(i)) >= 3:
            r = _spearman(x[i], y[i])
            if np.isfinite(r):
                boots.append(r)
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
    return float(rho), float(lo), float(hi)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


__all__ = ["EXTRAS", "FIDELITY_STRATEGIES", "PROXIES", "default_proxy", "fidelity_table", "tasks"]
