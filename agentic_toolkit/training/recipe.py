"""The fine-tuning recipe: optimizer, schedule, regularisation and distillation settings.

A :class:`Recipe` is a small validated, frozen dataclass. :func:`~agentic_toolkit.finetune`
takes one (``recipe=``) and no keyword of the same names: change a field with
``recipe.replace(...)``. Presets: ``Recipe.preset("cifar" | "imagenet_cnn" | "imagenet_vit")``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ToolkitError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class Recipe:
    """How to fine-tune: epochs, optimizer, learning-rate schedule, regularisation, distillation.

    Args:
        epochs: number of passes over the training loader (required).
        lr: peak learning rate, reached after ``warmup_epochs`` of linear warm-up.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adamw"``.
        schedule: ``"cosine"``, ``"linear"`` decay to 0, or ``"constant"`` (per step).
        warmup_epochs: linear warm-up length, in ``[0, epochs]``.
        weight_decay: applies to weights only (never biases or normalisation parameters).
        momentum: SGD momentum, in ``[0, 1)``.
        label_smoothing: of the cross-entropy term, in ``[0, 1)``.
        kd_alpha, kd_temperature: with a teacher the loss is
            ``(1 - kd_alpha) * CE + kd_alpha * T^2 * KL(teacher_T || student_T)``; unused without one.
        batch_size: the global batch the ``lr`` is meant for, or None. :func:`finetune` does
            not read it (the loader sets the batch); :meth:`scaled` applies the linear scaling
            rule for another batch, and ``agentic-toolkit finetune --recipe`` uses it as ``--batch-size``.

    Bad values raise :class:`~agentic_toolkit.errors.ToolkitError` naming the field.

    Example:
        >>> from agentic_toolkit import Recipe
        >>> r = Recipe.preset("cifar").replace(epochs=2, lr=0.05)
        >>> r.epochs, r.lr, r.optimizer
        (2, 0.05, 'sgd')
        >>> r.scaled(256).lr
        0.1
        >>> Recipe(epochs=1, kd_alpha=1.5)
        Traceback (most recent call last):
        ...
        agentic_toolkit.errors.ToolkitError: kd_alpha must be in [0, 1], got 1.5
    """

    epochs: int
    lr: float = 0.01
    optimizer: str = "sgd"
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    label_smoothing: float = 0.0
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        _validate(self)
        # plain Python numbers (numpy scalars in, JSON-ready out)
        for name in FLOAT_FIELDS:
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "epochs", int(self.epochs))
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", int(self.batch_size))

    # --- presets ------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **changes: Any) -> Recipe:
        """A named recipe (see :data:`PRESETS`), optionally with some fields changed.

        - ``"cifar"``: the settings of this repository's CIFAR-10 studies
          (``reproduce.adaptation`` and ``reproduce.kd``): SGD momentum 0.9, lr 0.01,
          batch 128, per-step cosine, weight decay 5e-4, KD alpha 0.5 at T = 4; 10 epochs as
          in the README's fine-tuning example.
        - ``"imagenet_cnn"``: the paper's CNN recipe as the README states it (SGD, lr 0.08,
          batch 1024, 100 epochs) with the README's torchrun example for the rest (momentum
          0.9, weight decay 1e-4, cosine, 5 warm-up epochs, KD alpha 0.5 at T = 4); label
          smoothing 0.1 as in torchvision's reference ImageNet recipe (the README does not say).
        - ``"imagenet_vit"``: the DeiT recipe (Touvron et al., 2021, "Training data-efficient
          image transformers"; the README gives no ViT recipe): AdamW, lr 5e-4 * batch / 512
          (1e-3 at batch 1024), weight decay 0.05, 5 warm-up epochs, cosine, label smoothing
          0.1, 300 epochs; DeiT's soft-distillation settings (alpha 0.1, T = 3). DeiT's
          strong augmentation (RandAugment, Mixup/CutMix, random erasing) is data-side and
          not part of a Recipe.
        """
        try:
            fields = PRESETS[name]
        except (KeyError, TypeError):
            raise ToolkitError(f"unknown recipe preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return cls.from_dict({**fields, **changes})

    # --- copies and conversions -------------------------------------------------------
    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (validated)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def scaled(self, batch_size: int) -> Recipe:
        """The linear scaling rule: ``lr * batch_size / self.batch_size`` at ``batch_size``."""
        if not _is_int(batch_size) or batch_size < 1:
            raise ToolkitError(f"batch_size must be a positive integer, got {batch_size!r}")
        if self.batch_size is None:
            raise ToolkitError("this recipe has no reference batch_size to scale the lr from")
        return self.replace(lr=self.lr * batch_size / self.batch_size, batch_size=batch_size)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain (JSON-ready) dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build from a dict such as :meth:`to_dict` returns; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ToolkitError(f"a recipe must be a dict of fields, got {type(data).__name__}")
        _check_names(data)
        if "epochs" not in data:
            raise ToolkitError("a recipe needs 'epochs'")
        return cls(**dict(data))

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:
        """One line, e.g. ``100 epochs, sgd lr 0.08 (batch 1024) momentum 0.9, cosine ...``."""
        opt = f"{self.optimizer} lr {self.lr:g}"
        if self.batch_size is not None:
            opt += f" (batch {self.batch_size})"
        if self.optimizer == "sgd":
            opt += f" momentum {self.momentum:g}"
        sched = self.schedule + (f" after {self.warmup_epochs:g} warm-up epochs" if self.warmup_epochs else "")
        parts = [f"{self.epochs} epochs", opt, sched, f"weight decay {self.weight_decay:g}"]
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        parts.append(f"KD alpha {self.kd_alpha:g} T {self.kd_temperature:g} (with a teacher)")
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"Recipe({self.summary()})"


#: Field values of the named presets (see :meth:`Recipe.preset` for their sources).
PRESETS: dict[str, dict[str, Any]] = {
    "cifar": dict(epochs=10, lr=0.01, optimizer="sgd", schedule="cosine", warmup_epochs=0.0,
                  weight_decay=5e-4, momentum=0.9, label_smoothing=0.0, kd_alpha=0.5,
                  kd_temperature=4.0, batch_size=128),
    "imagenet_cnn": dict(epochs=100, lr=0.08, optimizer="sgd", schedule="cosine", warmup_epochs=5.0,
                         weight_decay=1e-4, momentum=0.9, label_smoothing=0.1, kd_alpha=0.5,
                         kd_temperature=4.0, batch_size=1024),
    "imagenet_vit": dict(epochs=300, lr=5e-4 * 1024 / 512, optimizer="adamw", schedule="cosine",
                         warmup_epochs=5.0, weight_decay=0.05, momentum=0.9, label_smoothing=0.1,
                         kd_alpha=0.1, kd_temperature=3.0, batch_size=1024),
}

FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))
FLOAT_FIELDS = ("lr", "warmup_epochs", "weight_decay", "momentum", "label_smoothing", "kd_alpha",
                "kd_temperature")


def _check_names(data: Mapping[str, Any]) -> None:
    unknown = sorted(k for k in data if k not in FIELDS)
    if unknown:
        raise ToolkitError(f"unknown recipe field(s) {unknown}; the fields are {list(FIELDS)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ToolkitError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _validate(r: Recipe) -> None:
    """Raise :class:`ToolkitError` for the first invalid field of ``r``."""
    if not _is_int(r.epochs) or r.epochs < 1:
        raise ToolkitError(f"epochs must be a positive integer, got {r.epochs!r}")
    if not _real("lr", r.lr) > 0:
        raise ToolkitError(f"lr must be > 0, got {r.lr!r}")
    if not 0.0 <= _real("kd_alpha", r.kd_alpha) <= 1.0:
        raise ToolkitError(f"kd_alpha must be in [0, 1], got {r.kd_alpha!r}")
    if not _real("kd_temperature", r.kd_temperature) > 0:
        raise ToolkitError(f"kd_temperature must be > 0, got {r.kd_temperature!r}")
    if not 0.0 <= _real("label_smoothing", r.label_smoothing) < 1.0:
        raise ToolkitError(f"label_smoothing must be in [0, 1), got {r.label_smoothing!r}")
    if not 0 <= _real("warmup_epochs", r.warmup_epochs) <= r.epochs:
        raise ToolkitError(f"warmup_epochs must be in [0, epochs={r.epochs}], got {r.warmup_epochs!r}")
    if r.optimizer not in OPTIMIZERS:
        raise ToolkitError(f"optimizer must be one of {OPTIMIZERS}, got {r.optimizer!r}")
    if r.schedule not in SCHEDULES:
        raise ToolkitError(f"schedule must be one of {SCHEDULES}, got {r.schedule!r}")
    if not _real("weight_decay", r.weight_decay) >= 0:
        raise ToolkitError(f"weight_decay must be >= 0, got {r.weight_decay!r}")
    if not 0.0 <= _real("momentum", r.momentum) < 1.0:
        raise ToolkitError(f"momentum must be in [0, 1), got {r.momentum!r}")
    bs = r.batch_size
    if bs is not None and (not _is_int(bs) or bs < 1):
        raise ToolkitError(f"batch_size must be a positive integer or None, got {bs!r}")


def resolve_recipe(recipe: Recipe | str | Mapping[str, Any] | None) -> Recipe:
    """The recipe :func:`finetune` runs: ``recipe`` itself, a preset by name, or a dict of fields."""
    if recipe is None:
        raise ToolkitError("finetune needs a recipe: Recipe(epochs=N, ...), a preset name such as "
                           "'cifar', or Recipe.preset('cifar').replace(epochs=N)")
    if isinstance(recipe, str):
        return Recipe.preset(recipe)
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(recipe)
    if not isinstance(recipe, Recipe):
        raise ToolkitError(f"recipe must be a Recipe, a preset name or a dict, got {type(recipe).__name__}")
    return recipe
