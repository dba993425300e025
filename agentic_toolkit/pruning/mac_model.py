"""Exact MACs of a pruned model from its layer widths, without building it.

:class:`MacModel` predicts the default (``"macs"``) convention, :class:`TpMacModel` the
``"torch_pruning"`` one (``torch_pruning.utils.count_ops_and_params``, see its docstring).
For :class:`MacModel` the base model is profiled once (:func:`agentic_toolkit.profile_macs`,
default convention). Every counted row scales with the widths pruning changes:

- convolution: ``MACs = out elements x (C_in / groups) x kernel`` -> scales with
  ``C_out'/C_out x C_in'/C_in`` (depthwise: with ``C'/C`` once, as ``groups`` follows ``C``);
- linear: with ``out'/out x in'/in``;
- attention (Q·Kᵀ and A·V, counted on the attention module itself): with the attention
  width, i.e. the pruned qkv width ``qkv_out'/qkv_out``;
- anything else: unchanged.

All arithmetic is on Python integers, so a prediction equals the profile of the pruned
model exactly (tests check this on every supported architecture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

from ..profiling.tp_convention import attention_cost

Key = tuple[str, bool]  # (layer or parameter name, output dimension?)


@dataclass
class _Row:
    name: str
    macs: int
    keys: tuple[Key, ...]


class MacModel:
    """Predict total MACs from per-dimension widths (see module docstring)."""

    def __init__(self, model: nn.Module, layers, total_macs: int, sizes: dict[Key, int], prunable: set[Key]):
        self.total_macs = int(total_macs)
        self.sizes = dict(sizes)
        modules = dict(model.named_modules())
        rows: list[_Row] = []
        constant = 0
        for name, macs in zip(layers["name"], layers["macs"], strict=True):
            macs = int(macs)
            if macs == 0:
                continue
            keys = tuple(k for k in _keys(name, modules.get(name)) if k in prunable)
            if keys:
                rows.append(_Row(name, macs, keys))
            else:
                constant += macs
        self.rows = rows
        self.constant = constant
        self.inexact = False

    def predict(self, widths: dict[Key, int]) -> int:
        """Total MACs when the dimensions in ``widths`` have the given sizes."""
        total = self.constant
        for r in self.rows:
            q, exact = scale_macs(r.macs, r.keys, widths, self.sizes)
            if not exact:
                self.inexact = True
            total += q
        return int(total)


def scale_macs(macs: int, keys: tuple, widths: dict, sizes: dict) -> tuple[int, bool]:
    """``macs`` scaled by ``widths[k] / sizes[k]`` for each of ``keys`` given a width, rounded
    to the nearest integer; the flag is False when the division was not exact."""
    num, den = macs, 1
    for k in keys:
        w = widths.get(k)
        if w is not None:
            num *= w
            den *= sizes[k]
    q, rem = divmod(num, den)
    if rem:
        return (2 * num + den) // (2 * den), False
    return q, True


def _keys(name: str, module: nn.Module | None) -> tuple[Key, ...]:
    if module is None:
        return ()
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
            return ((name, True),)
        return ((name, True), (name, False))
    if isinstance(module, nn.Linear):
        return ((name, True), (name, False))
    qkv = getattr(module, "qkv", None)
    if isinstance(qkv, nn.Linear):
        return ((f"{name}.qkv" if name else "qkv", True),)
    return ()


# ---------------------------------------------------------------------------------------------
# The torch_pruning convention (``torch_pruning.utils.count_ops_and_params``)


@dataclass
class _Attention:
    """A timm attention module: its cost is recomputed by torch-pruning's own formula."""

    name: str
    qkv: str
    tokens: int
    in_dim: int
    dim: int
    heads: int
    has_bias: bool
    mult: int  # batch x calls


class TpMacModel:
    """Predict the ``torch_pruning`` count (per sample) from widths and head counts.

    Built from one counted pass over the base model in that convention. Every counted
    module becomes one or two monomials in the widths, as in :class:`MacModel`:

    - convolution / linear: the product term as in :class:`MacModel`, plus the bias
      (``C_out x positions`` for a convolution, ``out_features`` once per call for a linear
      layer) that scales with the output width only;
    - batch/group/layer norm (x2 when affine), activation, pooling, upsampling: the
      elements of their tensor, which scale with its channel width. A norm has its own
      width; a parameter-free module takes the width of the tensor it reads: that of the
      nearest module run before it whose output has the shape of its input
      (see :meth:`_source_keys`);
    - timm ``Attention`` / ``WindowAttention``: torch-pruning's formula recomputed from the
      pruned qkv width, input width and head count;
    - RNNs and ``nn.MultiheadAttention``: constant.

    ``approximate`` lists the modules for which this is a guess (a parameter-free module
    with no such source, an RNN or multi-head attention whose widths are pruned, a module
    whose count does not decompose as expected); ``fit_to_budget`` counts the pruned model
    anyway and corrects the ratio when a prediction misses.
    """

    def __init__(self, model: nn.Module, example_inputs, sizes: dict[Key, int], prunable: set[Key]):
        from ..profiling import counter as _counter
        from ..profiling.tp_convention import counted_modules, tp_rules

        self.sizes = dict(sizes)
        self.prunable = set(prunable)
        rules = tp_rules()
        try:
            result = _counter.run_pass(model, example_inputs, "meta", True)
        except Exception:  # the model needs real values (as profile_macs does)
            result = _counter.run_pass(model, example_inputs, "real", True)
        self.batch = result.batch
        counted = {id(m) for m in counted_modules(model, rules)}
        sources = self._source_keys(result.records)
        self.terms: list[tuple[int, tuple[Key, ...]]] = []
        self.attention: list[_Attention] = []
        self.approximate: list[str] = []
        self.constant = 0
        for r in result.records:
            if id(r.module) in counted and r.tp_macs:
                self._add(r, rules[type(r.module)][0], sources.get(r.name))
        self.base = self.predict(self.sizes, {})
        self.inexact = False

    def _keys(self, *keys: Key) -> tuple[Key, ...]:
        return tuple(k for k in keys if k in self.prunable and k in self.sizes)

    def _add(self, r, op: str, source: tuple[Key, ...] | None) -> None:
        m, name, total = r.module, r.name, int(r.tp_macs)
        if op in ("conv", "linear"):
            main, bias = _split_bias(r, op)
            if main is None:
                self.approximate.append(f"{name}: its count does not split into product and bias")
                main, bias = total, 0
            self.terms += [(main, self._keys(*_keys(name, m))), (bias, self._keys((name, True)))]
            return
        if op == "norm":
            self.terms.append((total, self._keys((name, True))))
            return
        if op in ("activation", "pool", "upsample"):
            if source is None:  # (also a counted module that is not a leaf)
                self.approximate.append(f"{name}: the width of its input is not known")
                source = ()
            self.terms.append((total, source))
            return
        qkv = getattr(m, "qkv", None)
        if op == "attention" and isinstance(qkv, nn.Linear) and r.input_shape and len(r.input_shape) == 3:
            a = _Attention(name, f"{name}.qkv" if name else "qkv", r.input_shape[1], r.input_shape[2],
                           qkv.out_features // 3, int(m.num_heads), qkv.bias is not None, 0)
            per_call = _attention(a, a.in_dim, a.dim, a.heads)
            a.mult, rem = divmod(total, per_call)
            if not rem:
                self.attention.append(a)
                return
        if any(k[0].startswith(f"{name}.") or k[0] == name for k in self.prunable):
            self.approximate.append(f"{name}: {type(m).__name__} is counted as if unpruned")
        self.constant += total

    def _source_keys(self, records) -> dict[str, tuple[Key, ...] | None]:
        """Width key of the tensor each parameter-free leaf module reads (None: unknown).

        Leaves are visited in the order they first ran; a leaf with a prunable output width
        passes that key on, a leaf with parameters a fixed width (no key), a parameter-free
        leaf the key of the nearest earlier leaf whose output shape equals its input shape.
        """
        out: dict[str, tuple[Key, ...] | None] = {}
        seen: list[tuple[tuple | None, tuple[Key, ...] | None]] = []
        for r in records:
            if next(iter(r.module.children()), None) is not None:
                continue  # containers: their leaves say it
            own = self._keys((r.name, True))
            if own or any(p is not None for p in r.module._parameters.values()):
                keys: tuple[Key, ...] | None = own
            else:
                keys = next((k for shape, k in reversed(seen) if shape == r.input_shape), None)
            out[r.name] = keys
            seen.append((r.output_shape, keys))
        return out

    def predict(self, widths: dict[Key, int], heads: dict[str, int]) -> int:
        """The per-sample count when the dimensions in ``widths`` (and the attention modules
        in ``heads``) have the given sizes."""
        total = self.constant
        for macs, keys in self.terms:
            total += self._scale(macs, keys, widths)
        for a in self.attention:
            in_dim = widths.get((a.qkv, False), a.in_dim)
            dim = widths.get((a.qkv, True), 3 * a.dim) // 3
            total += a.mult * _attention(a, in_dim, dim, heads.get(a.name, a.heads))
        return int(round(total / self.batch))

    def _scale(self, macs: int, keys: tuple[Key, ...], widths: dict[Key, int]) -> int:
        q, exact = scale_macs(macs, keys, widths, self.sizes)
        if not exact:
            self.inexact = True
        return q


def _attention(a: _Attention, in_dim: int, dim: int, heads: int) -> int:
    t = a.tokens
    return attention_cost(t, t, t, (in_dim,) * 3, dim, dim, dim, heads, a.has_bias)


def _split_bias(r, op: str) -> tuple[int | None, int]:
    """``(product term, bias term)`` of a convolution's or linear layer's count over all its
    calls, assuming every call saw the first call's shapes (``(None, 0)`` if that is wrong)."""
    m, total = r.module, int(r.tp_macs)
    if not r.output_shape or not r.input_shape:
        return None, 0
    if op == "conv":
        positions = r.input_shape[0] * math.prod(r.output_shape[2:])
        main = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups) * positions
        bias = m.out_channels * positions if m.bias is not None else 0
    else:
        main = math.prod(r.input_shape) * r.output_shape[-1]
        bias = m.out_features if m.bias is not None else 0
    if r.calls * (main + bias) != total:
        return None, 0
    return r.calls * main, r.calls * bias
