"""Small helpers that let the same training/evaluation code run alone or under ``torchrun``.

Nothing here starts a process group by itself except :func:`init_from_env`, which the
``python -m agentic_toolkit.cli.finetune`` entry point calls. Everything else only asks whether a
group is already running, so single-process use pays nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is running with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0, the only process that prints, shows progress bars and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum a short list of numbers over all ranks (returned unchanged when not distributed)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def init_from_env() -> torch.device:
    """Start the process group when launched by ``torchrun`` and return this rank's device.

    Backend: ``nccl`` when CUDA is available (one GPU per local rank), ``gloo`` on CPU.
    Without ``torchrun``'s environment (``WORLD_SIZE`` unset or 1) nothing is started.
    """
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return device


def shutdown() -> None:
    """Destroy the process group if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Every ``world``-th index starting at ``rank``, in order, without padding.

    Unlike :class:`~torch.utils.data.DistributedSampler` it never repeats samples to even out
    the shards, so sums reduced over ranks count each evaluation sample exactly once.
    """

    def __init__(self, length: int, rank: int, world: int):
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


def is_sharded(loader: object) -> bool:
    """Whether ``loader`` yields only this rank's part of the data."""
    sampler = getattr(loader, "sampler", None)
    return isinstance(sampler, (DistributedSampler, ShardSampler))


def shard_loader(loader: DataLoader, *, train: bool, seed: int = 0) -> DataLoader:
    """Rebuild ``loader`` so that this rank sees only its share of the data.

    Training loaders get a :class:`DistributedSampler` (shuffled if the original was; call
    ``sampler.set_epoch(epoch)`` each epoch); evaluation loaders a :class:`ShardSampler`.
    The per-process batch size is kept, so the global batch is ``batch_size * world_size``.
    A loader that is already sharded, or not a map-style DataLoader, is returned as is.
    """
    if not is_distributed() or is_sharded(loader) or not isinstance(loader, DataLoader):
        return loader
    if loader.batch_size is None:  # a custom batch_sampler: we cannot re-shard it safely
        return loader
    dataset = loader.dataset
    if train:
        sampler: Sampler[int] = DistributedSampler(
            dataset,
            shuffle=isinstance(loader.sampler, RandomSampler),
            seed=seed,
            drop_last=loader.drop_last,
        )
    else:
        sampler = ShardSampler(len(dataset), rank(), world_size())
    return DataLoader(
        dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )
