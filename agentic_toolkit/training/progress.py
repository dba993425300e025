"""Progress bars of :func:`~agentic_toolkit.finetune`: one per run, one per epoch (rank 0 only)."""

from __future__ import annotations


class EpochProgress:
    """Epoch and batch bars on rank 0 (no-ops when silenced)."""

    def __init__(self, show: bool, epochs: int, start_epoch: int):
        self.show, self.epochs, self.batch = show, epochs, None
        if show:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self.bar = tqdm(total=epochs, initial=start_epoch, desc="finetune", unit="epoch")

    def write(self, text: str) -> None:
        if self.show:
            self.bar.write(text)

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self.show:
            self.batch = self._tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="batch", leave=False)

    def end_batches(self) -> None:
        if self.batch is not None:
            self.batch.close()
            self.batch = None

    def end_epoch(self, row: dict[str, float], with_val: bool) -> None:
        if self.show:
            self.bar.update(1)
            post = {"loss": f"{row['loss']:.4f}", "train": f"{row['train_top1']:.2f}"}
            if with_val:
                post["val"] = f"{row['val_top1']:.2f}"
            self.bar.set_postfix(post)

    def close(self) -> None:
        self.end_batches()
        if self.show:
            self.bar.close()
