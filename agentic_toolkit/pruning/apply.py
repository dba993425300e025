"""Isomorphic structural pruning of a model to a strategy (``apply_isomorphic_prune``)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch.nn as nn

from ..errors import ToolkitError
from ..units import format_macs
from .model_utils import input_shape
from .plan import PrunePlan
from .ranking import Selection
from .strategy import Strategy


@dataclass
class PruneResult:
    """A pruned model and what was done to it.

    :meth:`summary` is a few lines of text, :meth:`to_dict` the JSON-ready numbers,
    :meth:`to_frame` the per-layer widths, :meth:`plot` draws them.

    Attributes:
        model: the pruned model.
        strategy: the strategy it was pruned to.
        macs, params: measured on the pruned model with :func:`profile_macs` (default
            convention, the batch of ``example_inputs``).
        base_macs, base_params: the same before pruning.
        widths: every conv/linear layer's output channels (``base_widths``: before pruning).
        history: torch-pruning's pruning history (replayable with ``load_pruning_history``).
        predicted_macs: what the plan predicted from the widths (equal to ``macs`` on
            supported models).
        input_shape: the example input's shape.
        num_heads: kept attention heads per attention module (ViTs).
        notes: warnings of the pruning run.
        seconds: wall time.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> x = torch.randn(1, 3, 32, 32)
        >>> uniform = at.strategy_preset("uniform_l1", pruning_ratio=0.5)  # every layer keeps half
        >>> res = at.apply_isomorphic_prune(at.create_model("cifar_resnet20"), uniform, x)
        >>> res.macs == res.predicted_macs, f"{res.mac_ratio:.1%}"
        (True, '25.3%')
        >>> res.to_frame().columns.tolist()[:3]
        ['layer', 'base_channels', 'channels']
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
    base_widths: dict[str, int] = field(default_factory=dict)

    @property
    def mac_ratio(self) -> float:
        """Pruned MACs over base MACs."""
        return self.macs / self.base_macs if self.base_macs else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no model, no history, no widths)."""
        return {
            "strategy": self.strategy.to_dict(),
            "macs": int(self.macs),
            "params": int(self.params),
            "base_macs": int(self.base_macs),
            "base_params": int(self.base_params),
            "predicted_macs": int(self.predicted_macs),
            "mac_ratio": self.mac_ratio,
            "input_shape": list(self.input_shape),
            "num_heads": dict(self.num_heads),
            "notes": list(self.notes),
            "seconds": self.seconds,
        }

    def summary(self) -> str:
        """A few human-readable lines: MACs and params before and after, the strategy, notes."""
        from ..profiling.profile import model_name

        s = self.strategy
        ranking = "isomorphic" if s.isomorphic else ("global" if s.global_pruning else "per-layer")
        shape = "x".join(str(d) for d in self.input_shape)
        lines = [
            f"{model_name(self.model)}: {format_macs(self.base_macs)} -> {format_macs(self.macs)} MACs "
            f"({self.mac_ratio:.1%} kept), params {format_macs(self.base_params)} -> "
            f"{format_macs(self.params)}, input {shape}",
            f"strategy: {s.importance} importance, {ranking} ranking, pruning_ratio {s.pruning_ratio:.4f}"
            + (f", multipliers {s.multipliers}" if s.multipliers else "")
            + (f", round_to {s.round_to}" if s.round_to else ""),
        ]
        changed = [n for n, w in self.widths.items() if self.base_widths.get(n, w) != w]
        if self.base_widths:
            lines.append(f"{len(changed)} of {len(self.widths)} conv/linear layers narrowed")
        if self.predicted_macs != self.macs:
            lines.append(f"predicted {format_macs(self.predicted_macs)} MACs (differs from the measured count)")
        if self.num_heads:
            lines.append("heads: " + ", ".join(f"{k} {v}" for k, v in self.num_heads.items()))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_frame(self) -> pd.DataFrame:
        """One row per conv/linear layer in model order: ``layer``, ``base_channels`` (NaN when
        unknown), ``channels`` and ``kept`` (fraction of the output channels kept)."""
        rows = []
        for name, w in self.widths.items():
            base = self.base_widths.get(name)
            rows.append({"layer": name, "base_channels": base, "channels": w,
                         "kept": w / base if base else float("nan")})
        return pd.DataFrame(rows, columns=["layer", "base_channels", "channels", "kept"])

    def plot(self):
        """Kept fraction of every conv/linear layer's output channels, in model order (a Figure)."""
        from matplotlib.figure import Figure

        df = self.to_frame()
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        ax = fig.subplots()
        ax.step(range(len(df)), df["kept"], where="mid", color="#4c72b0")
        ax.set(xlabel="layer (model order)", ylabel="kept fraction of output channels", ylim=(0, 1.05),
               title=f"{format_macs(self.macs)} of {format_macs(self.base_macs)} MACs "
                     f"({self.strategy.importance}, pruning_ratio {self.strategy.pruning_ratio:.3f})")
        return fig


def describe_scopes(model: nn.Module, example_inputs) -> pd.DataFrame:
    """The named scopes a strategy can address, with channel counts and MAC shares.

    Args:
        model: the model (not changed).
        example_inputs: an input it takes.

    Returns:
        A DataFrame with ``name`` (key for ``Strategy.multipliers``), ``kind`` (stem, stage,
        head, residual, block, attention, heads), ``channels`` (prunable channels; heads for
        ``attn.heads``), ``groups``, ``mac_share`` (fraction of the model's MACs in layers
        whose width the scope changes; scopes overlap, so shares do not sum to 1) and
        ``description``. ``df.attrs["not_prunable"]`` lists channel groups that are kept and why.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> scopes = at.describe_scopes(at.create_model("cifar_resnet20"), torch.randn(1, 3, 32, 32))
        >>> scopes["name"].tolist()
        ['stage1', 'stage2', 'stage3', 'residual', 'basicblock.inner']
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
    """``plan`` if it was built for this model (and calibration), else a new plan.

    Args:
        model: the model the plan is for.
        example_inputs: an input it takes (checked against ``plan``'s).
        calibration: ``(images, labels)`` batches for gradient-based importance.
        plan: a :class:`PrunePlan` to reuse, or None.

    Returns:
        A :class:`PrunePlan` of ``model``.

    Raises:
        ToolkitError: ``plan`` was built for another model, input shape or calibration.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model, x = at.create_model("cifar_resnet20"), torch.randn(1, 3, 32, 32)
        >>> plan = at.get_plan(model, x)
        >>> at.get_plan(model, x, plan=plan) is plan, plan.base_macs
        (True, 40551040)
    """
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
        plan.forget_gradient_scores()
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
    base_widths = layer_widths(plan.source)
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
        base_widths=base_widths,
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

    Args:
        model: the model to prune (unchanged unless ``inplace=True``).
        strategy: how to prune, at its ``pruning_ratio``.
        example_inputs: an input the model takes.
        calibration: a list of ``(images, labels)`` batches; feeds Taylor importance.
        inplace: prune ``model`` itself instead of a copy.
        plan: reuse this plan's dependency graph and importance scores (e.g. ``BudgetFit.plan``).

    Returns:
        A :class:`PruneResult` with the pruned model and its measured MACs.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> _ = torch.manual_seed(0)  # random init: the kept channels depend on the weights
        >>> model, x = at.create_model("cifar_resnet20"), torch.randn(1, 3, 32, 32)
        >>> res = at.apply_isomorphic_prune(model, at.Strategy(pruning_ratio=0.5, multipliers={"stage3": 0.5}), x)
        >>> res.model(x).shape, res.macs < res.base_macs
        (torch.Size([1, 10]), True)
        >>> res.widths["layer3.0.conv1"], res.base_widths["layer3.0.conv1"]
        (42, 64)
    """
    if not isinstance(strategy, Strategy):
        raise ToolkitError(f"strategy must be an agentic_toolkit.Strategy, got {type(strategy).__name__}")
    start = time.perf_counter()
    p = get_plan(model, example_inputs, calibration, plan)
    result = prune_with_plan(p, strategy, inplace=inplace)
    result.seconds = time.perf_counter() - start
    return result
