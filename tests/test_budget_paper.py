"""The paper's MAC targets on the large models: within 0.5%, pruned MACs equal the prediction.

One plan per model (graph, importance and profile built once) serves every target; each
target is pruned once to check the prediction and the output shape.
"""

from __future__ import annotations

import pytest
import torch

from agentic_toolkit import Strategy, create_model, fit_to_budget

X = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
CASES = {
    "resnet101": ["4.22G", 0.3],
    "convnext_small": ["8.17G", 0.5],
    "deit_base_patch16_224": ["4.16G", "2.61G", 0.8],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_paper_targets(name):
    model = create_model(name)
    plan = None
    for target in CASES[name]:
        if isinstance(target, float):
            target = int(plan.base_macs * target)
        fit = fit_to_budget(model, Strategy(), target, X, plan=plan)
        plan = fit.plan
        assert abs(fit.error_pct) <= 0.5, (name, target, fit.error_pct)
        r = fit.prune()
        assert r.macs == fit.predicted_macs
        with torch.no_grad():
            assert r.model(X).shape == (1, 1000)
