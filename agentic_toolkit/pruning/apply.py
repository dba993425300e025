"""Isomorphic structural pruning of a model to a strategy (``apply_isomorphic_prune``)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch.nn as nn

from ..errors import ToolkitError
from .plan import PrunePlan, Selection, input_shape
from .strategy import Strategy


@dataclass
class PruneResult:
    """A pruned model and what was done to it.

    ``macs``/``params`` are measured on the pruned model with :func:`profile_macs`
    (default convention, the batch of ``example_inputs``); ``predicted_macs`` is what the
    plan predicted from the widths (always equal to ``macs`` on supported models).
    ``widths`` maps every conv/linear layer to its output channels; ``history`` is
    torch-pruning's pruning history (replayable with ``load_pruning_history``).
    """

    model: nn.Module
    strategy: Strategy
    macs: int
    params: int
    base_macs: int
    base_params: int
    widths: dict[str, int]
    history: list
    predicted_macs: int
    input_shape: tuple[int, ...]
    num_heads: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mac_ratio(self) -> float:
        """Pruned MACs over base MACs."""
        return self.macs / self.base_macs if self.base_macs else 1.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers (no model, no history)."""
        return {
            "strategy": self.strategy.to_dict(),
            "macs": int(self.macs),
            "params": int(self.params),
            "base_macs": int(self.base_macs),
            "base_params": int(self.base_params),
            "predicted_macs": int(self.predicted_macs),
            "mac_ratio": self.mac_ratio,
            "input_shape": list(self.input_shape),
            "notes": list(self.notes),
        }


def describe_scopes(model: nn.Module, example_inputs) -> pd.DataFrame:
    """The named scopes a strategy can address, with channel counts and MAC shares.

    Columns: ``name`` (key for ``Strategy.multipliers``), ``kind`` (stem, stage, head,
    residual, block, attention, heads), ``channels`` (prunable channels; heads for
    ``attn.heads``), ``groups``, ``mac_share`` (fraction of the model's MACs in layers whose
    width the scope changes; scopes overlap, so shares do not sum to 1) and
    ``description``. ``df.attrs["not_prunable"]`` lists channel groups that are kept and why.
    The model is not changed.
    """
    plan = PrunePlan.build(model, example_inputs)
    return plan.describe()


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and linear layer."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = int(m.out_channels)
        elif isinstance(m, nn.Linear):
            out[name] = int(m.out_features)
    return out


def get_plan(model: nn.Module, example_inputs, calibration=None, plan: PrunePlan | None = None) -> PrunePlan:
    """``plan`` if it was built for this model (and calibration), else a new plan."""
    if plan is None:
        return PrunePlan.build(model, example_inputs, calibration)
    if not isinstance(plan, PrunePlan):
        raise ToolkitError(f"plan must be a PrunePlan (e.g. BudgetFit.plan), got {type(plan).__name__}")
    if plan.source is not model:
        raise ToolkitError("this plan was built for another model object; pass plan=None to build a new one")
    if calibration is not None and plan.calibration is not None and not _same_batches(calibration, plan.calibration):
        raise ToolkitError("this plan was built with other calibration batches; pass plan=None")
    if example_inputs is not None and input_shape(example_inputs) != plan.input_shape:
        raise ToolkitError(
            f"this plan was built for inputs of shape {plan.input_shape}, got {input_shape(example_inputs)}"
        )
    if calibration is not None and plan.calibration is None:
        plan.calibration = list(calibration)
        plan._importance.pop("taylor", None)
        plan._scopes_cache.clear()
    return plan


def _same_batches(a, b) -> bool:
    a, b = list(a), list(b)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
            if len(x) != len(y) or any(u is not v for u, v in zip(x, y, strict=True)):
                return False
        elif x is not y:
            return False
    return True


def prune_with_plan(plan: PrunePlan, strategy: Strategy, inplace: bool = False, selection: Selection | None = None) -> PruneResult:
    """Prune ``plan``'s model to ``strategy`` (or to a precomputed ``selection``)."""
    from ..profiling.profile import profile_macs

    start = time.perf_counter()
    sel = plan.select(strategy) if selection is None else selection
    predicted = plan.predict_macs(sel)
    model, history = plan.apply(sel, strategy, inplace=inplace)
    profile = profile_macs(model, example_inputs=plan.example_inputs)
    notes = list(plan.importance(strategy.importance)[1])
    if int(profile.total_macs) != predicted:
        note = (
            f"predicted {predicted} MACs but the pruned model has {profile.total_macs}; "
            "a layer type scales in a way the MAC model does not know (please report)"
        )
        warnings.warn(note, stacklevel=3)
        notes.append(note)
    return PruneResult(
        model=model,
        strategy=strategy,
        macs=int(profile.total_macs),
        params=int(profile.params),
        base_macs=plan.base_macs,
        base_params=plan.base_params,
        widths=layer_widths(model),
        history=history,
        predicted_macs=predicted,
        input_shape=plan.input_shape,
        num_heads=plan.kept_heads(sel),
        notes=notes,
        seconds=time.perf_counter() - start,
    )


def apply_isomorphic_prune(
    model: nn.Module,
    strategy: Strategy,
    example_inputs,
    calibration=None,
    inplace: bool = False,
    plan: PrunePlan | None = None,
) -> PruneResult:
    """Prune ``model`` to ``strategy`` with torch-pruning's dependency graph.

    Channels are ranked by ``strategy.importance`` within ranking scopes (isomorphic groups
    by default), each scope cut by ``pruning_ratio`` times the product of its scope
    multipliers (see :func:`describe_scopes`), no layer losing more than
    ``max_layer_ratio`` of its channels, kept counts rounded to ``round_to``. The
    classifier and the model outputs are never pruned; ViT attention attributes are updated.

    ``calibration`` (a list of ``(images, labels)`` batches) feeds Taylor importance.
    The input model is unchanged unless ``inplace=True``. Pass ``plan=`` (e.g.
    ``BudgetFit.plan``) to reuse the dependency graph and importance scores.
    """
    if not isinstance(strategy, Strategy):
        raise ToolkitError(f"strategy must be an agentic_toolkit.Strategy, got {type(strategy).__name__}")
    start = time.perf_counter()
    p = get_plan(model, example_inputs, calibration, plan)
    result = prune_with_plan(p, strategy, inplace=inplace)
    result.seconds = time.perf_counter() - start
    return result
