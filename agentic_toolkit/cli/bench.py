"""``agentic-toolkit bench MODEL_OR_DIR [--baseline MODEL_OR_DIR] [--batch-sizes 1,16] [--json]``.

A model is a name for ``create_model`` (random weights: latency does not depend on them) or a
directory written by ``save_pruned``. ``--json`` prints one JSON object whose ``results`` list
has, per batch size, ``batch_size``, ``latency_ms`` (median) and, with a baseline,
``speedup`` (``median``, ``min``, ``max``) and ``efficiency`` (speedup / MAC ratio).
``--onnx`` adds onnxruntime figures (``onnx_latency_ms``, ``onnx_speedup``, ...) and
``onnx_status``; without onnxruntime the PyTorch timings still run and stderr says why.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..errors import ToolkitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_DIR", help="model name or a save_pruned directory")
    parser.add_argument("--baseline", default=None, metavar="MODEL_OR_DIR",
                        help="time this model interleaved with the first and report speedups")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated (default 1,16)")
    parser.add_argument("--input-size", default=None,
                        help="C,H,W or a square side (default: the model's, 3,32,32 for CIFAR models)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: unchanged)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--onnx", action="store_true",
                        help="also export to ONNX and time with onnxruntime on CPU, interleaved like the "
                             "PyTorch timings (needs onnx and onnxruntime)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def load_model_or_dir(spec: str):
    """A model from a ``save_pruned`` directory or, for a name, ``create_model(name)``."""
    path = Path(spec).expanduser()
    if path.is_dir():
        try:
            from ..pruning.persist import load_pruned
        except ImportError as exc:
            raise ToolkitError(f"cannot load the pruned model directory {path}: {exc}") from exc
        return load_pruned(path).model
    if path.suffix or "/" in spec:
        raise ToolkitError(f"{spec} is neither a model name nor a pruned model directory")
    from ..models import create_model

    return create_model(spec)


def default_input_size(model) -> tuple[int, int, int]:
    """The model's own input size: timm's pretrained config, 3x32x32 for CIFAR models."""
    spec = getattr(model, "toolkit_spec", None) or {}
    if str(spec.get("name", "")).startswith("cifar_"):
        return (3, 32, 32)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size")
    return tuple(size) if size and len(size) == 3 else (3, 224, 224)


def _parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ToolkitError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ToolkitError(f"{what} must be positive integers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from ..benchmarking import benchmark

    sizes = _parse_ints(args.batch_sizes, "--batch-sizes")
    model = load_model_or_dir(args.model)
    baseline = load_model_or_dir(args.baseline) if args.baseline else None
    if args.input_size:
        dims = _parse_ints(args.input_size, "--input-size")
        shape = (3, dims[0], dims[0]) if len(dims) == 1 else dims
        if len(shape) != 3:
            raise ToolkitError(f"--input-size must be C,H,W or one side, got {args.input_size!r}")
    else:
        shape = default_input_size(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="onnx=True")  # said below, once, on stderr
        result = benchmark(
            model, (1, *shape), baseline=baseline, device=args.device, batch_sizes=sizes,
            threads=args.threads, warmup=args.warmup, repeats=args.repeats,
            channels_last=args.channels_last, measure_memory=not args.no_memory, onnx=args.onnx,
            progress=not args.json,
        )
    if args.onnx and result.onnx_status.startswith(("skipped", "failed")):
        print(f"agentic-toolkit bench: --onnx {result.onnx_status}", file=sys.stderr)
    if args.json:
        out = {"model": args.model, "baseline": args.baseline, **result.to_dict()}
        print(json.dumps(out))
    else:
        title = args.model + (f" vs baseline {args.baseline}" if args.baseline else "")
        print(title)
        print(result.summary())
    return 0
