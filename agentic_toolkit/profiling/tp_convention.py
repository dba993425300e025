"""The ``torch_pruning`` convention: the rules of ``torch_pruning.utils.count_ops_and_params``.

torch-pruning 1.6.1 (the counter the AgenticPruner paper reports) counts per *module
type*, by exact ``type(module)``: convolutions and linear layers with their bias,
batch/layer/group norms (x2 when affine), ReLU-like activations and GELU, pooling,
``nn.Upsample``, RNNs and multi-head attention. A module of a counted type is a leaf of
the count: its children are not added (so timm ``Attention`` replaces its ``qkv`` and
``proj`` Linear layers by its own formula). Subclasses (timm ``LayerNorm2d``, timm
``GELU``) count zero. The total is divided by the batch size.

We re-implement the rules instead of calling ``count_ops_and_params`` because (1) it
registers the timm attention rule only if ``import timm`` succeeded when torch_pruning
itself was first imported, so its number depends on import order; we resolve the timm
classes at call time; (2) it deep-copies the model and runs real compute. Two quirks
are reproduced on purpose: the timm attention rule takes the projection as
``attn_dim x (attn_dim + 1)`` per token, which is wrong once head dims are pruned
(``proj`` is ``attn_dim -> dim``), and a Linear bias costs ``out_features`` once, not
per token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

Rule = Callable[[nn.Module, tuple, Any], int]


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _conv(m: nn.Module, inputs: tuple, output: Any) -> int:
    x = inputs[0]
    positions = x.shape[0] * math.prod(output.shape[2:])
    per_position = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    bias = m.out_channels * positions if m.bias is not None else 0
    return per_position * positions + bias


def _act(m: nn.Module, inputs: tuple, output: Any) -> int:
    return _numel(output)


def _pool(m: nn.Module, inputs: tuple, output: Any) -> int:
    return _numel(inputs[0])


def _bn(m: nn.Module, inputs: tuple, output: Any) -> int:
    return _numel(inputs[0]) * (2 if m.affine else 1)


def _ln(m: nn.Module, inputs: tuple, output: Any) -> int:
    return _numel(inputs[0]) * (2 if m.elementwise_affine else 1)


def _linear(m: nn.Module, inputs: tuple, output: Any) -> int:
    out_features = output.shape[-1]
    return _numel(inputs[0]) * out_features + (out_features if m.bias is not None else 0)


def _upsample(m: nn.Module, inputs: tuple, output: Any) -> int:
    return output[0].numel()  # torch-pruning reads output[0]: one sample's elements


def _rnn_cell_cost(m: nn.Module, w_ih: torch.Tensor, w_hh: torch.Tensor) -> int:
    h = m.hidden_size
    flops = w_ih.shape[0] * w_ih.shape[1] + w_hh.shape[0] * w_hh.shape[1]
    if isinstance(m, (nn.RNN, nn.RNNCell)):
        flops += h
    elif isinstance(m, (nn.GRU, nn.GRUCell)):
        flops += h + 3 * h + 3 * h
    elif isinstance(m, (nn.LSTM, nn.LSTMCell)):
        flops += 4 * h + 3 * h + 3 * h
    return flops


def _rnn(m: nn.Module, inputs: tuple, output: Any) -> int:
    first = inputs[0][0]  # torch-pruning takes the sizes of input[0][0] as (batch, sequence)
    batch, seq = first.shape[0], first.shape[1]
    flops = 0
    for i in range(m.num_layers):
        flops += _rnn_cell_cost(m, getattr(m, f"weight_ih_l{i}"), getattr(m, f"weight_hh_l{i}"))
        if m.bias:
            flops += getattr(m, f"bias_ih_l{i}").shape[0] + getattr(m, f"bias_hh_l{i}").shape[0]
    return flops * batch * seq * (2 if m.bidirectional else 1)


def _rnn_cell(m: nn.Module, inputs: tuple, output: Any) -> int:
    flops = _rnn_cell_cost(m, m.weight_ih, m.weight_hh)
    if m.bias:
        flops += m.bias_ih.shape[0] + m.bias_hh.shape[0]
    return flops * inputs[0].shape[0]


def attention_cost(qlen: int, klen: int, vlen: int, in_dims: tuple[int, int, int],
                    qdim: int, kdim: int, vdim: int, heads: int, has_bias: bool) -> int:
    """torch-pruning's multi-head attention formula, per sample."""
    flops = qlen * qdim  # Q scaling
    flops += qlen * in_dims[0] * qdim + klen * in_dims[1] * kdim + vlen * in_dims[2] * vdim
    if has_bias:
        flops += (qlen + klen + vlen) * qdim
    head = qlen * klen * (qdim // heads) + qlen * klen + qlen * klen * (vdim // heads)
    flops += heads * head
    flops += qlen * vdim * (vdim + 1)  # output projection as written in torch-pruning
    return flops


def _mha(m: nn.Module, inputs: tuple, output: Any) -> int:
    q, k, v = inputs[:3]
    batch_first = getattr(m, "batch_first", False)
    batch, len_idx = (q.shape[0], 1) if batch_first else (q.shape[1], 0)
    qdim, kdim, vdim = q.shape[2], k.shape[2], v.shape[2]
    flops = attention_cost(
        q.shape[len_idx], k.shape[len_idx], v.shape[len_idx], (qdim, kdim, vdim),
        qdim, kdim, vdim, m.num_heads, m.in_proj_bias is not None,
    )
    return flops * batch


def _timm_attention(m: nn.Module, inputs: tuple, output: Any) -> int:
    x = inputs[0]
    batch, tokens, in_dim = x.shape[0], x.shape[1], x.shape[2]
    dim = m.qkv.out_features // 3
    flops = attention_cost(
        tokens, tokens, tokens, (in_dim, in_dim, in_dim), dim, dim, dim, m.num_heads,
        m.qkv.bias is not None,
    )
    return flops * batch


_BASE_RULES: dict[type, tuple[str, Rule]] = {
    **{t: ("conv", _conv) for t in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                                     nn.ConvTranspose2d, nn.ConvTranspose3d)},
    **{t: ("activation", _act) for t in (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6,
                                          nn.GELU)},
    **{t: ("pool", _pool) for t in (nn.MaxPool1d, nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool2d,
                                     nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveMaxPool1d,
                                     nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d,
                                     nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool3d,
                                     nn.AdaptiveAvgPool3d)},
    **{t: ("norm", _bn) for t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                                   nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
                                   nn.GroupNorm)},
    nn.LayerNorm: ("norm", _ln),
    nn.Linear: ("linear", _linear),
    nn.Upsample: ("upsample", _upsample),
    **{t: ("rnn", _rnn) for t in (nn.RNN, nn.GRU, nn.LSTM)},
    **{t: ("rnn", _rnn_cell) for t in (nn.RNNCell, nn.LSTMCell, nn.GRUCell)},
    nn.MultiheadAttention: ("attention", _mha),
}


def tp_rules() -> dict[type, tuple[str, Rule]]:
    """Rules by exact module type, with timm's attention classes whenever timm imports."""
    rules = dict(_BASE_RULES)
    try:  # resolved now, not at import time: the count must not depend on import order
        from timm.models import swin_transformer, vision_transformer
    except Exception:  # timm missing or broken: torch-pruning would skip it too
        return rules
    rules[vision_transformer.Attention] = ("attention", _timm_attention)
    rules[swin_transformer.WindowAttention] = ("attention", _timm_attention)
    return rules


def counted_modules(model: nn.Module, rules: dict[type, Any]) -> list[nn.Module]:
    """Modules whose count enters the total: counted types with no counted ancestor.

    Mirrors torch-pruning's recursion over ``children()``, so a module reachable twice
    is added twice, as there.
    """
    out: list[nn.Module] = []
    pending = [model]
    while pending:
        m = pending.pop()
        if type(m) in rules:
            out.append(m)
        else:
            pending.extend(reversed(list(m.children())))
    return out
