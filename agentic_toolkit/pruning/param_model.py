"""Exact parameter count of a pruned model from its layer widths, without building it.

Pruning a channel removes a slice of every parameter with that channel dimension, so each
parameter's element count scales with the widths of the dimensions pruning changes (the
same widths as :class:`~agentic_toolkit.pruning.mac_model.MacModel`, from
``PrunePlan.widths``):

- convolution weight: with ``C_out'/C_out x C_in'/C_in`` (depthwise: ``C'/C`` once, as
  ``groups`` follows ``C``); linear weight: with ``out'/out x in'/in``;
- a bias, a norm's affine weight/bias and any other 1-D parameter of a pruned layer: with
  its output width;
- a bare parameter that is itself a member of a channel group (ViT ``cls_token`` and
  ``pos_embed``, ConvNeXt's layer scale ``gamma``): with its own width;
- everything else: unchanged.

The arithmetic is on Python integers, so a prediction equals
``sum(p.numel() for p in pruned.parameters())`` exactly (tests check this); parameters
the rules cannot place are listed in ``approximate`` (counted as unchanged).
"""

from __future__ import annotations

import torch.nn as nn

from .mac_model import Key, _keys, scale_macs


class ParamModel:
    """Predict the parameter count from per-dimension widths (see module docstring)."""

    def __init__(self, model: nn.Module, sizes: dict[Key, int], prunable: set[Key]):
        self.sizes = dict(sizes)
        self.prunable = {k for k in prunable if k in self.sizes}
        self.terms: list[tuple[int, tuple[Key, ...]]] = []
        self.approximate: list[str] = []
        self.constant = 0
        seen: set[int] = set()
        for name, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                if id(p) in seen:  # shared (tied) parameters count once, as model.parameters() does
                    continue
                seen.add(id(p))
                full = f"{name}.{pname}" if name else pname
                keys = self._param_keys(name, module, pname, full, p)
                if keys:
                    self.terms.append((p.numel(), keys))
                else:
                    self.constant += p.numel()
        self.base = self.predict(self.sizes)
        self.inexact = False

    def _own(self, *keys: Key) -> tuple[Key, ...]:
        return tuple(k for k in keys if k in self.prunable)

    def _param_keys(self, name: str, module: nn.Module, pname: str, full: str, p) -> tuple[Key, ...]:
        own = self._own((full, True), (full, False))
        if own:  # a bare parameter in a channel group
            return own
        out = self._own((name, True))
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            return self._own(*_keys(name, module)) if pname == "weight" else out  # weight, bias
        if out and p.ndim == 1 and p.numel() == self.sizes[out[0]]:
            return out  # bias, norm weight/bias, per-channel scale
        if out or self._own((name, False)):
            self.approximate.append(f"{full}: {tuple(p.shape)} of a pruned {type(module).__name__} is counted as unpruned")
        return ()

    def predict(self, widths: dict[Key, int]) -> int:
        """Total parameters when the dimensions in ``widths`` have the given sizes."""
        total = self.constant
        for numel, keys in self.terms:
            q, exact = scale_macs(numel, keys, widths, self.sizes)
            if not exact:
                self.inexact = True
            total += q
        return int(total)


def count_params(model: nn.Module) -> int:
    """``sum(p.numel() for p in model.parameters())`` (shared parameters once)."""
    return int(sum(p.numel() for p in model.parameters()))
