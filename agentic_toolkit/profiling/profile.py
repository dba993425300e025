"""Profiling Agent: exact, fast MAC profiles of a model (``profile_macs``).

The default convention (``"macs"``) counts multiply-accumulates of convolutions, linear
layers, matmul/bmm/einsum and attention (Q·Kᵀ and A·V, also inside fused
``scaled_dot_product_attention``), for the whole batch. Element-wise work (norms,
activations, additions, pooling, softmax) is reported separately in
``elementwise_ops`` and never added to the total; operators that are neither are listed
in ``uncounted_ops``. ``convention="torch_pruning"`` reproduces
``torch_pruning.utils.count_ops_and_params`` (the counter the AgenticPruner paper used).

The model runs on the meta device (no real compute, nothing written), with the cost of
each aten operator attributed to the innermost module executing it; see
:mod:`agentic_toolkit.profiling.counter`.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..errors import ToolkitError
from ..inputs import input_mismatch
from ..units import format_macs
from . import counter as _macs_counter
from .tp_convention import counted_modules, tp_rules

if TYPE_CHECKING:  # pandas and matplotlib load only when a table or plot is asked for
    import pandas as pd
    from matplotlib.figure import Figure

CONVENTIONS = ("macs", "torch_pruning")
LAYER_COLUMNS = (
    "name", "type", "op", "macs", "params", "elementwise", "calls", "input_shape",
    "output_shape", "stage",
)
_CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass
class MacProfile:
    """MACs and parameters of one model on one input shape.

    ``layers`` (a pandas DataFrame, built on first access) has one row per module that
    did counted or element-wise work, with the columns in ``LAYER_COLUMNS``: qualified
    ``name`` ("" is the model itself), module ``type``, ``op`` (conv, linear, matmul,
    attention, elementwise; in the torch_pruning convention also norm, activation,
    pool, ...), ``macs``, ``params`` (the module's own parameters; recursive in the
    torch_pruning convention), ``elementwise``, ``calls``, ``input_shape``,
    ``output_shape`` and ``stage``. ``layers.macs`` sums to ``total_macs`` (for the
    torch_pruning convention: to ``total_macs`` times the batch size).

    Attributes:
        model_name: the model's name (its toolkit or timm name, else its class).
        total_macs: MACs of one forward pass on ``input_shape`` in ``convention``.
        params: parameter count.
        convention: ``"macs"`` or ``"torch_pruning"`` (see :func:`profile_macs`).
        input_shape: the shape(s) profiled.
        elementwise_ops: element-wise operations (not MACs).
        uncounted_ops: ops seen but counted in neither (name -> calls).
        backend: ``"meta"``, or ``"real"`` when the forward needed real values.
        rows: the per-module records behind :attr:`layers`.

    Example:
        >>> import agentic_toolkit as at
        >>> prof = at.profile_macs(at.create_model("cifar_resnet20"), input_size=(1, 3, 32, 32))
        >>> prof.total_macs, prof.params
        (40551040, 272282)
        >>> prof.by_type()["type"].tolist()[:2]
        ['Conv2d', 'Linear']
    """

    model_name: str
    total_macs: int
    params: int
    convention: str
    input_shape: tuple
    elementwise_ops: int
    uncounted_ops: Counter
    backend: str = "meta"
    rows: list[dict] = field(default_factory=list, repr=False)

    @functools.cached_property
    def layers(self) -> pd.DataFrame:
        """Per-module table (see the class docstring)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(LAYER_COLUMNS))

    def to_frame(self) -> pd.DataFrame:
        """The per-module table (a copy of :attr:`layers`; see the class docstring)."""
        return self.layers.copy()

    def by_type(self) -> pd.DataFrame:
        """MACs, parameters and element-wise ops per module class, largest first."""
        df = self.layers
        out = df.groupby("type", sort=False).agg(
            modules=("name", "size"), macs=("macs", "sum"), params=("params", "sum"),
            elementwise=("elementwise", "sum"),
        )
        out["share"] = out["macs"] / max(int(df["macs"].sum()), 1)
        return out.sort_values(["macs", "elementwise"], ascending=False).reset_index()

    def by_stage(self, depth: int | None = None) -> pd.DataFrame:
        """MACs, parameters and element-wise ops per stage, in model order.

        Stages are the model's top-level children; a top-level Sequential/ModuleList of
        stage-like children (e.g. ConvNeXt's ``stages``) is split into ``stages.0``, ...
        ``depth=n`` groups by the first ``n`` components of the module name instead
        (``depth=2`` on a ViT gives ``blocks.0``, ``blocks.1``, ...).
        """
        df = self.layers
        if depth is not None:
            if depth < 1:
                raise ToolkitError(f"by_stage(depth=...) needs depth >= 1, got {depth}")
            keys = df["name"].map(lambda n: ".".join(n.split(".")[:depth]) if n else "(root)")
        else:
            keys = df["stage"]
        out = df.assign(stage=keys).groupby("stage", sort=False).agg(
            modules=("name", "size"), macs=("macs", "sum"), params=("params", "sum"),
            elementwise=("elementwise", "sum"),
        )
        out["share"] = out["macs"] / max(int(df["macs"].sum()), 1)
        return out.reset_index()

    def summary(self, max_rows: int = 20) -> str:
        """Compact text table of where the MACs are, sized for an LLM prompt."""
        shape = "x".join(str(s) for s in self.input_shape)
        what = ("conv, linear, matmul, attention; per batch" if self.convention == "macs"
                else "torch_pruning.count_ops_and_params rules; per sample")
        lines = [
            f"{self.model_name}: {format_macs(self.total_macs)} MACs ({self.convention}: {what}), "
            f"{format_macs(self.params)} params, input {shape}",
            f"element-wise ops (not in the total): {format_macs(self.elementwise_ops)}; "
            f"uncounted ops: {_format_counter(self.uncounted_ops)}",
        ]
        if not self.rows:
            return "\n".join(lines + ["(no layers did any counted work)"])
        stages = self.by_stage()
        stages = stages[stages["macs"] > 0]
        lines.append("by stage: " + " | ".join(
            f"{r.stage} {format_macs(r.macs)} ({r.share:.1%})" for r in stages.itertuples()))
        types = self.by_type()
        types = types[types["macs"] > 0].head(8)
        lines.append("by type: " + " | ".join(
            f"{r.type} x{r.modules} {format_macs(r.macs)} ({r.share:.1%})" for r in types.itertuples()))
        df = self.layers
        df = df[df["macs"] > 0].sort_values("macs", ascending=False, kind="stable")
        total = max(int(df["macs"].sum()), 1)
        shown = df.head(max(int(max_rows), 0))
        table = [("name", "type", "op", "MACs", "share", "params", "output")]
        for r in shown.itertuples():
            out_shape = "x".join(str(s) for s in r.output_shape) if r.output_shape else "-"
            table.append((r.name or "(root)", r.type, r.op, format_macs(r.macs),
                          f"{r.macs / total:.1%}", format_macs(r.params), out_shape))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines.append(f"top {len(shown)} of {len(df)} layers by MACs:")
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
        rest = df.iloc[len(shown):]
        if len(rest):
            lines.append(f"  (+{len(rest)} more layers: {format_macs(int(rest['macs'].sum()))} MACs)")
        return "\n".join(lines)

    def plot(self) -> Figure:
        """Bar charts of MACs per stage and per module type (a matplotlib Figure)."""
        import seaborn as sns
        from matplotlib.figure import Figure

        fig = Figure(figsize=(12, 4.8), layout="constrained")
        ax_stage, ax_type = fig.subplots(1, 2)
        stages = self.by_stage()
        stages = stages.assign(gmacs=stages["macs"] / 1e9)
        sns.barplot(data=stages, x="gmacs", y="stage", ax=ax_stage, color="#4c72b0", orient="h")
        ax_stage.set(xlabel="MACs (G)", ylabel="stage", title="MACs per stage")
        types = self.by_type()
        types = types[types["macs"] > 0].head(10)
        types = types.assign(gmacs=types["macs"] / 1e9)
        sns.barplot(data=types, x="gmacs", y="type", ax=ax_type, color="#dd8452", orient="h")
        ax_type.set(xlabel="MACs (G)", ylabel="module type", title="MACs per module type")
        shape = "x".join(str(s) for s in self.input_shape)
        fig.suptitle(
            f"{self.model_name}: {format_macs(self.total_macs)} MACs ({self.convention}), "
            f"{format_macs(self.params)} params, input {shape}"
        )
        return fig

    def to_dict(self, layers: bool = False) -> dict[str, Any]:
        """JSON-ready summary; ``layers=True`` adds the per-module rows."""
        out: dict[str, Any] = {
            "model": self.model_name,
            "total_macs": int(self.total_macs),
            "params": int(self.params),
            "convention": self.convention,
            "input_shape": list(self.input_shape),
            "elementwise_ops": int(self.elementwise_ops),
            "uncounted_ops": dict(self.uncounted_ops),
            "backend": self.backend,
        }
        if layers:
            out["layers"] = [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}
                for row in self.rows
            ]
        return out

    def __str__(self) -> str:
        return self.summary()


def profile_macs(
    model: nn.Module,
    example_inputs: Any = None,
    input_size: tuple[int, ...] = (1, 3, 224, 224),
    convention: str = "macs",
) -> MacProfile:
    """Count the MACs and parameters of ``model`` on one input, without changing the model.

    Runs on the meta device; a model whose forward needs real values (``.item()``) is
    run once for real instead, with a warning.

    Args:
        model: any module.
        example_inputs: a tensor, a tuple of positional tensors or a dict of keyword
            tensors (only shapes and dtypes matter); overrides ``input_size``.
        input_size: the input shape, batch first.
        convention: ``"macs"`` (conv, linear, matmul/bmm/einsum and attention MACs of the
            whole batch) or ``"torch_pruning"`` (``torch_pruning.utils.count_ops_and_params``,
            per sample).

    Returns:
        A :class:`MacProfile` (``total_macs``, ``params``, per-layer ``layers``).

    Raises:
        ToolkitError: the model cannot take the input, or an unknown convention.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model = at.create_model("cifar_resnet20")
        >>> at.profile_macs(model, torch.randn(1, 3, 32, 32)).total_macs
        40551040
        >>> at.profile_macs(model, input_size=(1, 3, 32, 32), convention="torch_pruning").total_macs
        40927882
    """
    if convention not in CONVENTIONS:
        raise ToolkitError(f"unknown MAC convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    if not isinstance(model, nn.Module):
        raise ToolkitError(f"profile_macs needs a torch.nn.Module, got {type(model).__name__}")
    name = model_name(model)
    if example_inputs is None:
        shape = _check_input_size(input_size)
        inputs: Any = None
    else:
        inputs = example_inputs
        shape = _macs_counter._shape_of(inputs) or ()
    use_tp = convention == "torch_pruning"
    try:
        result = _macs_counter.run_pass(model, _meta_input(model, shape) if inputs is None else inputs,
                                        "meta", use_tp)
    except Exception as meta_error:
        try:
            result = _macs_counter.run_pass(model, _real_input(model, shape) if inputs is None else inputs,
                                            "real", use_tp)
        except Exception as error:
            why = input_mismatch(model, inputs) if inputs is not None else ""
            raise ToolkitError(
                (f"{why}. " if why else "")
                + f"model '{name}' cannot run on an input of shape {tuple(shape)}: {_first_line(error)}. "
                "Pass input_size=(batch, channels, height, width) or example_inputs that the "
                "model accepts."
            ) from error
        warnings.warn(
            f"profile_macs: '{name}' cannot run on the meta device ({_first_line(meta_error)}); "
            "profiled with one real forward pass instead", RuntimeWarning, stacklevel=2,
        )
    return _build_profile(model, name, result, convention)


def model_name(model: nn.Module) -> str:
    """The toolkit name of a model (``create_model``'s name) or its class name."""
    spec = getattr(model, "toolkit_spec", None)
    if isinstance(spec, dict) and spec.get("name"):
        return str(spec["name"])
    return type(model).__name__


def _check_input_size(input_size: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_size)
        ok = len(shape) > 0 and all(s > 0 for s in shape) and all(
            float(s) == int(s) for s in input_size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ToolkitError(
            f"input_size must be a tuple of positive integers such as (1, 3, 224, 224), got {input_size!r}"
        )
    return shape


def _input_dtype(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


def _meta_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(shape, dtype=_input_dtype(model)[0], device="meta")


def _real_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    dtype, device = _input_dtype(model)
    return torch.zeros(shape, dtype=dtype, device=device)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = (text[0] if text else type(error).__name__).rstrip(".")
    return line if len(line) <= 400 else line[:400] + "..."


def _format_counter(counter: Counter) -> str:
    if not counter:
        return "none"
    return ", ".join(f"{k} x{v}" for k, v in counter.most_common(8)) + (
        f" (+{len(counter) - 8} more)" if len(counter) > 8 else "")


def _stage_of(model: nn.Module) -> Any:
    """Name -> stage: top-level child, split when it is a list of stage-like blocks."""

    def holds_container(m: nn.Module) -> bool:
        return isinstance(m, _CONTAINERS) or any(isinstance(c, _CONTAINERS) for c in m.children())

    split = {
        n for n, c in model.named_children()
        if isinstance(c, _CONTAINERS) and len(c) > 1 and all(holds_container(g) for g in c.children())
    }

    def stage(name: str) -> str:
        if not name:
            return "(root)"
        parts = name.split(".")
        return ".".join(parts[:2]) if parts[0] in split and len(parts) > 1 else parts[0]

    return stage


def _build_profile(model: nn.Module, name: str, result: _macs_counter.PassResult,
                   convention: str) -> MacProfile:
    stage = _stage_of(model)
    params = sum(p.numel() for p in model.parameters())
    elementwise = sum(r.elementwise for r in result.records)
    uncounted = Counter(result.uncounted)
    rows: list[dict] = []
    if convention == "macs":
        for r in result.records:
            macs = sum(r.macs.values())
            if macs == 0 and r.elementwise == 0:
                continue
            op = "+".join(sorted(r.macs, key=r.macs.get, reverse=True)) if macs else "elementwise"
            own = sum(p.numel() for p in r.module._parameters.values() if p is not None)
            rows.append(_row(r, type(r.module).__name__, op, macs, own, stage))
        total = sum(row["macs"] for row in rows)
    else:
        rules = tp_rules()
        by_module = {id(r.module): r for r in result.records}
        counted = counted_modules(model, rules)
        counted_names = set()
        for m in counted:
            r = by_module.get(id(m))
            if r is None:
                continue
            counted_names.add(r.name)
            rows.append(_row(r, type(m).__name__, rules[type(m)][0], r.tp_macs,
                             sum(p.numel() for p in m.parameters()), stage))
        for r in result.records:  # work torch_pruning does not see
            if type(r.module) in rules or _inside(r.name, counted_names):
                continue
            if r.macs or r.elementwise:
                uncounted[f"module:{type(r.module).__name__}"] += 1
        total = round(sum(row["macs"] for row in rows) / result.batch)
    return MacProfile(
        model_name=name,
        total_macs=int(total),
        params=int(params),
        convention=convention,
        input_shape=tuple(result.input_shape),
        elementwise_ops=int(elementwise),
        uncounted_ops=uncounted,
        backend=result.backend,
        rows=rows,
    )


def _row(r: _macs_counter.ModuleRecord, type_name: str, op: str, macs: int, params: int,
         stage: Any) -> dict:
    return {
        "name": r.name, "type": type_name, "op": op, "macs": int(macs), "params": int(params),
        "elementwise": int(r.elementwise), "calls": r.calls, "input_shape": r.input_shape,
        "output_shape": r.output_shape, "stage": stage(r.name),
    }


def _inside(name: str, parents: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in parents for i in range(1, len(parts)))
