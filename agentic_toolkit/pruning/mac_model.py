"""Exact MACs of a pruned model from its layer widths, without building it.

The base model is profiled once (:func:`agentic_toolkit.profile_macs`, default
convention). Every counted row scales with the widths pruning changes:

- convolution: ``MACs = out elements x (C_in / groups) x kernel`` -> scales with
  ``C_out'/C_out x C_in'/C_in`` (depthwise: with ``C'/C`` once, as ``groups`` follows ``C``);
- linear: with ``out'/out x in'/in``;
- attention (Q·Kᵀ and A·V, counted on the attention module itself): with the attention
  width, i.e. the pruned qkv width ``qkv_out'/qkv_out``;
- anything else: unchanged.

All arithmetic is on Python integers, so a prediction equals the profile of the pruned
model exactly (tests check this on every supported architecture).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

Key = tuple[str, bool]  # (layer or parameter name, output dimension?)


@dataclass
class _Row:
    name: str
    macs: int
    keys: tuple[Key, ...]


class MacModel:
    """Predict total MACs from per-dimension widths (see module docstring)."""

    def __init__(self, model: nn.Module, layers, total_macs: int, sizes: dict[Key, int], prunable: set[Key]):
        self.total_macs = int(total_macs)
        self.sizes = dict(sizes)
        modules = dict(model.named_modules())
        rows: list[_Row] = []
        constant = 0
        for name, macs in zip(layers["name"], layers["macs"], strict=True):
            macs = int(macs)
            if macs == 0:
                continue
            keys = tuple(k for k in _keys(name, modules.get(name)) if k in prunable)
            if keys:
                rows.append(_Row(name, macs, keys))
            else:
                constant += macs
        self.rows = rows
        self.constant = constant
        self.inexact = False

    def predict(self, widths: dict[Key, int]) -> int:
        """Total MACs when the dimensions in ``widths`` have the given sizes."""
        total = self.constant
        for r in self.rows:
            num, den = r.macs, 1
            for k in r.keys:
                w = widths.get(k)
                if w is None:
                    continue
                num *= w
                den *= self.sizes[k]
            q, rem = divmod(num, den)
            if rem:
                self.inexact = True
                q = (2 * num + den) // (2 * den)
            total += q
        return int(total)


def _keys(name: str, module: nn.Module | None) -> tuple[Key, ...]:
    if module is None:
        return ()
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
            return ((name, True),)
        return ((name, True), (name, False))
    if isinstance(module, nn.Linear):
        return ((name, True), (name, False))
    qkv = getattr(module, "qkv", None)
    if isinstance(qkv, nn.Linear):
        return ((f"{name}.qkv" if name else "qkv", True),)
    return ()
