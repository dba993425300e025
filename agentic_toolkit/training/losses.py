"""Training losses: cross-entropy with label smoothing, plus Hinton distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ToolkitError


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): KL(teacher || student) on temperature-softened outputs, times T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=-1),
        F.log_softmax(teacher / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def training_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    label_smoothing: float,
    kd_alpha: float,
    kd_temperature: float,
) -> torch.Tensor:
    """``CE`` alone, or ``(1 - kd_alpha) * CE + kd_alpha * kd_loss`` with teacher outputs."""
    loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    if teacher_logits is None:
        return loss
    if teacher_logits.shape != logits.shape:
        raise ToolkitError(
            f"teacher outputs {tuple(teacher_logits.shape)} but the model {tuple(logits.shape)}: "
            "the teacher must predict the same classes"
        )
    return (1.0 - kd_alpha) * loss + kd_alpha * kd_loss(logits, teacher_logits.float(), kd_temperature)
