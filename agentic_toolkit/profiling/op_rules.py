"""aten-level rules of the MAC counter: what each operator costs, and fast meta shapes.

Every aten operator that reaches the counter gets a :class:`OpRule`: its *kind* (how
its cost is computed, or why it has none) and, for the hot operators, a *fast* shape
function. The fast functions build the output tensors of a meta-device run directly,
because several of torch's meta kernels (batch norm, layer norm, addmm, GELU, ...)
are Python decompositions, slow per call (timings: ``docs/counting.md``). A fast function returns ``None``
whenever its input is outside the simple case it mirrors, and the real meta kernel
runs instead; ``tests/test_profiling.py`` checks them against the meta kernels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# kinds of operator
CONV = "conv"  # convolution: MACs = output elements x (C_in / groups) x kernel
MM = "mm"  # (M, K) @ (K, N): M*K*N
BMM = "bmm"  # (B, M, K) @ (B, K, N): B*M*K*N
MV = "mv"  # (M, K) @ (K,): M*K
DOT = "dot"  # (K,) . (K,): K
LINEAR = "linear"  # aten.linear, only seen when not decomposed: input elements x out features
SDPA = "sdpa"  # fused attention, q/k/v laid out (B, H, L, E)
SDPA_BLHE = "sdpa_blhe"  # fused attention kernels with (B, L, H, E) layout
ELEM_IN = "elementwise_in"  # norms, softmax, pooling, reductions: one op per input element
ELEM_OUT = "elementwise_out"  # point-wise ops, up-sampling: one op per output element
FREE = "free"  # views, copies, tensor creation, indexing: no arithmetic
UNKNOWN = "unknown"  # anything else: reported in ``uncounted_ops``

MAC_KINDS = frozenset({CONV, MM, BMM, MV, DOT, LINEAR, SDPA, SDPA_BLHE})
ELEMENTWISE_KINDS = frozenset({ELEM_IN, ELEM_OUT})

_CONV_OPS = {
    "convolution", "_convolution", "convolution_overrideable", "cudnn_convolution",
    "cudnn_convolution_transpose", "mkldnn_convolution", "miopen_convolution",
    "miopen_convolution_transpose", "miopen_depthwise_convolution", "_slow_conv2d_forward",
    "slow_conv3d_forward", "slow_conv_transpose2d", "slow_conv_transpose3d",
    "_conv_depthwise2d", "conv_depthwise3d", "slow_conv_dilated2d", "slow_conv_dilated3d",
}
_MM_OPS = {"mm", "addmm", "_int_mm", "_scaled_mm", "_addmm_activation"}
_BMM_OPS = {"bmm", "baddbmm", "addbmm"}
_MV_OPS = {"mv", "addmv"}
_DOT_OPS = {"dot", "vdot"}
_SDPA_OPS = {
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math",
    "_scaled_dot_product_attention_math_for_mps",
}
_SDPA_BLHE_OPS = {"_flash_attention_forward", "_efficient_attention_forward"}
_ELEM_IN_OPS = {
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "cudnn_batch_norm", "miopen_batch_norm",
    "native_layer_norm", "native_group_norm", "_fused_rms_norm", "rms_norm",
    "_softmax", "_safe_softmax", "_log_softmax", "logsumexp", "cumsum", "cumprod",
    "native_dropout",
}
_FREE_OPS = {
    "clone", "_to_copy", "copy", "copy_", "cat", "stack", "contiguous", "_unsafe_view",
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like",
    "full", "full_like", "fill", "fill_", "zero_", "new_empty", "new_empty_strided",
    "new_zeros", "new_ones", "new_full", "arange", "linspace", "logspace", "eye",
    "scalar_tensor", "lift_fresh", "lift_fresh_copy", "detach", "detach_", "alias",
    "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm",
    "index", "index_select", "gather", "embedding", "take", "index_put", "index_put_",
    "index_copy", "index_copy_", "masked_scatter", "masked_scatter_", "slice_scatter",
    "select_scatter", "diagonal_scatter", "as_strided_scatter", "scatter", "scatter_",
    "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "roll", "flip",
    "repeat", "repeat_interleave", "tile", "im2col", "col2im", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "_fused_sdp_choice",
    "resize_", "set_", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel",
    "sym_storage_offset", "_assert_async", "_assert_tensor_metadata", "_make_dep_token",
    "bernoulli", "bernoulli_", "uniform_", "normal_", "exponential_", "random_",
    "_reshape_alias", "resolve_conj", "resolve_neg", "_foreach_copy_",
}
# point-wise ops whose output has the dtype of their (same-dtype, floating) inputs
_FLOAT_POINTWISE = {
    "add", "sub", "rsub", "mul", "div", "neg", "abs", "exp", "log", "sqrt", "rsqrt",
    "reciprocal", "pow", "sin", "cos", "tanh", "sigmoid", "erf", "gelu", "relu", "silu",
    "mish", "elu", "leaky_relu", "hardswish", "hardsigmoid", "hardtanh", "softplus",
    "clamp", "clamp_min", "clamp_max", "addcmul", "addcdiv", "clone", "lerp", "relu6",
}
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_META = torch.device("meta")


@dataclass(frozen=True)
class OpRule:
    """How the counter treats one aten operator."""

    name: str  # "aten.convolution"
    kind: str
    fast: Callable[[tuple, dict], Any] | None = None


def op_macs(kind: str, name: str, args: tuple, out: Any) -> int:
    """Multiply-accumulates of one call of an operator of a MAC kind."""
    if kind == CONV:
        x, w = args[0], args[1]
        per_weight = w.numel() // w.shape[0]  # (C_in/groups) x kernel, or (C_out/groups) x kernel
        transposed = "transpose" in name or (
            name in ("aten.convolution", "aten._convolution", "aten.convolution_overrideable")
            and bool(args[6])
        )
        y = out[0] if isinstance(out, (tuple, list)) else out
        return (x.numel() if transposed else y.numel()) * per_weight
    if kind == MM:
        a, b = (args[1], args[2]) if name in ("aten.addmm", "aten._addmm_activation") else args[:2]
        return a.shape[0] * a.shape[1] * b.shape[1]
    if kind == BMM:
        a, b = (args[1], args[2]) if name != "aten.bmm" else args[:2]
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if kind == MV:
        return args[1 if name == "aten.addmv" else 0].numel()
    if kind == DOT:
        return args[0].numel()
    if kind == LINEAR:
        return args[0].numel() * args[1].shape[0]
    if kind in (SDPA, SDPA_BLHE):
        q, k, v = args[:3]
        seq_axis = -2 if kind == SDPA else 1
        rows = q.numel() // q.shape[-1]  # batch x heads x queries
        return rows * k.shape[seq_axis] * (q.shape[-1] + v.shape[-1])  # Q.K^T and A.V
    raise ValueError(f"{kind} is not a MAC kind")


def elementwise_count(kind: str, args: tuple, out: Any) -> int:
    """Element-wise operations of one call: elements read (ELEM_IN) or written (ELEM_OUT)."""
    t = None
    if kind == ELEM_IN:
        t = _first_tensor(args)
    else:
        t = out if isinstance(out, torch.Tensor) else _first_tensor(out if isinstance(out, (tuple, list)) else args)
    return t.numel() if t is not None else 0


def _first_tensor(seq: Any) -> torch.Tensor | None:
    for a in seq:
        if isinstance(a, torch.Tensor):
            return a
    return None


@functools.cache
def rule_for(func: torch._ops.OpOverload) -> OpRule:
    """The (cached) rule for an aten operator overload."""
    namespace, base = func._schema.name.split("::", 1)
    name = f"{namespace}.{base}"
    if namespace not in ("aten", "prims"):
        return OpRule(name, UNKNOWN)
    tags = set(func.tags)
    fast = _FAST.get(base)
    if base in _CONV_OPS:
        kind = CONV
    elif base in _MM_OPS:
        kind = MM
    elif base in _BMM_OPS:
        kind = BMM
    elif base in _MV_OPS:
        kind = MV
    elif base in _DOT_OPS:
        kind = DOT
    elif base == "linear":
        kind = LINEAR
    elif base in _SDPA_OPS:
        kind = SDPA
    elif base in _SDPA_BLHE_OPS:
        kind = SDPA_BLHE
    elif base in _FREE_OPS or func.is_view or torch.Tag.inplace_view in tags:
        kind = FREE
    elif base in _ELEM_IN_OPS or torch.Tag.reduction in tags or "pool" in base:
        kind = ELEM_IN
    elif (
        torch.Tag.pointwise in tags
        or base.rstrip("_") in _FLOAT_POINTWISE  # hardswish & co. lack the pointwise tag
        or base.startswith(("upsample", "_upsample"))
    ):
        kind = ELEM_OUT
        inplace = torch.Tag.inplace in tags or (base.endswith("_") and base[:-1] in _FLOAT_POINTWISE)
        if fast is None and inplace:
            fast = _fast_inplace
        elif fast is None and base in _FLOAT_POINTWISE:
            fast = _fast_pointwise
    else:
        kind = UNKNOWN
    return OpRule(name, kind, fast)


# ---------------------------------------------------------------- fast meta shapes
def _dense(t: torch.Tensor) -> bool:
    """Dense, non-overlapping in one of the two layouts ``empty_like`` reproduces exactly."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _like(x: torch.Tensor) -> torch.Tensor:
    """``empty_like`` of a dense tensor (``torch.empty_like`` on meta is much slower)."""
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=_META)


def _empty(shape: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=_META)


def _fast_batch_norm(args: tuple, kwargs: dict) -> Any:
    x = args[0]
    if kwargs or x.dtype not in (torch.float32, torch.float64) or x.dim() < 2 or not _dense(x):
        return None
    c = x.shape[1]
    return _like(x), _empty((c,), x.dtype), _empty((c,), x.dtype)


def _fast_layer_norm(args: tuple, kwargs: dict) -> Any:
    x, normalized = args[0], tuple(args[1])
    axis = x.dim() - len(normalized)
    if kwargs or x.dtype not in (torch.float32, torch.float64) or axis < 0:
        return None
    if tuple(x.shape[axis:]) != normalized:
        return None  # let the real kernel raise its message
    stats = tuple(x.shape[:axis]) + (1,) * len(normalized)
    return _empty(x.shape, x.dtype), _empty(stats, x.dtype), _empty(stats, x.dtype)


def _fast_mm(args: tuple, kwargs: dict) -> Any:
    a, b = (args[1], args[2]) if len(args) >= 3 else args[:2]
    if kwargs or a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
        return None
    return _empty((a.shape[0], b.shape[1]), a.dtype)


def _fast_bmm(args: tuple, kwargs: dict) -> Any:
    a, b = (args[1], args[2]) if len(args) >= 3 else args[:2]
    if (
        kwargs
        or a.dim() != 3
        or b.dim() != 3
        or a.shape[0] != b.shape[0]
        or a.shape[2] != b.shape[1]
        or a.dtype != b.dtype
    ):
        return None
    return _empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)


def _fast_softmax(args: tuple, kwargs: dict) -> Any:
    x = args[0]
    if kwargs or x.dtype not in (torch.float32, torch.float64) or not x.is_contiguous():
        return None
    if len(args) > 2 and args[2]:  # half_to_float
        return None
    return _empty(x.shape, x.dtype)


def _fast_unsafe_view(args: tuple, kwargs: dict) -> Any:
    x = args[0]
    if kwargs or not x.is_contiguous():
        return None
    return x.view(args[1])


def _fast_inplace(args: tuple, kwargs: dict) -> Any:
    """In-place point-wise op: the result is ``self`` (its shape cannot change)."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or kwargs.get("out") is not None:
        return None
    for a in args[1:]:
        if isinstance(a, torch.Tensor) and (a.numel() > x.numel() or a.dim() > x.dim()):
            return None  # could not broadcast into self: let the kernel raise
    return x


def _fast_pointwise(args: tuple, kwargs: dict) -> Any:
    """Out-of-place float point-wise op whose first operand has the output's shape.

    The output takes the layout of a dense first operand; a strided first operand that
    is the only non-scalar tensor gets the dense layout with the same dimension order
    (what TensorIterator does), when that order is unambiguous.
    """
    if kwargs.get("out") is not None or kwargs.get("memory_format") not in (None, torch.preserve_format):
        return None
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dtype not in _FLOATS:
        return None
    n = x.numel()
    only_tensor = True
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            if a.dtype != x.dtype or a.dim() > x.dim() or a.numel() > n:
                return None
            if a.numel() == n and a.shape != x.shape:
                return None
            if a.numel() != n and not _broadcasts_to(a.shape, x.shape):
                return None
            only_tensor = only_tensor and a.numel() == 1 and a.dim() == 0
        elif isinstance(a, complex):
            return None
    if _dense(x):
        return _like(x)
    if only_tensor:
        return _dense_in_order(x)
    return None


def _dense_in_order(x: torch.Tensor) -> torch.Tensor | None:
    """A dense tensor with ``x``'s dimension order (by decreasing stride), if unambiguous."""
    shape, stride = x.shape, x.stride()
    if len(set(stride)) != len(stride):
        return None
    order = sorted(range(x.dim()), key=lambda d: -stride[d])
    new = [0] * x.dim()
    step = 1
    for d in reversed(order):
        new[d] = step
        step *= shape[d]
    return torch.empty_strided(shape, new, dtype=x.dtype, device=_META)


def _fast_conv(args: tuple, kwargs: dict) -> Any:
    """``aten.convolution``: a contiguous output, as torch's meta kernel gives for any layout."""
    x, w = args[0], args[1]
    if kwargs or len(args) < 9 or x.dtype != w.dtype:
        return None
    nd = x.dim() - 2
    if nd < 1 or w.dim() != nd + 2:
        return None
    stride, padding, dilation, transposed, output_padding, groups = args[3:9]
    stride, padding, dilation, output_padding = (
        list(v) * nd if len(v) == 1 else list(v) for v in (stride, padding, dilation, output_padding)
    )
    if transposed:
        if x.shape[1] != w.shape[0]:
            return None
        channels = w.shape[1] * groups
        spatial = [
            (x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[2 + i] - 1)
            + output_padding[i] + 1
            for i in range(nd)
        ]
    else:
        if x.shape[1] != w.shape[1] * groups:
            return None  # let the kernel raise its message
        channels = w.shape[0]
        spatial = [
            (x.shape[2 + i] + 2 * padding[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
            for i in range(nd)
        ]
    if min(spatial) < 1 or x.shape[0] < 1:
        return None
    return _empty((x.shape[0], channels, *spatial), x.dtype)


def _fast_mean(args: tuple, kwargs: dict) -> Any:
    """``mean.dim``/``sum.dim_IntList`` whose result is contiguous either way."""
    x = args[0]
    if kwargs or x.dtype not in _FLOATS or len(args) < 2 or args[1] is None or len(args) > 3:
        return None
    dims = {d % x.dim() for d in args[1]} if x.dim() else set()
    keep = len(args) > 2 and bool(args[2])
    shape = [1 if d in dims else s for d, s in enumerate(x.shape)] if keep else [
        s for d, s in enumerate(x.shape) if d not in dims]
    if not x.is_contiguous() and sum(s > 1 for s in shape) > 1:
        return None
    return _empty(shape, x.dtype)


def _broadcasts_to(small: torch.Size, big: torch.Size) -> bool:
    offset = len(big) - len(small)
    return all(s in (1, big[offset + i]) for i, s in enumerate(small))


_FAST: dict[str, Callable[[tuple, dict], Any]] = {
    "convolution": _fast_conv,
    "mean": _fast_mean,
    "native_batch_norm": _fast_batch_norm,
    "_native_batch_norm_legit": _fast_batch_norm,
    "_native_batch_norm_legit_no_training": _fast_batch_norm,
    "native_layer_norm": _fast_layer_norm,
    "mm": _fast_mm,
    "addmm": _fast_mm,
    "bmm": _fast_bmm,
    "baddbmm": _fast_bmm,
    "_softmax": _fast_softmax,
    "_safe_softmax": _fast_softmax,
    "_unsafe_view": _fast_unsafe_view,
    "clone": _fast_pointwise,
}


def same_meta(a: Any, b: Any) -> bool:
    """Whether two op results agree in structure, shapes, strides and dtypes (for tests)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_meta(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) or (a is None and b is None)


def prod(shape: Any) -> int:
    """Product of a shape's entries as a Python int."""
    return math.prod(int(s) for s in shape)
