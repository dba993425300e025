"""A fine-tuning-aware proxy: a short distillation from the unpruned model, then held-out top-1.

:func:`~agentic_toolkit.proxy_accuracy` scores a candidate as pruned (BatchNorm re-estimated);
it ranks shapes far apart well but can miss which of two good shapes recovers better with
fine-tuning. :class:`KDProxy` fine-tunes a copy for ``steps`` batches of fixed training images
with KD from the teacher (the recipe's per-step cosine schedule over those steps), then measures
top-1 on fixed held-out batches. It costs about ``steps`` training steps per candidate, so the
agent uses it to re-rank its best few candidates (:func:`agentic_toolkit.agents.rerank.rerank_candidates`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch.nn as nn

from ..errors import ToolkitError
from .evaluation import Batch, evaluate
from .finetune import finetune
from .recipe import Recipe


@dataclass
class KDProxy:
    """Callable scorer ``f(model) -> top-1 %`` after ``len(train_batches)`` KD steps; the
    model passed in is never modified."""

    teacher: nn.Module
    train_batches: Iterable[Batch]  # a list, or a loader (iterated inside the fine-tune)
    eval_batches: list[Batch]
    recipe: Recipe = field(default_factory=lambda: Recipe.preset("cifar", epochs=1))
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.train_batches or not self.eval_batches:
            raise ToolkitError("KDProxy needs at least one training and one evaluation batch")

    @property
    def eval_images(self) -> int:
        """Number of images the top-1 is measured on (for standard errors)."""
        return sum(len(y) for _, y in self.eval_batches)

    def __call__(self, model: nn.Module) -> float:
        student = copy.deepcopy(model).train()
        finetune(student, self.train_batches, None, self.recipe, teacher=self.teacher, amp=False, seed=self.seed,
                 progress=False)
        return evaluate(student, self.eval_batches)["top1"]


def kd_proxy(teacher: nn.Module, steps: int = 100, batch_size: int = 64, eval_batches: list[Batch] | None = None,
             seed: int = 0) -> KDProxy:
    """A :class:`KDProxy` on CIFAR-10: ``steps`` batches of seeded ``train`` images (with the
    training augmentation), scored on ``eval_batches`` (default: the default evaluator's
    held-out ``val`` batches)."""
    from ..data import cifar10
    from .proxy import default_evaluator

    if steps < 1 or batch_size < 1:
        raise ToolkitError("steps and batch_size must be >= 1")
    train = list(cifar10("train", batch_size=batch_size, limit=steps * batch_size, seed=seed))
    evals = eval_batches if eval_batches is not None else default_evaluator().eval_batches
    return KDProxy(teacher, train, list(evals), seed=seed)
