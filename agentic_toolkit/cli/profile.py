"""``agentic-toolkit profile MODEL``: print a model's MAC profile (text or one JSON object)."""

from __future__ import annotations

import argparse
import json
import re

import torch.nn as nn

from ..errors import ToolkitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name: any timm model or cifar_resnet20/32/44/56")
    parser.add_argument(
        "--input-size", default=None, metavar="N,C,H,W",
        help="input shape, e.g. 1,3,224,224 (default: the model's own input size)",
    )
    parser.add_argument("--convention", choices=("macs", "torch_pruning"), default="macs",
                        help="macs: conv/linear/matmul/attention MACs (default); torch_pruning: "
                             "torch_pruning.utils.count_ops_and_params")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--layers", action="store_true", help="with --json: include per-layer rows")
    parser.add_argument("--max-rows", type=int, default=20, help="layers in the text table (default 20)")


def parse_input_size(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` or ``"1x3x224x224"`` -> ``(1, 3, 224, 224)``."""
    parts = [p for p in re.split(r"[,x×\s]+", text.strip()) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ToolkitError(f"--input-size must look like 1,3,224,224 (positive integers), got {text!r}")
    return tuple(int(p) for p in parts)


def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """The model's native input: timm's pretrained_cfg input size, 32x32 for CIFAR ResNets."""
    spec = getattr(model, "toolkit_spec", {}) or {}
    if str(spec.get("name", "")).startswith("cifar_"):
        return (1, 3, 32, 32)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    return (1, *size) if size else (1, 3, 224, 224)


def run(args: argparse.Namespace) -> int:
    from ..models import create_model
    from ..profiling.profile import profile_macs

    size = parse_input_size(args.input_size) if args.input_size else None
    model = create_model(args.model)
    profile = profile_macs(model, input_size=size or default_input_size(model),
                           convention=args.convention)
    if args.json:
        print(json.dumps(profile.to_dict(layers=args.layers)))
    else:
        print(profile.summary(max_rows=args.max_rows))
    return 0
