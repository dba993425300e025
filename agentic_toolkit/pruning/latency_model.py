"""Latency of a pruned model predicted from its layer widths (a measured lookup table).

:func:`build_latency_model` measures, on the named device at the batch size of the plan's
example inputs, every convolution and linear layer of the plan's MAC model on a grid of
kept (in, out) widths (:mod:`agentic_toolkit.benchmarking.latency_table`), and the whole
model unpruned and pruned uniformly to half its channels. :meth:`LatencyModel.predict` is then
analytic, like the exact MAC model:

    latency(widths) = sum over layers of calls x table(in', out')  +  a + b x s(widths)

The table is interpolated bilinearly between grid widths after a monotone envelope (each
entry replaced by the smallest entry at widths at least as large), so predictions never rise
when a width falls; timing noise on a shared machine only adds time, so this lower envelope
also drops isolated slow outliers. The
rest of the network (norms, activations, attention matmuls, pooling, ...) is ``a + b x s``
with ``s`` the fraction of layer output elements kept (the activation volume those ops
read): ``a + b`` is the unpruned model's measured latency minus its layers' table entries
at full width, and ``b`` is fitted on the half-pruned model (clamped to ``[0, a + b]``).
So the prediction at full width equals the measured unpruned latency.

Measurements are cached on disk per (device, threads, batch size, architecture + input
shape, torch version); a second build of the same key measures nothing
(``model.measurements == 0``). ``round_to="auto"`` additionally measures each layer's latency
at every output width of its last ``STEP_SPAN`` channels and picks per group the largest of
``AUTO_MULTIPLES`` at which latency is flat between multiples (:meth:`round_multiples`).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..benchmarking import latency_table as lt
from ..errors import ToolkitError
from .mac_model import Key

AUTO_MULTIPLES = (1, 4, 8, 16, 32)
FLAT_TOL = 0.02  # a step curve is "flat" when rounding up costs at most 2% of the full-width latency
CALIBRATION_RATIO = 0.5


@dataclass
class _Layer:
    spec: lt.LayerSpec
    ins: list[int]
    outs: list[int]
    ms: np.ndarray  # enveloped table, shape (len(ins), len(outs))


@dataclass
class LatencyModel:
    """Predicted latency (ms) of a plan's model from its widths (see the module docstring).

    Built by :func:`build_latency_model`; :meth:`predict` takes ``{dimension key: kept
    width}`` (e.g. ``plan.widths(selection)``; missing keys stay at full width).

    Attributes:
        layers: the enveloped per-layer tables.
        rest: ``(a, b)``: the rest of the network costs ``a + b * s(widths)`` ms.
        key: what the table was measured for (device, threads, batch size, architecture, torch).
        measured_ms: the unpruned model's measured latency.
        measurements: configurations timed in this build (0: all from the cache).
        seconds: wall time of the build.
        steps, steps_in: per-layer step curves for ``round_to="auto"``.
        path: the cache file.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model = at.create_model("cifar_resnet20").eval()  # random init
        >>> plan = at.get_plan(model, torch.randn(8, 3, 32, 32))
        >>> table = at.build_latency_model(plan, threads=1, grid_steps=2, repeats=1, cache=False, progress=False)
        >>> full = table.predict({})  # every width kept: the measured latency
        >>> abs(full - table.measured_ms) < 1e-6
        True
        >>> table.predict(plan.widths(plan.select(at.Strategy(pruning_ratio=0.5)))) <= full
        True
    """

    layers: list[_Layer]
    rest: tuple[float, float]  # (a, b): rest of the network = a + b * s(widths)
    key: dict[str, Any]
    measured_ms: float  # the unpruned model, measured
    measurements: int = 0  # timed configurations in this build (0: all from the cache)
    seconds: float = 0.0
    steps: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    steps_in: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    path: str = ""

    def predict(self, widths: dict[Key, int]) -> float:
        """Predicted latency in milliseconds when the dimensions in ``widths`` have those sizes."""
        total = self.rest[0] + self.rest[1] * self.activation_fraction(widths)
        for layer in self.layers:
            total += layer.spec.calls * _bilinear(layer, *self._widths(layer.spec, widths))
        return float(total)

    def predict_us(self, widths: dict[Key, int]) -> int:
        """:meth:`predict` in whole microseconds (the unit of a latency constraint)."""
        return int(round(1000.0 * self.predict(widths)))

    @property
    def base_ms(self) -> float:
        """The predicted (= measured) latency of the unpruned model."""
        return self.predict({})

    def activation_fraction(self, widths: dict[Key, int]) -> float:
        """Fraction of the layers' output elements kept at ``widths``."""
        full = sum(layer.spec.out_numel for layer in self.layers)
        kept = sum(layer.spec.out_numel * self._widths(layer.spec, widths)[1] / layer.spec.out_ch
                   for layer in self.layers)
        return kept / full if full else 1.0

    @staticmethod
    def _widths(spec: lt.LayerSpec, widths: dict[Key, int]) -> tuple[int, int]:
        out = widths.get(spec.out_key, spec.out_ch) if spec.out_key else spec.out_ch
        if spec.depthwise:
            return out, out
        return (widths.get(spec.in_key, spec.in_ch) if spec.in_key else spec.in_ch), out

    def profile(self, widths: dict[Key, int] | None = None):
        """Per layer: name, widths, predicted ms (at ``widths``, default full) and ms per
        kept output channel, as a DataFrame (most expensive first)."""
        import pandas as pd

        widths = widths or {}
        rows = []
        for layer in self.layers:
            cin, cout = self._widths(layer.spec, widths)
            ms = layer.spec.calls * _bilinear(layer, cin, cout)
            rows.append({"layer": layer.spec.name, "in": cin, "out": cout, "ms": ms, "ms_per_channel": ms / cout})
        return pd.DataFrame(rows).sort_values("ms", ascending=False, ignore_index=True)

    def layer_ms(self) -> dict[str, float]:
        """Predicted ms of every timed layer of the unpruned model (all its calls)."""
        return {layer.spec.name: layer.spec.calls * _bilinear(layer, *self._widths(layer.spec, {}))
                for layer in self.layers}

    def scope_shares(self, plan) -> dict[str, float]:
        """Per scope of ``plan`` (:meth:`~.plan.PrunePlan.describe`'s names): the share of the
        unpruned layers' predicted latency (the table's convolutions and linears, as MAC shares
        count the layers' MACs) spent in the layers whose width the scope changes."""
        full = self.layer_ms()
        total = sum(full.values())
        return {scope: sum(full.get(n, 0.0) for n in names) / total if total > 0 else 0.0
                for scope, names in plan.scope_layers().items()}

    def round_multiples(self, plan, candidates: tuple[int, ...] = AUTO_MULTIPLES) -> dict[int, int]:
        """Per prunable group (index): the channel multiple ``round_to="auto"`` keeps, chosen
        from the summed step curves of the layers producing the group's channels and of those
        consuming them (:func:`~.latency_table.flat_multiple`), at most a
        quarter of the group's units (1 where there is no curve)."""
        if not self.steps:
            raise ToolkitError("this latency model has no step curves; build it with auto_round=True")
        by_out = {layer.spec.out_key: layer.spec for layer in self.layers if layer.spec.out_key}
        by_in = {layer.spec.in_key: layer.spec for layer in self.layers
                 if layer.spec.in_key and not layer.spec.depthwise}
        out: dict[int, int] = {}
        for g in plan.groups:
            if not g.prunable:
                continue
            specs = [by_out[(m.name, True)] for m in g.members if m.is_out and (m.name, True) in by_out
                     and m.per_channel == 1]
            consumers = [by_in[(m.name, False)] for m in g.members if not m.is_out and (m.name, False) in by_in
                         and m.per_channel == 1]
            curve = _sum_curves([self.steps.get(s.signature) for s in specs]
                                + [self.steps_in.get(s.signature) for s in consumers])
            allowed = tuple(m for m in candidates if m <= max(1, g.units // 4))
            out[g.index] = lt.flat_multiple(*curve, allowed, FLAT_TOL) if curve else 1
        return out


def _sum_curves(curves: list[dict[str, Any] | None]) -> tuple[list[int], list[float]] | None:
    curves = [c for c in curves if c]
    if not curves:
        return None
    widths = sorted(set.intersection(*(set(c["out"]) for c in curves)))
    if len(widths) < 2:
        return None
    maps = [dict(zip(c["out"], c["ms"], strict=True)) for c in curves]
    return widths, [sum(m[w] for m in maps) for w in widths]


def _bilinear(layer: _Layer, cin: int, cout: int) -> float:
    i, fi = _locate(layer.ins, cin)
    j, fj = _locate(layer.outs, cout)
    t = layer.ms
    i2, j2 = min(i + 1, len(layer.ins) - 1), min(j + 1, len(layer.outs) - 1)
    top = t[i, j] * (1 - fj) + t[i, j2] * fj
    bottom = t[i2, j] * (1 - fj) + t[i2, j2] * fj
    return float(top * (1 - fi) + bottom * fi)


def _locate(grid: list[int], w: int) -> tuple[int, float]:
    """Index of the grid point at or below ``w`` and the fraction towards the next (clamped)."""
    if w <= grid[0]:
        return 0, 0.0
    if w >= grid[-1]:
        return len(grid) - 1, 0.0
    i = bisect.bisect_right(grid, w) - 1
    return i, (w - grid[i]) / (grid[i + 1] - grid[i])


def envelope(ms: np.ndarray) -> np.ndarray:
    """Lower monotone envelope: each entry becomes the minimum over entries with both widths
    at least as large (non-decreasing in each width; a slow outlier is dropped)."""
    flipped = np.asarray(ms, dtype=float)[::-1, ::-1]
    return np.minimum.accumulate(np.minimum.accumulate(flipped, axis=0), axis=1)[::-1, ::-1].copy()


def build_latency_model(
    plan,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    *,
    grid_steps: int = 8,
    warmup: int = 2,
    repeats: int = 7,
    auto_round: bool = False,
    cache: bool = True,
    progress: bool = True,
    channels_last: bool = False,
) -> LatencyModel:
    """Measure (or read from the disk cache) the latency table of ``plan``'s model, at the
    batch size of the plan's example inputs.

    Args:
        plan: a :class:`~agentic_toolkit.PrunePlan` (e.g. ``fit.plan`` or :func:`get_plan`'s).
        device: ``"cpu"`` or ``"cuda"``.
        threads: CPU threads; default: torch's current setting.
        grid_steps: widths per prunable dimension.
        warmup, repeats: untimed runs, then the median of ``repeats`` timings per entry.
        auto_round: also measure the step curves :meth:`LatencyModel.round_multiples` needs.
        cache: read and write the disk cache; False measures anew and writes nothing. A
            cached table is reused whatever ``grid_steps``/``repeats`` it was measured with.
        progress: a tqdm progress bar while measuring.
        channels_last: time layers, inputs and the whole model in NHWC (its own cache key),
            for deployments that run so (oneDNN's preferred layout on CPUs).

    Returns:
        A :class:`LatencyModel`.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
        >>> plan = at.get_plan(model, torch.randn(8, 3, 32, 32))
        >>> table = at.build_latency_model(plan, threads=1, grid_steps=2, repeats=1, cache=False, progress=False)
        >>> table.key["device"], table.key["batch_size"], table.measurements > 0
        ('cpu', 8, True)
    """
    from ..benchmarking.latency import torch_threads

    start = time.perf_counter()
    if not (grid_steps >= 2 and repeats >= 1 and warmup >= 0):
        raise ToolkitError(f"need grid_steps >= 2, repeats >= 1 and warmup >= 0; got {grid_steps}, {repeats}, {warmup}")
    dev, threads = lt.check_device(device, threads)
    names = [r.name for r in plan.mac_model.rows]
    specs = lt.layer_specs(plan.source, names, plan.example_inputs, plan.prunable_keys)
    if not specs:
        raise ToolkitError(f"{type(plan.source).__name__} has no prunable convolution or linear layer to time")
    key = lt.table_key(plan.source, plan.input_shape, dev, threads, channels_last)
    path = lt.cache_path(key)
    data = lt.load_table(path, key) if cache else lt.empty_table(key)
    unique = {s.signature: s for s in specs}
    todo = [s for sig, s in unique.items() if sig not in data["layers"]]
    steps_todo = [s for sig, s in unique.items() if auto_round and s.out_key and sig not in data["steps"]]
    in_todo = [s for sig, s in unique.items()
               if auto_round and s.in_key and not s.depthwise and sig not in data["steps_in"]]
    total = sum(len(a) * len(b) for a, b in (s.grid(grid_steps) for s in todo))
    total += sum(len(lt.step_widths(s)) for s in steps_todo) + (0 if data["whole"] else 1)
    total += sum(len(lt.step_widths(s, "in")) for s in in_todo)
    with torch_threads(threads if dev.type == "cpu" else None), _bar(total, progress, key) as bar:
        for s in todo:
            data["layers"][s.signature] = lt.measure_grid(s, grid_steps, dev, warmup, repeats, bar.update,
                                                          channels_last)
        for s in steps_todo:
            data["steps"][s.signature] = lt.measure_steps(s, dev, warmup, repeats, bar.update, channels_last)
        for s in in_todo:
            data["steps_in"][s.signature] = lt.measure_steps(s, dev, warmup, repeats, bar.update, channels_last,
                                                             side="in")
        if not data["whole"]:
            data["whole"] = _measure_whole(plan, dev, warmup, repeats, channels_last=channels_last)
            bar.update()
    if cache and total:
        lt.save_table(path, data)
    model = _assemble(specs, data)
    model.measurements, model.seconds, model.path = total, time.perf_counter() - start, str(path)
    return model


def _bar(total: int, progress: bool, key: dict[str, Any]):
    from tqdm.auto import tqdm

    desc = f"latency table {key['model']} b{key['batch_size']} {key['device']}"
    return tqdm(total=total, desc=desc, disable=not progress or total == 0, leave=False)


def _measure_whole(plan, dev: torch.device, warmup: int, repeats: int, channels_last: bool = False) -> dict[str, Any]:
    """The unpruned model and the uniformly half-pruned one, timed interleaved (medians, ms),
    with the half-pruned widths (to fit the rest of the network)."""
    import copy
    import statistics

    from ..benchmarking.latency import make_timer, time_interleaved
    from .apply import prune_with_plan
    from .strategy import Strategy

    half = Strategy(isomorphic=False, global_pruning=False, pruning_ratio=CALIBRATION_RATIO)
    sel = plan.select(half)
    pruned = prune_with_plan(plan, half, selection=sel).model.to(dev).eval()
    base = copy.deepcopy(plan.source).to(dev).eval()
    x = plan.example_inputs
    x = (x if isinstance(x, (tuple, list)) else (x,))
    x = tuple(t.to(dev) if torch.is_tensor(t) else t for t in x)
    if channels_last:
        base, pruned = base.to(memory_format=torch.channels_last), pruned.to(memory_format=torch.channels_last)
        x = tuple(t.contiguous(memory_format=torch.channels_last) if torch.is_tensor(t) and t.dim() == 4 else t
                  for t in x)
    with torch.inference_mode():
        for _ in range(warmup):
            base(*x), pruned(*x)
        t_half, t_base = time_interleaved(make_timer(dev), lambda xs: pruned(*xs), lambda xs: base(*xs), x,
                                          max(3, repeats))
    widths = {f"{k[0]}|{int(k[1])}": int(v) for k, v in plan.widths(sel).items()}
    return {"base_ms": statistics.median(t_base), "half_ms": statistics.median(t_half), "half_widths": widths}


def _assemble(specs: list[lt.LayerSpec], data: dict[str, Any]) -> LatencyModel:
    layers = []
    for s in specs:
        t = data["layers"][s.signature]
        layers.append(_Layer(s, list(t["in"]), list(t["out"]), envelope(t["ms"])))
    whole = data["whole"]
    model = LatencyModel(layers, (0.0, 0.0), data["key"], float(whole["base_ms"]),
                         steps={k: v for k, v in data["steps"].items()}, steps_in=dict(data["steps_in"]))
    rest_full = whole["base_ms"] - model.predict({})
    half = {(k.rsplit("|", 1)[0], k.endswith("|1")): v for k, v in whole["half_widths"].items()}
    s_half = model.activation_fraction(half)
    rest_half = whole["half_ms"] - model.predict(half)
    b = (rest_full - rest_half) / (1.0 - s_half) if s_half < 1.0 else 0.0
    b = min(max(b, 0.0), max(rest_full, 0.0))
    model.rest = (rest_full - b, b)
    return model
