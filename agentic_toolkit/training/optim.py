"""Optimizer and per-step learning-rate schedule of a :class:`~.recipe.Recipe`."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import ToolkitError
from .recipe import OPTIMIZERS, Recipe


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over the trainable parameters; weight decay on >1-D tensors only."""
    # No weight decay on biases and normalisation parameters (1-D tensors), as in timm.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    if not decay and not no_decay:
        raise ToolkitError("the model has no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    raise ToolkitError(f"optimizer must be one of {OPTIMIZERS}, got {recipe.optimizer!r}")


def lr_factor(schedule: str, total: int, warmup: int):
    """Multiplier of the peak lr at each step (0-based) of a ``total``-step run."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if schedule == "linear":
            return 1.0 - t
        return 1.0

    return factor


def build_scheduler(opt: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """Per-step LambdaLR: linear warm-up over ``warmup_epochs``, then ``recipe.schedule``."""
    total_steps = recipe.epochs * steps_per_epoch
    warmup_steps = round(recipe.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(recipe.schedule, total_steps, warmup_steps))
