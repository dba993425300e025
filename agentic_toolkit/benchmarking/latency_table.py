"""Per-layer latency tables measured on a device (lookup tables in the spirit of HALP).

Each convolution or linear layer is isolated: a fresh ``nn.Conv{1,2,3}d`` / ``nn.Linear``
with the layer's kernel, stride, padding, dilation, groups and bias, but the requested
(in, out) widths, runs on a random tensor of the input shape the layer saw in the model
(channel dimension replaced). Its latency is the median of ``repeats`` timings after
``warmup`` runs. Layers with the same configuration (e.g. the repeated blocks of a stage)
are measured once. Tables are stored as JSON under ``cache_dir()/latency`` in one file per
(device, threads, batch size, model architecture + input shape, torch version): see
:func:`cache_path`. Depthwise convolutions keep ``groups == channels``; other grouped
convolutions keep ``groups`` and widths multiples of it. The full-width entry is timed twice
(the smaller median is kept): it anchors the prediction of the unpruned layer.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ToolkitError
from .latency import make_timer

Key = tuple[str, bool]
STEP_SPAN = 32  # auto rounding: fine curves cover the last STEP_SPAN output widths
TABLE_FORMAT = 2  # bump when what is measured changes: older cached tables are measured anew


@dataclass
class LayerSpec:
    """A convolution or linear layer as the table measures it (see module docstring)."""

    name: str
    kind: str  # "conv" or "linear"
    in_shape: tuple[int, ...]
    out_numel: int
    calls: int
    in_ch: int
    out_ch: int
    conv: dict[str, Any] | None
    bias: bool
    in_key: Key | None  # the prunable input dimension, if any
    out_key: Key | None  # the prunable output dimension, if any

    @property
    def depthwise(self) -> bool:
        return bool(self.conv) and self.conv["groups"] > 1 and self.conv["groups"] == self.in_ch == self.out_ch

    @property
    def signature(self) -> str:
        """The configuration that determines the latency (not the name)."""
        return json.dumps([self.kind, list(self.in_shape), self.in_ch, self.out_ch, self.conv, self.bias,
                           self.in_key is not None, self.out_key is not None, self.depthwise])

    def grid(self, steps: int) -> tuple[list[int], list[int]]:
        """Input and output widths measured (ascending, ending at the full widths)."""
        if self.depthwise:
            w = width_grid(self.out_ch, steps)
            return w, w
        g = self.conv["groups"] if self.conv else 1
        ins = width_grid(self.in_ch, steps, g) if self.in_key else [self.in_ch]
        outs = width_grid(self.out_ch, steps, g) if self.out_key else [self.out_ch]
        return ins, outs


def width_grid(full: int, steps: int, multiple: int = 1) -> list[int]:
    """``steps`` widths from ``full / steps`` to ``full`` (multiples of ``multiple``)."""
    out = {max(multiple, int(round(full * k / steps / multiple)) * multiple) for k in range(1, steps + 1)}
    return sorted(min(w, full) for w in out | {full})


def layer_specs(model: nn.Module, names: Iterable[str], example_inputs, prunable: set[Key]) -> list[LayerSpec]:
    """The convolution and linear layers among ``names``, with the input shape each saw in
    one forward pass of ``example_inputs`` in eval mode (other module types are skipped)."""
    modules = dict(model.named_modules())
    wanted = {n: modules[n] for n in names if isinstance(modules.get(n), (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))}
    seen: dict[str, list] = {}

    def hook(name):
        def record(mod, args, out):
            entry = seen.setdefault(name, [tuple(args[0].shape), out.numel(), 0])
            entry[2] += 1
        return record

    from ..training.evaluation import eval_mode

    handles = [m.register_forward_hook(hook(n)) for n, m in wanted.items()]
    try:
        with torch.no_grad(), eval_mode(model):  # eval: no batch-norm statistics change
            inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return [_spec(n, wanted[n], *seen[n], prunable) for n in wanted if n in seen]


def _spec(name: str, m: nn.Module, in_shape, out_numel: int, calls: int, prunable: set[Key]) -> LayerSpec:
    in_key = (name, False) if (name, False) in prunable else None
    out_key = (name, True) if (name, True) in prunable else None
    if isinstance(m, nn.Linear):
        return LayerSpec(name, "linear", in_shape, out_numel, calls, m.in_features, m.out_features, None,
                         m.bias is not None, in_key, out_key)
    conv = {"dim": len(m.kernel_size), "kernel_size": list(m.kernel_size), "stride": list(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
            "dilation": list(m.dilation), "groups": m.groups, "padding_mode": m.padding_mode}
    spec = LayerSpec(name, "conv", in_shape, out_numel, calls, m.in_channels, m.out_channels, conv,
                     m.bias is not None, in_key, out_key)
    if spec.depthwise:
        spec.in_key = None  # the output width sets both
    return spec


def build_layer(spec: LayerSpec, cin: int, cout: int, device: torch.device,
                channels_last: bool = False) -> tuple[nn.Module, torch.Tensor]:
    """A fresh layer with ``cin`` -> ``cout`` channels and a random input for it (a 2-d
    convolution and its input in NHWC with ``channels_last``)."""
    shape = list(spec.in_shape)
    if spec.kind == "linear":
        shape[-1] = cin
        layer = nn.Linear(cin, cout, bias=spec.bias)
    else:
        c = spec.conv
        groups = cout if spec.depthwise else c["groups"]
        cin = cout if spec.depthwise else cin
        shape[1] = cin
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[c["dim"]]
        padding = c["padding"] if isinstance(c["padding"], str) else tuple(c["padding"])
        layer = cls(cin, cout, tuple(c["kernel_size"]), stride=tuple(c["stride"]), padding=padding,
                    dilation=tuple(c["dilation"]), groups=groups, bias=spec.bias, padding_mode=c["padding_mode"])
    layer, x = layer.to(device).eval(), torch.randn(shape, device=device)
    if channels_last and x.dim() == 4:
        layer, x = layer.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return layer, x


def median_ms(fn: Callable[[], Any], timer: Callable, warmup: int, repeats: int) -> float:
    """Median of ``repeats`` timings (ms) of ``fn`` after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    return statistics.median(timer(fn) for _ in range(max(1, repeats)))


def measure_grid(spec: LayerSpec, steps: int, device: torch.device, warmup: int, repeats: int,
                 tick: Callable[[], None], channels_last: bool = False) -> dict[str, Any]:
    """``{"in": widths, "out": widths, "ms": [[ms per out width] per in width]}`` of one layer."""
    timer = make_timer(device)
    ins, outs = spec.grid(steps)
    rows = []
    with torch.inference_mode():
        for cin in ins:
            row = []
            for cout in outs:
                layer, x = build_layer(spec, cin, cout, device, channels_last)
                row.append(median_ms(lambda layer=layer, x=x: layer(x), timer, warmup, repeats))
                tick()
            rows.append(row)
        # the full-width entry anchors the prediction of the unpruned layer: time it twice
        layer, x = build_layer(spec, ins[-1], outs[-1], device, channels_last)
        rows[-1][-1] = min(rows[-1][-1], median_ms(lambda: layer(x), timer, warmup, repeats))
    return {"in": ins, "out": outs, "ms": rows}


def step_widths(spec: LayerSpec, side: str = "out") -> list[int]:
    """Widths of the fine curve used by ``round_to="auto"``: the last ``STEP_SPAN`` output
    widths (``side="in"``: input widths), a grouped layer only at multiples of its groups."""
    g = spec.conv["groups"] if spec.conv and not spec.depthwise else 1
    full = spec.out_ch if side == "out" else spec.in_ch
    return [w for w in range(max(1, full - STEP_SPAN), full + 1) if w % g == 0]


def measure_steps(spec: LayerSpec, device: torch.device, warmup: int, repeats: int,
                  tick: Callable[[], None], channels_last: bool = False, side: str = "out") -> dict[str, Any]:
    """``{"out": widths, "ms": [...]}``: the layer's latency at every output width of
    :func:`step_widths` (full input width). ``side="in"``: at every input width (full output
    width; the curve of a layer consuming the pruned channels), under the same ``"out"`` key."""
    timer = make_timer(device)
    widths = step_widths(spec, side)
    out = []
    with torch.inference_mode():
        for w in widths:
            cin, cout = (spec.in_ch, w) if side == "out" else (w, spec.out_ch)
            layer, x = build_layer(spec, cin, cout, device, channels_last)
            out.append(median_ms(lambda layer=layer, x=x: layer(x), timer, warmup, repeats))
            tick()
    return {"out": widths, "ms": out}


def table_key(model: nn.Module, in_shape: tuple[int, ...], device: torch.device, threads: int,
              channels_last: bool = False) -> dict[str, Any]:
    """What a table depends on: device (name), threads (CPU), batch size, architecture and
    input shape (a hash of the model's text form), torch version, and NHWC when measured so."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    arch = hashlib.sha1((repr(model) + repr(tuple(in_shape[1:]))).encode()).hexdigest()[:16]
    return {"format": TABLE_FORMAT, "device": str(device), "device_name": name, "threads": threads if device.type == "cpu" else None,
            "batch_size": int(in_shape[0]), "model": type(model).__name__, "arch": arch,
            "input_shape": list(in_shape), "torch": torch.__version__,
            **({"memory_format": "channels_last"} if channels_last else {})}


def cache_path(key: dict[str, Any], folder: str | Path | None = None) -> Path:
    """The JSON file of a table ``key`` (under ``cache_dir()/latency`` by default)."""
    from ..paths import cache_dir

    base = Path(folder) if folder is not None else cache_dir() / "latency"
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return base / f"{key['model']}_b{key['batch_size']}_{digest}.json"


def empty_table(key: dict[str, Any]) -> dict[str, Any]:
    """A table with nothing measured yet (its sections, see :func:`load_table`)."""
    return {"key": key, "layers": {}, "steps": {}, "steps_in": {}, "whole": {}}


def load_table(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    """The cached table at ``path`` (empty sections when missing, stale or unreadable; a
    section added since it was written is empty, and measured on first use)."""
    empty = empty_table(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return empty
    if data.get("key") != key:
        return empty
    return {**empty, **data}


def save_table(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def check_device(device: str | torch.device, threads: int | None) -> tuple[torch.device, int]:
    """``(device, threads)`` checked: CUDA must be available, threads >= 1 (default: torch's)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ToolkitError(f"device must be 'cpu' or 'cuda' (optionally 'cuda:N'); got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ToolkitError(f"latency models are measured on 'cpu' or 'cuda'; got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ToolkitError("device='cuda' but CUDA is not available here; use device='cpu'")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ToolkitError(f"threads must be an integer >= 1 or None; got {threads!r}")
    return dev, int(threads if threads is not None else torch.get_num_threads())


def flat_multiple(widths: list[int], ms: list[float], candidates: Iterable[int], tol: float) -> int:
    """The largest candidate multiple ``m`` at which latency is flat between multiples: for
    widths ``w`` not a multiple of ``m``, rounding ``w`` up to the next multiple costs at most
    ``tol`` of the full-width latency (median over ``w``). 1 when none is flat."""
    t = dict(zip(widths, ms, strict=True))
    full = max(widths)
    best = 1
    for m in sorted(candidates):
        gaps = [t[math.ceil(w / m) * m] - t[w] for w in widths
                if w % m and math.ceil(w / m) * m in t and math.ceil(w / m) * m <= full]
        if gaps and statistics.median(gaps) <= tol * t[full]:
            best = m
    return best
