"""Replay the part of a forward pass that a pruned copy shares with its reference model.

A sensitivity table scores dozens of copies of one model, each with one group of channels
cut. Every module that runs *before* the first changed module in the forward pass sees the
same inputs as in the unpruned reference, so it computes the same outputs: on a ResNet, a
probe deep in the network re-computes most of the network for nothing. :class:`PrefixReplay`
records the reference's outputs of those modules once (on the proxy's fixed batches) and
returns them, cloned, when a probe's forward reaches them; the modules after the first
change run as usual. The score is the same bit for bit; on a chain of blocks a probe costs
about half of a full one on average.

Soundness rests on the forward calling the same modules in the same order for every batch
and every probe. Each replayed forward checks that order against the reference's trace and
falls back to a plain forward when it differs (:class:`ReplayMismatch`), and the first probe
replayed is also scored plainly: unequal scores switch the replay off for good.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

#: At most this memory (and a quarter of the device's) holds the recorded outputs; the
#: checkpoints that need more are dropped, deepest first.
MAX_BYTES = 4 << 30


class ReplayMismatch(RuntimeError):
    """A forward called its modules in another order than the reference's trace."""


@dataclass(frozen=True)
class Call:
    """One module call in the reference's forward: events ``[start, end)`` (one event per module call)."""

    name: str
    start: int
    end: int
    nbytes: int | None  # bytes per image of its output; None: not a single tensor (never replayed)


@dataclass
class PrefixReplay:
    """Outputs of ``reference`` to replay for copies that differ from it only later in the forward.

    Args:
        reference: the unpruned model every scored copy is cut from.
        changes: per kind of probe, the names of the modules it may change (e.g. a pruning
            group's layers); their earliest call is a checkpoint worth recording.
        example: one input batch (its first image traces the call order).
        max_bytes: the memory the recorded outputs may take (None: :data:`MAX_BYTES` or a
            quarter of the device's memory, whichever is smaller).

    Example:
        >>> import copy, torch, agentic_toolkit as at
        >>> _ = torch.manual_seed(0)
        >>> ref = at.create_model("cifar_resnet20").eval()
        >>> data = [(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))) for _ in range(2)]
        >>> proxy = at.training.ProxyAccuracy(data[:1], data[1:])
        >>> probe = copy.deepcopy(ref)
        >>> _ = probe.layer3[2].conv1.weight.data.mul_(0.5)   # a change late in the forward
        >>> plain = proxy(ref), proxy(probe)
        >>> with proxy.replaying(ref, [{"layer3.2.conv1"}]) as replay:
        ...     fast = proxy(ref), proxy(probe)                # records, then replays the prefix
        >>> fast == plain, replay.replayed, len(replay.checkpoints)
        (True, 1, 1)
    """

    reference: nn.Module
    changes: Sequence[Iterable[str]]
    example: torch.Tensor
    max_bytes: int | None = None
    trace: list[Call] = field(default_factory=list, init=False, repr=False)
    checkpoints: list[int] = field(default_factory=list, init=False)
    outputs: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    recorded: bool = field(default=False, init=False)
    trusted: bool | None = field(default=None, init=False)  # None: not yet checked against a plain score
    replayed: int = field(default=0, init=False)

    def __getstate__(self) -> dict:
        # a worker records its own outputs (one reference score) instead of receiving them
        state = dict(self.__dict__)
        state.update(outputs={}, recorded=False, trace=[], checkpoints=[])
        return state

    # ------------------------------------------------------------------ which calls
    def _prepare(self, images: int) -> None:
        """Trace the call order, then keep the checkpoints whose outputs fit ``max_bytes``
        for ``images`` images (shallow ones first: each deeper one needs more outputs)."""
        device = next(self.reference.parameters(), torch.empty(0)).device
        self.trace = trace_calls(self.reference, self.example[:1].to(device))
        cap = memory_cap(device) if self.max_bytes is None else self.max_bytes
        starts: dict[str, int] = {}
        for c in self.trace:
            starts.setdefault(c.name, c.start)
        wanted = sorted({min(starts[n] for n in names if n in starts)
                         for names in map(set, self.changes) if names & starts.keys()})
        kept, events = [], set()
        for c in (c for c in wanted if c > 0):
            more = events | set(self.maximal(c))
            if self.bytes_per_image(more) * images > cap:
                break
            kept, events = [*kept, c], more
        self.checkpoints = kept

    def bytes_per_image(self, events: Iterable[int]) -> int:
        return sum(self.trace[e].nbytes or 0 for e in events)  # a call's start event is its index

    def maximal(self, position: int) -> list[int]:
        """Start events of the outermost calls that end before event ``position``."""
        out, covered = [], 0
        for c in self.trace:
            if c.start < covered:
                continue
            if c.end <= position and c.nbytes is not None:
                out.append(c.start)
                covered = c.end
        return out

    def checkpoint(self, model: nn.Module) -> int:
        """The deepest recorded checkpoint before the first module of ``model`` that differs
        from the reference (0: nothing to replay)."""
        changed = changed_modules(model, self.reference)
        if changed is None:
            return 0
        first = min((c.start for c in self.trace if c.name in changed), default=None)
        if first is None:
            return 0 if changed else -1  # -1: no change at all
        return max((c for c in self.checkpoints if c <= first), default=0)

    # ------------------------------------------------------------------ hooks
    @contextlib.contextmanager
    def attached(self, model: nn.Module, images: int) -> Iterator[str]:
        """Hooks on ``model`` (a fresh copy of a probe or of the reference) while it is scored:
        yields ``"record"``, ``"replay"`` or ``"plain"``."""
        if self.trusted is False:
            yield "plain"
            return
        if not self.trace:
            self._prepare(images)
        position = self.checkpoint(model)
        if position == -1 and not self.recorded:
            mode, events = "record", set().union(*(self.maximal(c) for c in self.checkpoints))
        elif position > 0 and self.recorded:
            mode, events = "replay", set(self.maximal(position))
        else:
            yield "plain"
            return
        state = _State(self, mode, events)
        modules = list(model.named_modules())
        handles = [m.register_forward_pre_hook(functools.partial(_pre_hook, state, name)) for name, m in modules]
        if mode == "record":
            handles += [m.register_forward_hook(functools.partial(_post_hook, state)) for _, m in modules]
        else:
            for name, m in modules:
                if name in state.replay_names:
                    m.forward = functools.partial(_replayed, state, m)
        try:
            yield mode
            if mode == "record":
                self.recorded = True
            else:
                self.replayed += 1
        finally:
            for h in handles:
                h.remove()
            for _, m in modules:
                m.__dict__.pop("forward", None)


class _State:
    """The counters of one scoring (one pass over the proxy's batches)."""

    def __init__(self, replay: PrefixReplay, mode: str, events: set[int]):
        self.replay, self.mode, self.events = replay, mode, events
        self.trace = replay.trace  # indexed by event: a call's start event is its index
        self.replay_names = {self.trace[e].name for e in events}
        self.forward, self.event, self.stack, self.last = -1, 0, [], 0

    def enter(self, name: str) -> None:
        if name == "":  # the model itself: a new batch
            self.forward, self.event = self.forward + 1, 0
        e = self.event
        if e >= len(self.trace) or self.trace[e].name != name:
            raise ReplayMismatch(f"module {name!r} at call {e}, the reference called "
                                 f"{self.trace[e].name if e < len(self.trace) else 'nothing'!r}")
        self.event += 1
        if self.mode == "record":
            self.stack.append(e)
        self.last = e


def _pre_hook(state: _State, name: str, module: nn.Module, args) -> None:
    state.enter(name)


def _post_hook(state: _State, module: nn.Module, args, output) -> None:
    e = state.stack.pop()
    if e in state.events and isinstance(output, torch.Tensor):
        state.replay.outputs[(state.forward, e)] = output.clone()


def _replayed(state: _State, module: nn.Module, *args, **kwargs):
    e = state.last  # set by this call's pre-hook, which ran just before
    if e not in state.events:
        return type(module).forward(module, *args, **kwargs)
    state.event = state.trace[e].end  # its inner calls are skipped with it
    return state.replay.outputs[(state.forward, e)].clone()


# ---------------------------------------------------------------------------- helpers
def trace_calls(model: nn.Module, example: torch.Tensor) -> list[Call]:
    """The module calls of one forward of ``model`` on ``example``, in call order."""
    calls: list[list] = []
    stack: list[int] = []

    def pre(name, module, args):
        stack.append(len(calls))
        calls.append([name, len(calls), None, None])

    def post(module, args, output):
        i = stack.pop()
        calls[i][2] = len(calls)
        if isinstance(output, torch.Tensor) and output.dim() > 0:
            calls[i][3] = output.element_size() * output.numel() // max(1, len(output))

    handles = [h for name, m in model.named_modules()
               for h in (m.register_forward_pre_hook(functools.partial(pre, name)), m.register_forward_hook(post))]
    was_training = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
        for m, t in was_training:
            m.training = t
    return [Call(*c) for c in calls]


def memory_cap(device: torch.device) -> int:
    """:data:`MAX_BYTES`, or a quarter of the device's memory (free memory on a GPU) if less."""
    if device.type == "cuda":
        return min(MAX_BYTES, torch.cuda.mem_get_info(device)[0] // 4)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return MAX_BYTES
    return min(MAX_BYTES, total // 4)


def changed_modules(model: nn.Module, reference: nn.Module) -> set[str] | None:
    """Names of the modules of ``model`` whose own parameters, buffers or plain attributes
    differ from ``reference``'s (None: the module trees differ)."""
    ref = dict(reference.named_modules())
    mine = dict(model.named_modules())
    if mine.keys() != ref.keys():
        return None
    return {name for name, m in mine.items() if _differs(m, ref[name])}


def _differs(a: nn.Module, b: nn.Module) -> bool:
    if type(a) is not type(b):
        return True
    ta = dict(a.named_parameters(recurse=False)) | dict(a.named_buffers(recurse=False))
    tb = dict(b.named_parameters(recurse=False)) | dict(b.named_buffers(recurse=False))
    if ta.keys() != tb.keys() or any(x.shape != tb[k].shape or not torch.equal(x, tb[k]) for k, x in ta.items()):
        return True
    plain = (int, float, bool, str, tuple, type(None))
    attrs = {k for k, v in vars(a).items() if isinstance(v, plain) and not k.startswith("_") and k != "training"}
    return any(vars(a)[k] != vars(b).get(k) for k in attrs)
