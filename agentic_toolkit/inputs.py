"""Checks of a model and its ``example_inputs`` before they are traced, with errors that name
the mismatch (not the operator deep inside the forward pass that tripped over it).

:func:`check_model_inputs` refuses what can never work (inputs that are not tensors, a model
whose weights are on the meta device); :func:`input_mismatch` explains a failed forward pass
by comparing the first input with the model's first layer (rank, channels, dtype).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .errors import ToolkitError

EXAMPLE = "e.g. torch.randn(1, 3, 224, 224)"


def _leaves(x: Any, where: str = "example_inputs", keyword: bool = False):
    """``(where, leaf, keyword)`` of every value in nested tuples, lists and dicts (``keyword``:
    under a dict, where options such as flags may sit beside the tensors)."""
    if isinstance(x, (tuple, list)):
        for i, v in enumerate(x):
            yield from _leaves(v, f"{where}[{i}]", keyword)
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, f"{where}[{k!r}]", True)
    else:
        yield where, x, keyword


def check_model_inputs(model: nn.Module, example_inputs: Any) -> None:
    """:class:`ToolkitError` when ``example_inputs`` hold no tensor, or a positional entry that
    is not a tensor (a dict may also hold plain options), or when ``model``'s weights are on
    the meta device (nothing to prune or score)."""
    leaves = list(_leaves(example_inputs))
    if not any(isinstance(leaf, torch.Tensor) for _, leaf, _ in leaves):
        raise ToolkitError(f"example_inputs must be a tensor, a tuple or a dict of tensors ({EXAMPLE}); "
                           f"got {type(example_inputs).__name__} {example_inputs!r:.60}")
    for where, leaf, keyword in leaves:
        if not isinstance(leaf, torch.Tensor) and not keyword:
            raise ToolkitError(
                f"example_inputs must hold tensors, but {where} is a {type(leaf).__name__} ({leaf!r:.60}); "
                f"pass a tensor ({EXAMPLE}), or a tuple/dict of tensors"
            )
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise ToolkitError(
            f"{type(model).__name__}'s weights are on the meta device (no values; first: {meta[0]}): "
            "materialise it first, e.g. model.to_empty(device='cpu') then load_state_dict(...) or create_model(...)"
        )


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, kinds)), None)


def input_mismatch(model: nn.Module, example_inputs: Any) -> str:
    """Why the first input does not fit ``model``'s first layer (rank, channels, dtype), or ""."""
    first = next((leaf for _, leaf, _ in _leaves(example_inputs) if isinstance(leaf, torch.Tensor)), None)
    layer = _first_layer(model)
    if first is None or layer is None:
        return ""
    name, m = layer
    shape = tuple(first.shape)
    if isinstance(m, nn.Embedding):
        ok = not first.is_floating_point()
        return "" if ok else f"example_inputs are {first.dtype}, but the first layer ({name}, an Embedding) takes integer ids"
    weight_dtype = m.weight.dtype
    if not first.is_floating_point() and not first.is_complex():
        return f"example_inputs are {first.dtype}, but the model computes in {weight_dtype}: pass a float tensor"
    if first.dtype != weight_dtype:
        return f"example_inputs are {first.dtype}, but the model's weights are {weight_dtype}"
    if isinstance(m, nn.Linear):
        return "" if shape and shape[-1] == m.in_features else (
            f"example_inputs have shape {shape}, but the first layer ({name}) takes {m.in_features} features in its last dimension")
    dims = 1 if isinstance(m, nn.Conv1d) else 3 if isinstance(m, nn.Conv3d) else 2
    if len(shape) != dims + 2:
        axes = {1: "length", 2: "height, width", 3: "depth, height, width"}[dims]
        return (f"example_inputs have {len(shape)} dimensions {shape}, but the first layer ({name}) takes "
                f"{dims + 2}: (batch, channels, {axes})")
    if shape[1] != m.in_channels:
        return (f"example_inputs have {shape[1]} channels (shape {shape}), but the first layer ({name}) "
                f"takes {m.in_channels}")
    return ""


__all__ = ["check_model_inputs", "input_mismatch"]
