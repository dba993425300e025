"""Save and load pruned models without pickle.

A saved model is a directory:

- ``strategy.json``: the strategy that produced it;
- ``history.json``: torch-pruning's pruning history (root layer, output pruning?, indices);
- ``meta.json``: how to rebuild the unpruned model (``toolkit_spec``), the input shape,
  attention head counts and the measured numbers;
- ``model.safetensors``: the pruned weights and buffers.

Loading rebuilds the base architecture (``create_model`` from ``toolkit_spec``, or a
``base_model`` you pass), replays the history through a fresh dependency graph and loads
the weights strictly; nothing is unpickled.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, ToolkitError
from ..version import __version__
from .apply import PruneResult, layer_widths
from .attention import find_attention, sync_attention_attributes
from .groups import build_graph
from .strategy import Strategy

FORMAT = 1
FILES = ("strategy.json", "history.json", "meta.json", "model.safetensors")


def save_pruned(path: str | Path, result: PruneResult) -> Path:
    """Write ``result`` to the directory ``path`` (created; existing files are replaced)."""
    from safetensors.torch import save_model

    if not isinstance(result, PruneResult):
        raise ToolkitError(f"save_pruned needs a PruneResult, got {type(result).__name__}")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    spec = getattr(result.model, "toolkit_spec", None)
    meta = {
        "format": FORMAT,
        "toolkit_version": __version__,
        "toolkit_spec": spec if isinstance(spec, dict) else None,
        "model_class": type(result.model).__name__,
        "input_shape": list(result.input_shape),
        "num_heads": dict(result.num_heads),
        "macs": int(result.macs),
        "params": int(result.params),
        "base_macs": int(result.base_macs),
        "base_params": int(result.base_params),
        "predicted_macs": int(result.predicted_macs),
        "notes": list(result.notes),
    }
    history = [[str(n), bool(o), [int(i) for i in idx]] for n, o, idx in result.history]
    (out / "strategy.json").write_text(result.strategy.to_json(indent=2) + "\n")
    (out / "history.json").write_text(json.dumps({"format": FORMAT, "history": history}) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    save_model(result.model, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is {path.parent} a directory written by save_pruned?") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def _base_model(meta: dict, base_model: nn.Module | str | None) -> nn.Module:
    from ..models import create_model

    if isinstance(base_model, nn.Module):
        return copy.deepcopy(base_model)
    if isinstance(base_model, str):
        return create_model(base_model, num_classes=(meta.get("toolkit_spec") or {}).get("num_classes"))
    spec = meta.get("toolkit_spec")
    if not spec or not spec.get("name"):
        raise ToolkitError(
            f"the saved model ({meta.get('model_class')}) was not built by agentic_toolkit.create_model, "
            "so its base architecture is unknown: pass base_model=<an unpruned instance> or a model name"
        )
    return create_model(spec["name"], num_classes=spec.get("num_classes"), **(spec.get("kwargs") or {}))


def load_pruned(path: str | Path, base_model: nn.Module | str | None = None) -> PruneResult:
    """Rebuild a model saved by :func:`save_pruned` (in eval mode).

    ``base_model``: an unpruned instance (or model name) to rebuild from, required when
    the model was not created with :func:`agentic_toolkit.create_model`.
    """
    from safetensors.torch import load_model

    from ..profiling.profile import profile_macs

    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"no saved pruned model at {root} (expected a directory with {', '.join(FILES)})")
    meta = _read_json(root / "meta.json")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{root}: unsupported format {meta.get('format')!r} (this toolkit reads {FORMAT})")
    strategy = Strategy.from_json((root / "strategy.json").read_text())
    history = _read_json(root / "history.json").get("history", [])
    model = _base_model(meta, base_model)
    shape = tuple(int(s) for s in meta["input_shape"])
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros(shape, dtype=dtype)
    params = dict(model.named_parameters())
    attention = find_attention(model)
    tables = [params[n] for a in attention for n in a.head_tables if n in params]
    requires_grad = {n: p.requires_grad for n, p in params.items()}
    base_widths = layer_widths(model)
    graph = build_graph(model, x, tables)
    try:
        with torch.no_grad():
            graph.load_pruning_history([[n, o, list(idx)] for n, o, idx in history])
    except Exception as exc:
        raise CheckpointError(
            f"cannot replay the pruning history of {root} on {type(model).__name__}: {exc}. "
            "Is base_model the same unpruned architecture?"
        ) from exc
    for n, p in model.named_parameters():
        p.requires_grad_(requires_grad.get(n, True))
    sync_attention_attributes(
        model, {k: int(v) for k, v in meta.get("num_heads", {}).items()}, {a.name: a.head_dim for a in attention}
    )
    try:
        missing, unexpected = load_model(model, str(root / "model.safetensors"), strict=False)
    except Exception as exc:  # shape mismatch, corrupt file
        raise CheckpointError(f"cannot load {root / 'model.safetensors'}: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{root / 'model.safetensors'} does not fit the rebuilt model: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    model.eval()
    profile = profile_macs(model, example_inputs=x)
    return PruneResult(
        model=model,
        strategy=strategy,
        macs=int(profile.total_macs),
        params=int(profile.params),
        base_macs=int(meta.get("base_macs", 0)),
        base_params=int(meta.get("base_params", 0)),
        widths=layer_widths(model),
        history=history,
        predicted_macs=int(meta.get("predicted_macs", profile.total_macs)),
        input_shape=shape,
        num_heads={k: int(v) for k, v in meta.get("num_heads", {}).items()},
        notes=list(meta.get("notes", [])),
        base_widths=base_widths,
    )
