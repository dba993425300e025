"""One counted forward pass: a TorchDispatchMode that sees every aten op, plus module hooks.

The model itself is never touched. On the ``meta`` backend every tensor an op receives
(parameters, buffers, inputs, constants made in ``forward``) is replaced by a meta
tensor of the same shape, stride and dtype before the op runs, so nothing is computed
and nothing is written: even an in-place update of a BatchNorm running mean lands on
a meta copy. The ``real`` backend (a fallback for models whose forward needs real
values, e.g. ``.item()``) runs the real kernels, but ops get private clones of the
model's buffers, and of its parameters when their schema says they write them.

Module attribution uses *global* module hooks (registered for the duration of the pass
and always removed), so no hook is ever added to the model; the innermost module being
executed by this thread owns the op.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.nn.modules import module as module_hooks
from torch.utils._python_dispatch import TorchDispatchMode

from ..models import PadShortcut
from . import op_rules as ops
from .tp_convention import tp_rules

_META = torch.device("meta")


@dataclass(slots=True)
class ModuleRecord:
    """What one module did during the pass (all its calls together)."""

    name: str
    module: nn.Module
    macs: dict[str, int] = field(default_factory=dict)  # op label -> MACs
    elementwise: int = 0
    calls: int = 0
    input_shape: tuple | None = None
    output_shape: tuple | None = None
    tp_macs: int = 0  # torch_pruning-convention count (its counted types only)
    tp_op: str = ""
    data_movement: bool = False  # its MAC ops only move data (see run_pass)

    @property
    def is_linear(self) -> bool:
        return isinstance(self.module, nn.Linear)

    @property
    def is_attention(self) -> bool:
        name = type(self.module).__name__.lower()
        return "attention" in name or "attn" in name


@dataclass
class PassResult:
    """Raw output of one counted pass."""

    records: list[ModuleRecord]  # in order of first call
    uncounted: Counter
    batch: int
    backend: str
    input_shape: tuple


def _shape_of(x: Any) -> tuple | None:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)):
        for item in x:
            s = _shape_of(item)
            if s is not None:
                return s
    if isinstance(x, dict):
        for item in x.values():
            s = _shape_of(item)
            if s is not None:
                return s
    return None


class _CountingMode(TorchDispatchMode):
    """Counts MACs and element-wise ops of every aten op; on ``meta`` also fakes them."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # never compiled: skip torch's per-call dynamo-disable wrapper (~2 us per op)
        return False

    def __init__(self, root: ModuleRecord, to_meta: bool, params: set[int], buffers: set[int],
                 check: bool):
        super().__init__()
        self.stack: list[ModuleRecord] = [root]
        self.to_meta = to_meta
        self.params = params  # ids of the model's parameters (real backend only)
        self.buffers = buffers  # ids of the model's buffers (real backend only)
        self.check = check
        self.uncounted: Counter = Counter()
        self._memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- tensor conversion
    def meta(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "meta":
            return t
        hit = self._memo.get(id(t))
        if hit is None or hit[0] is not t:
            hit = (t, torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=_META))
            self._memo[id(t)] = hit  # keeps t alive, so its id is not reused
        return hit[1]

    def _private(self, t: torch.Tensor) -> torch.Tensor:
        hit = self._memo.get(id(t))
        if hit is None or hit[0] is not t:
            hit = (t, t.clone())
            self._memo[id(t)] = hit
        return hit[1]

    def _convert(self, func: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.to_meta:
            conv = self.meta
            out = []
            has_tensor = False
            for a in args:
                if isinstance(a, torch.Tensor):
                    has_tensor = True
                    a = a if a.is_meta else conv(a)
                elif type(a) in (list, tuple) and a and any(isinstance(x, torch.Tensor) for x in a):
                    has_tensor = True
                    a = [conv(x) if isinstance(x, torch.Tensor) else x for x in a]
                out.append(a)
            if kwargs:
                kwargs = {k: conv(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
                if "device" in kwargs:
                    kwargs["device"] = _META
                    kwargs.pop("pin_memory", None)
            elif not has_tensor and _has_device_arg(func):
                kwargs = {"device": _META}
            return tuple(out), kwargs
        # Buffers get private clones whatever the op (native_batch_norm writes the running
        # stats without saying so in its schema); parameters when the schema marks a write.
        written = _written_args(func)
        if any(isinstance(a, torch.Tensor) and (id(a) in self.buffers or (i in written and id(a) in self.params))
               for i, a in enumerate(args)):
            args = tuple(
                self._private(a)
                if isinstance(a, torch.Tensor) and (id(a) in self.buffers or (i in written and id(a) in self.params))
                else a
                for i, a in enumerate(args)
            )
        return args, kwargs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        args, kwargs = self._convert(func, args, kwargs or {})
        rule = ops.rule_for(func)
        out = None
        if self.to_meta and rule.fast is not None:
            out = rule.fast(args, kwargs)
            if out is not None and self.check:
                ref = func(*args, **kwargs)
                if not ops.same_meta(out, ref):
                    raise AssertionError(f"fast meta rule of {rule.name} disagrees with the kernel")
        if out is None:
            out = func(*args, **kwargs)
        kind = rule.kind
        if kind == ops.FREE:
            return out
        rec = self.stack[-1]
        if rec.data_movement:
            return out
        if kind in ops.MAC_KINDS:
            if kind == ops.CONV:
                label = "conv"
            elif kind in (ops.SDPA, ops.SDPA_BLHE):
                label = "attention"
            elif kind in (ops.MM, ops.LINEAR) and rec.is_linear:
                label = "linear"
            elif kind == ops.BMM and rec.is_attention:
                label = "attention"
            else:
                label = "matmul"
            rec.macs[label] = rec.macs.get(label, 0) + ops.op_macs(kind, rule.name, args, out)
        elif kind in ops.ELEMENTWISE_KINDS:
            rec.elementwise += ops.elementwise_count(kind, args, out)
        else:
            self.uncounted[rule.name] += 1
        return out


@functools.cache
def _written_args(func: Any) -> frozenset[int]:
    return frozenset(i for i, a in enumerate(func._schema.arguments)
                     if a.alias_info is not None and a.alias_info.is_write)


@functools.cache
def _has_device_arg(func: Any) -> bool:
    return any(a.name == "device" for a in func._schema.arguments)


class _ModuleHooks:
    """Global forward hooks that keep the counting mode's module stack: ops go to the
    innermost module executing; with torch_pruning ``rules`` each module's rule is applied
    to its call. Only calls on the counting thread count."""

    def __init__(self, model: nn.Module, rules: dict):
        self.model = model
        self.names = {id(m): n for n, m in model.named_modules()}
        self.records: dict[int, ModuleRecord] = {}
        self.rules = rules
        self.thread = threading.get_ident()
        self.batch = 0
        self.mode: _CountingMode | None = None  # set before the pass

    def record(self, m: nn.Module) -> ModuleRecord:
        rec = self.records.get(id(m))
        if rec is None:
            rec = ModuleRecord(self.names[id(m)], m, data_movement=isinstance(m, PadShortcut))
            self.records[id(m)] = rec
        return rec

    def pre(self, m: nn.Module, args: tuple) -> None:
        if threading.get_ident() != self.thread:
            return
        stack = self.mode.stack
        rec = self.records.get(id(m))
        if rec is None:
            if id(m) not in self.names:
                stack.append(stack[-1])  # a module outside the model: parent owns its ops
                return
            rec = self.record(m)
        rec.calls += 1
        if rec.input_shape is None:
            first = args[0] if args else None
            rec.input_shape = tuple(first.shape) if isinstance(first, torch.Tensor) else _shape_of(args)
        stack.append(rec)

    def post(self, m: nn.Module, args: tuple, output: Any) -> None:
        if threading.get_ident() != self.thread or len(self.mode.stack) <= 1:
            return
        rec = self.mode.stack.pop()
        if rec.module is not m:
            return
        if rec.output_shape is None:
            rec.output_shape = (tuple(output.shape) if isinstance(output, torch.Tensor)
                                else _shape_of(output))
        if self.rules:
            rule = self.rules.get(type(m))
            if rule is not None:
                rec.tp_op = rule[0]
                rec.tp_macs += int(rule[1](m, args, output))
            if m is self.model:
                first = args[0] if args else None
                self.batch += len(first) if first is not None and hasattr(first, "__len__") else 1


def run_pass(
    model: nn.Module,
    inputs: Any,
    backend: str = "meta",
    torch_pruning: bool = False,
    check: bool = False,
) -> PassResult:
    """Run ``model`` once on ``inputs`` under the counter and return what each module did.

    The CIFAR ResNets' ``PadShortcut`` (the parameter-free option-A shortcut, written as
    a frozen 0/1 1x1 convolution so that pruning can see its channels) is data
    movement: its ops cost nothing, as in the architecture it stands for.

    ``inputs``: a tensor, a tuple/list of positional tensors, or a dict of keyword
    arguments. On the meta backend they may be real (only their shapes are used).
    """
    hooks = _ModuleHooks(model, tp_rules() if torch_pruning else {})
    root = hooks.record(model)
    real = backend != "meta"
    params = {id(t) for t in model.parameters()} if real else set()
    buffers = {id(t) for t in model.buffers()} if real else set()
    mode = hooks.mode = _CountingMode(root, not real, params, buffers, check)
    if backend == "meta":
        inputs = _to_meta(inputs, mode)
    handles = [
        module_hooks.register_module_forward_pre_hook(hooks.pre),
        module_hooks.register_module_forward_hook(hooks.post, always_call=True),
    ]
    try:
        with torch.no_grad(), mode:
            if isinstance(inputs, dict):
                model(**inputs)
            elif isinstance(inputs, (tuple, list)):
                model(*inputs)
            else:
                model(inputs)
    finally:
        for h in handles:
            h.remove()
    return PassResult(
        records=list(hooks.records.values()),
        uncounted=mode.uncounted,
        batch=hooks.batch or 1,
        backend=backend,
        input_shape=_shape_of(inputs) or (),
    )


def _to_meta(inputs: Any, mode: _CountingMode) -> Any:
    if isinstance(inputs, torch.Tensor):
        return mode.meta(inputs)
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to_meta(x, mode) for x in inputs)
    if isinstance(inputs, dict):
        return {k: _to_meta(v, mode) for k, v in inputs.items()}
    return inputs
