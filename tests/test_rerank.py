"""The KD proxy and re-ranking a search's best candidates with it (real model, real pruning)."""

from __future__ import annotations

import pytest
import torch

import agentic_toolkit as at
from agentic_toolkit.agents.rerank import rerank_candidates
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.training.kd_proxy import KDProxy, kd_proxy


@pytest.fixture(scope="module")
def finished_search(r20_calibrated):
    model, x, calib, plan = r20_calibrated
    ev = at.default_evaluator(eval_images=256, bn_images=128)
    search = at.AgenticSearch(model, int(0.5 * plan.base_macs), x, evaluator=ev, max_revisions=4,
                              start=at.SearchStart(plan=plan), logging=at.SearchLogging(progress=False))
    search.run()
    return model, search, ev


def test_kd_proxy_trains_a_copy_and_scores_held_out_images(finished_search):
    model, search, ev = finished_search
    proxy = kd_proxy(model, steps=2, batch_size=32, eval_batches=ev.eval_batches)
    assert isinstance(proxy, KDProxy) and proxy.eval_images == 256 and len(proxy.train_batches) == 2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score = proxy(model)
    assert 0.0 <= score <= 100.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    with pytest.raises(ToolkitError):
        kd_proxy(model, steps=0)


def test_rerank_rescores_the_best_candidates_and_picks_the_winner(finished_search):
    model, search, ev = finished_search
    calls = []

    def fake(m):  # a re-ranking score that prefers fewer parameters: the opposite of most proxies
        calls.append(m)
        return -sum(p.numel() for p in m.parameters()) / 1e4

    res = rerank_candidates(search, fake, top=2)
    assert len(calls) == len(res.frame) == 2
    assert res.frame["score"].is_monotonic_decreasing  # the search's 2 best, best first
    win = res.frame.loc[res.frame["rerank"].idxmax()]
    assert res.revision == win["revision"] and res.strategy.to_dict() == win["strategy"]
    assert "re-ranked 2 candidates" in res.summary()
    with pytest.raises(ToolkitError, match="top must be"):
        rerank_candidates(search, fake, top=0)
