"""What :func:`~agentic_toolkit.finetune` returns: per-epoch history plus summaries and a plot."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch.nn as nn

from .recipe import Recipe

HISTORY_COLUMNS = ["epoch", "loss", "train_top1", "val_top1", "val_top5", "val_loss", "lr", "seconds"]


def _num(v: Any) -> int | float | None:
    """A plain int or float, or None for NaN (JSON has no NaN)."""
    if isinstance(v, numbers.Integral):
        return int(v)
    v = float(v)
    return None if math.isnan(v) else v


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune`.

    ``summary()`` (text), ``to_dict()`` (JSON-ready), ``to_frame()`` (the history) and
    ``plot()`` (loss and top-1 per epoch).

    Attributes:
        history: one row per epoch: ``epoch``, ``loss`` (mean training loss, including the
            distillation term), ``train_top1``, ``val_top1``, ``val_top5``, ``val_loss`` (NaN
            without a validation loader), ``lr`` (learning rate of the epoch's last step) and
            ``seconds`` (wall time of the epoch, validation included). Accuracies are percent.
        epochs: epochs in ``history`` (a resumed run included).
        seconds: wall time of this call.
        resumed_from: the checkpoint epoch a resumed run started from, else None.
        checkpoint_dir: where checkpoints were written, or None.
        model: the fine-tuned model (in eval mode).
        recipe: the :class:`Recipe` that ran.

    Example:
        >>> import pandas as pd, agentic_toolkit as at
        >>> history = pd.DataFrame([{"epoch": 1, "loss": 1.2, "train_top1": 60.0, "val_top1": 70.0,
        ...                          "val_top5": 97.0, "val_loss": 0.9, "lr": 0.01, "seconds": 12.0}])
        >>> res = at.FinetuneResult(history=history, epochs=1, seconds=12.0)
        >>> res.best_val_top1, res.best_epoch, res.to_dict()["final"]["val_top1"]
        (70.0, 1, 70.0)
    """

    history: pd.DataFrame
    epochs: int
    seconds: float
    resumed_from: int | None = None
    checkpoint_dir: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)
    recipe: Recipe | None = None

    @property
    def final(self) -> dict[str, float]:
        """Metrics of the last epoch (empty if no epoch ran)."""
        return {} if self.history.empty else self.history.iloc[-1].to_dict()

    @property
    def final_val_top1(self) -> float | None:
        v = self.final.get("val_top1")
        return None if v is None or math.isnan(v) else float(v)

    @property
    def best_epoch(self) -> int | None:
        """Epoch with the highest validation top-1 (None without validation)."""
        col = self.history.get("val_top1")
        if col is None or col.isna().all():
            return None
        return int(self.history.loc[col.idxmax(), "epoch"])

    @property
    def best_val_top1(self) -> float | None:
        col = self.history.get("val_top1")
        return None if col is None or col.isna().all() else float(col.max())

    def to_frame(self) -> pd.DataFrame:
        """The per-epoch history (a copy), one row per epoch."""
        return self.history.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: run totals, final and best metrics, the recipe and the history rows
        (NaN as None; no model)."""
        return {
            "epochs": int(self.epochs),
            "seconds": float(self.seconds),
            "resumed_from": self.resumed_from,
            "checkpoint_dir": None if self.checkpoint_dir is None else str(self.checkpoint_dir),
            "final": {k: _num(v) for k, v in self.final.items()},
            "best_epoch": self.best_epoch,
            "best_val_top1": self.best_val_top1,
            "recipe": None if self.recipe is None else self.recipe.to_dict(),
            "history": [{k: _num(v) for k, v in row.items()} for row in self.history.to_dict("records")],
        }

    def summary(self) -> str:
        """A few human-readable lines."""
        fin = self.final
        line = f"{self.epochs} epochs in {self.seconds:.0f}s"
        if self.resumed_from is not None:
            line += f" (resumed after epoch {self.resumed_from})"
        line += (
            f": final loss {fin.get('loss', float('nan')):.4f}, "
            f"train top-1 {fin.get('train_top1', float('nan')):.2f}%"
        )
        if self.final_val_top1 is not None:
            line += f", val top-1 {self.final_val_top1:.2f}%"
        if self.best_val_top1 is not None:
            line += f"; best val top-1 {self.best_val_top1:.2f}% (epoch {self.best_epoch})"
        lines = [line]
        if self.recipe is not None:
            lines.append(f"recipe: {self.recipe.summary()}")
        if self.checkpoint_dir is not None:
            lines.append(f"checkpoints: {self.checkpoint_dir}")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Loss and top-1 per epoch, side by side; returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
        else:
            ax_loss, ax_acc = ax
            fig = ax_loss.figure
        h = self.history
        ax_loss.plot(h["epoch"], h["loss"], marker="o", label="train")
        if h["val_loss"].notna().any():
            ax_loss.plot(h["epoch"], h["val_loss"], marker="o", label="val")
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_acc.plot(h["epoch"], h["train_top1"], marker="o", label="train")
        if h["val_top1"].notna().any():
            ax_acc.plot(h["epoch"], h["val_top1"], marker="o", label="val")
        ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
        for a in (ax_loss, ax_acc):
            a.legend()
            a.grid(alpha=0.3)
        fig.tight_layout()
        return fig

    def __str__(self) -> str:
        best = self.best_val_top1
        tail = f", best val top-1 {best:.2f}% (epoch {self.best_epoch})" if best is not None else ""
        fin = self.final
        return (
            f"FinetuneResult({self.epochs} epochs in {self.seconds:.0f}s, final loss "
            f"{fin.get('loss', float('nan')):.4f}, train top-1 {fin.get('train_top1', float('nan')):.2f}%"
            f"{tail})"
        )
