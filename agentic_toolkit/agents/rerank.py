"""Re-rank a search's best candidates with a costlier, fine-tuning-aware score.

The search ranks every candidate with a cheap proxy; among the few best, which one recovers
best with fine-tuning is what matters. :func:`rerank_candidates` rebuilds the ``top`` best distinct
in-band candidates of a finished :class:`~agentic_toolkit.AgenticSearch` (exactly as scored:
same plan, same strategy) and scores them with ``evaluator`` (e.g.
:func:`~agentic_toolkit.training.kd_proxy.kd_proxy`); the best by that score wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch.nn as nn

from ..errors import ToolkitError
from ..parallel import Executor, worker_pool
from ..parallel.pool import LocalPool
from ..pruning.strategy import Strategy
from .candidates import rebuild_candidate


@dataclass
class RerankResult:
    """The re-ranked winner and every re-scored candidate (``frame``: revision, score, rerank)."""

    strategy: Strategy
    revision: int
    frame: pd.DataFrame
    seconds: float

    def summary(self) -> str:
        rows = ", ".join(f"rev {r.revision}: {r.score:.2f} -> {r.rerank:.2f}" for r in self.frame.itertuples())
        return f"re-ranked {len(self.frame)} candidates in {self.seconds:.0f} s ({rows}); chose revision {self.revision}"

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.to_dict(), "revision": self.revision,
                "candidates": self.frame.to_dict("records"), "seconds": self.seconds}

    def to_frame(self) -> pd.DataFrame:
        return self.frame


def rerank_candidates(search, evaluator: Callable[[nn.Module], float], top: int = 3,
                      executor: Executor = None) -> RerankResult:
    """Score the ``top`` best distinct in-band candidates of ``search`` with ``evaluator``.

    ``executor``: None (one after the other here), ``"ray"`` or a
    :class:`~agentic_toolkit.parallel.RayExecutor`: the candidates are rebuilt here and scored
    on Ray workers, each holding one copy of ``evaluator`` (e.g. a KD proxy with its teacher
    and images); each candidate model travels to the worker that scores it.
    """
    if top < 1:
        raise ToolkitError(f"top must be >= 1, got {top}")
    scored = [r for r in search.records if r.get("type", "revision") == "revision" and r.get("in_band")
              and r.get("score") is not None and r.get("duplicate_of") is None]
    if not scored:
        raise ToolkitError("the search has no scored in-band candidate to re-rank")
    best = sorted(scored, key=lambda r: (-r["score"], r["revision"]))[:top]
    t0 = time.perf_counter()
    with worker_pool(evaluator, executor) as pool:
        if isinstance(pool, LocalPool):  # rebuild each candidate just before it is scored
            scores = [_score(evaluator, rebuild_candidate(search, r)) for r in best]
        else:
            scores = pool.map(_score, [rebuild_candidate(search, r) for r in best])
    rows = [{"revision": r["revision"], "score": r["score"], "rerank": s, "strategy": r["strategy"]}
            for r, s in zip(best, scores, strict=True)]
    win = max(rows, key=lambda r: (r["rerank"], r["score"]))
    frame = pd.DataFrame(rows)[["revision", "score", "rerank", "strategy"]]
    return RerankResult(Strategy.from_dict(win["strategy"]), int(win["revision"]), frame, time.perf_counter() - t0)


def _score(evaluator: Callable[[nn.Module], float], model: nn.Module) -> float:
    """``evaluator(model)`` as a float (here or in a worker holding ``evaluator``)."""
    return float(evaluator(model))
