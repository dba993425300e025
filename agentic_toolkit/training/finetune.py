"""Fine-tune a (pruned) model: optional distillation, AMP, checkpoints with resume, DDP.

The same :func:`finetune` runs in a notebook, in a script, and under ``torchrun`` (see
:mod:`agentic_toolkit.cli.finetune`): when a process group is running, the model is wrapped in
DistributedDataParallel, loaders are sharded, metrics are summed over ranks and only rank 0
prints, shows progress bars and writes checkpoints.

The hyper-parameters form a :class:`~agentic_toolkit.training.recipe.Recipe`; checkpoint files
are handled in :mod:`.checkpoints`, the losses in :mod:`.losses`, the result in :mod:`.result`.
Checkpoints hold no architecture: a pruned model must be rebuilt (e.g. with ``load_pruned``)
before resuming, and ``resume=True`` loads into that same model object.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ToolkitError
from . import checkpoints as C
from . import distributed as D
from .checkpoints import list_checkpoints
from .evaluation import autocast, check_labels, evaluate, model_device, resolve_amp
from .losses import kd_loss, training_loss
from .optim import build_optimizer, build_scheduler
from .progress import EpochProgress
from .recipe import OPTIMIZERS, SCHEDULES, Recipe, resolve_recipe
from .result import HISTORY_COLUMNS, FinetuneResult

__all__ = [
    "HISTORY_COLUMNS", "OPTIMIZERS", "SCHEDULES", "FinetuneResult", "NonFiniteLossError", "Recipe",
    "finetune", "kd_loss", "list_checkpoints",
]


class NonFiniteLossError(ToolkitError):
    """The training loss became NaN or infinite; training stopped before the optimizer step."""


# ----------------------------------------------------------------------------- set-up helpers


def _loader_len(loader: Iterable, name: str) -> int:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise ToolkitError(f"{name} must have a length (a DataLoader over a map-style data set)") from None
    if n == 0:
        ds = getattr(loader, "dataset", None)
        size = f"{len(ds)} samples" if ds is not None and hasattr(ds, "__len__") else "no samples"
        bs = getattr(loader, "batch_size", None)
        hint = " with drop_last=True" if getattr(loader, "drop_last", False) else ""
        raise ToolkitError(
            f"{name} yields no batches ({size}, batch_size={bs}{hint}). "
            "Pass a non-empty data set or a smaller batch size."
        )
    return n


def _freeze_fixed_params(model: nn.Module) -> None:
    # CIFAR ResNet's PadShortcut uses weight.detach() in forward, so its weight never gets a
    # gradient, yet torch-pruning re-creates it as a trainable Parameter. DDP would then wait
    # forever for that gradient ("expected to have finished reduction"): mark it frozen.
    from ..models import PadShortcut

    for m in model.modules():
        if isinstance(m, PadShortcut):
            m.weight.requires_grad_(False)


def _set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()


def _revert_sync_bn(module: nn.Module) -> nn.Module:
    """Turn SyncBatchNorm layers back into BatchNorm2d (SyncBatchNorm refuses CPU inputs)."""
    if isinstance(module, nn.SyncBatchNorm):
        bn = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats).to(next(module.buffers()).device)
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        return bn
    for name, child in module.named_children():
        new = _revert_sync_bn(child)
        if new is not child:
            setattr(module, name, new)
    return module


@dataclass
class _Run:
    """Everything one fine-tuning run works with, built once by :func:`_prepare`."""

    recipe: Recipe
    model: nn.Module
    net: nn.Module  # the DDP wrapper under a process group, else the model itself
    teacher: nn.Module | None
    train_loader: Any
    val_loader: Any
    steps_per_epoch: int
    device: torch.device
    memory_format: torch.memory_format
    amp: bool | str | None
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    freeze_bn: bool
    channels_last: bool
    num_classes: int | None  # known up front for toolkit/timm classifiers, else after a forward


def _prepare(model, train_loader, val_loader, recipe: Recipe, *, teacher, amp, channels_last, freeze_bn,
             sync_bn, device, seed) -> _Run:
    """Device, sharded loaders, model/teacher placement, DDP, optimizer and schedule."""
    distributed = D.is_distributed()
    if device is None:
        if distributed and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        else:
            dev = model_device(model)
    else:
        dev = torch.device(device)
    if seed is not None:  # a resumed run then restores the checkpoint's RNG state instead
        torch.manual_seed(seed)

    train_loader = D.shard_loader(train_loader, train=True, seed=seed or 0)
    if val_loader is not None:
        val_loader = D.shard_loader(val_loader, train=False)
    steps_per_epoch = _loader_len(train_loader, "train_loader")
    if val_loader is not None:
        _loader_len(val_loader, "val_loader")

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=fmt)
    _freeze_fixed_params(model)
    if teacher is not None:
        # the teacher runs under no_grad in eval mode; its requires_grad flags are left alone
        # (freezing them would make the caller's model unprunable afterwards)
        teacher.to(dev, memory_format=fmt).eval()
    amp_dtype = resolve_amp(amp, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)

    net: nn.Module = model
    if distributed:
        if sync_bn and dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    opt = build_optimizer(model, recipe)
    sched = build_scheduler(opt, recipe, steps_per_epoch)
    num_classes = getattr(model, "num_classes", None)
    return _Run(
        recipe=recipe, model=model, net=net, teacher=teacher, train_loader=train_loader,
        val_loader=val_loader, steps_per_epoch=steps_per_epoch, device=dev, memory_format=fmt, amp=amp,
        amp_dtype=amp_dtype, scaler=scaler, opt=opt, sched=sched, freeze_bn=freeze_bn,
        channels_last=channels_last,
        num_classes=num_classes if isinstance(num_classes, int) and num_classes > 0 else None,
    )


# ----------------------------------------------------------------------------- the loop


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int):
    """One optimizer step; returns ``(loss, logits, labels on device)``, all detached."""
    where = f"training data (epoch {epoch}, step {step})"
    if run.num_classes is not None:
        check_labels(y, run.num_classes, where)
    x = x.to(run.device, non_blocking=True, memory_format=run.memory_format)
    y_dev = y.to(run.device, non_blocking=True)
    with autocast(run.device, run.amp_dtype):
        logits = run.net(x)
        t_logits = None
        if run.teacher is not None:
            with torch.no_grad():
                t_logits = run.teacher(x)
    logits = logits.float()
    if run.num_classes != logits.shape[-1]:
        run.num_classes = logits.shape[-1]
        check_labels(y, run.num_classes, where)
    r = run.recipe
    loss = training_loss(logits, y_dev, t_logits, label_smoothing=r.label_smoothing, kd_alpha=r.kd_alpha,
                         kd_temperature=r.kd_temperature)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(
            f"non-finite training loss ({loss_value}) at epoch {epoch}, step {step} of "
            f"{run.steps_per_epoch}; stopped before the optimizer step. Lower lr (now "
            f"{run.opt.param_groups[0]['lr']:.3g}), check the inputs for NaN/Inf, or set amp=False."
        )
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.opt)
    run.scaler.update()
    return loss.detach(), logits.detach(), y_dev


def _train_epoch(run: _Run, epoch: int, progress: EpochProgress) -> dict[str, float]:
    """One pass over the training loader, then validation; returns the history row."""
    t0 = time.perf_counter()
    sampler = getattr(run.train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    _set_train_mode(run.model, run.freeze_bn)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    last_lr = run.opt.param_groups[0]["lr"]
    progress.start_epoch(epoch, run.steps_per_epoch)
    for step, (x, y) in enumerate(run.train_loader, 1):
        loss, logits, y_dev = _train_step(run, x, y, epoch, step)
        last_lr = run.opt.param_groups[0]["lr"]
        run.sched.step()
        loss_sum += loss.double() * len(y)
        correct += (logits.argmax(-1) == y_dev).sum()
        seen += len(y)
        bar = progress.batch
        if bar is not None:
            bar.update(1)
            if step % 10 == 0 or step == run.steps_per_epoch or run.device.type == "cpu":
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{100 * float(correct) / seen:.2f}",
                                lr=f"{last_lr:.3g}")
    progress.end_batches()
    totals = D.all_reduce_sum([float(loss_sum), float(correct), float(seen)], run.device)
    row = {
        "epoch": epoch,
        "loss": totals[0] / totals[2],
        "train_top1": 100.0 * totals[1] / totals[2],
        "val_top1": float("nan"),
        "val_top5": float("nan"),
        "val_loss": float("nan"),
        "lr": float(last_lr),
    }
    if run.val_loader is not None:
        metrics = evaluate(run.model, run.val_loader, device=run.device, amp=run.amp,
                           channels_last=run.channels_last)
        row.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
    row["seconds"] = time.perf_counter() - t0
    return row


def _run_epochs(run: _Run, history: list[dict[str, float]], resumed_from: int | None, folder: Path | None,
                keep_checkpoints: int | None, progress: bool) -> None:
    """Train the remaining epochs, appending to ``history`` and writing a checkpoint after each."""
    main = D.is_main_process()
    epochs = run.recipe.epochs
    start_epoch = resumed_from or 0
    bars = EpochProgress(progress and main, epochs, start_epoch)
    if resumed_from is not None:
        bars.write(f"resumed from {folder} at epoch {resumed_from}/{epochs}")
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            history.append(_train_epoch(run, epoch, bars))
            if folder is not None:
                if main:
                    state = C.training_state(epoch, epochs, run.steps_per_epoch, run.model, run.opt, run.sched,
                                             run.scaler, run.train_loader, history)
                    C.write_epoch(folder, state, keep_checkpoints)
                D.barrier()
            bars.end_epoch(history[-1], run.val_loader is not None)
    finally:
        bars.close()


def _check_runtime_args(checkpoint_dir, resume: bool, keep_checkpoints: int | None) -> None:
    if resume and checkpoint_dir is None:
        raise ToolkitError("resume=True needs checkpoint_dir (where the checkpoints are)")
    if keep_checkpoints is not None and keep_checkpoints < 1:
        raise ToolkitError(f"keep_checkpoints must be >= 1 or None, got {keep_checkpoints!r}")


# ----------------------------------------------------------------------------- finetune


def finetune(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    recipe: Recipe | str | Mapping[str, Any] | None = None,
    *,
    teacher: nn.Module | None = None,
    amp: bool | str | None = "auto",
    channels_last: bool = False,
    freeze_bn: bool = False,
    sync_bn: bool = False,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    keep_checkpoints: int | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``model`` in place and return its per-epoch history.

    Every hyper-parameter (epochs, optimizer, lr, schedule, warm-up, weight decay, label
    smoothing, KD alpha and temperature) lives in ``recipe``; change one with
    ``recipe.replace(lr=...)``. Loss: cross-entropy, and with a ``teacher`` (typically the
    unpruned model) ``(1 - kd_alpha) * CE + kd_alpha * T^2 * KL(teacher_T || student_T)``.
    No weight decay on 1-D parameters (biases, norms); the learning rate follows the
    recipe's schedule per step after its linear warm-up.

    Args:
        model: the network to train (moved to ``device``; left in eval mode).
        train_loader: batches ``(images, labels)``; must have a length.
        val_loader: evaluated after every epoch (top-1, top-5, loss), or None.
        recipe: a :class:`Recipe`, a preset name (``"cifar"``, ``"imagenet_cnn"``,
            ``"imagenet_vit"``) or a dict of its fields; required.
        teacher: distil from this model (run under ``no_grad`` in eval mode), or None.
        amp: ``"auto"`` (bf16, or fp16 with loss scaling, on CUDA; full precision on CPU),
            ``"bf16"``, ``"fp16"`` or False.
        channels_last: train in the channels-last memory format.
        freeze_bn: keep BatchNorm statistics fixed (affine parameters still train).
        sync_bn: SyncBatchNorm under multi-GPU DDP.
        device: where to train; default: the model's device (the local GPU under DDP).
        checkpoint_dir: write a checkpoint there after every epoch (atomically).
        resume: continue from the newest checkpoint in ``checkpoint_dir`` into this same
            model object, restoring optimizer, schedule, RNG, loader and history, so an
            interrupted run ends after the same epochs (bit-exact on CPU in one process).
        keep_checkpoints: delete all but the newest ``k`` checkpoint files; None keeps all.
        seed: seeds torch (and the sharded sampler) before training.
        progress: show progress bars (rank 0 only).

    Returns:
        A :class:`FinetuneResult`: the history frame, ``final``, ``best_val_top1``, the recipe.

    Raises:
        ToolkitError: no or an invalid recipe, empty loaders, labels outside the classifier's
            range, or a NaN/Inf loss (:class:`NonFiniteLossError`, naming epoch and step).

    Example:
        >>> import torch, agentic_toolkit as at
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> model = at.create_model("cifar_resnet20")
        >>> recipe = at.Recipe.preset("cifar").replace(epochs=1, lr=0.05)
        >>> res = at.finetune(model, DataLoader(data, batch_size=4), recipe=recipe, progress=False)
        >>> res.epochs, list(res.history["epoch"])
        (1, [1])
    """
    recipe = resolve_recipe(recipe)
    _check_runtime_args(checkpoint_dir, resume, keep_checkpoints)
    run = _prepare(model, train_loader, val_loader, recipe, teacher=teacher, amp=amp,
                   channels_last=channels_last, freeze_bn=freeze_bn, sync_bn=sync_bn, device=device, seed=seed)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    history: list[dict[str, float]] = []
    resumed_from = None
    if folder is not None:
        history, resumed_from = C.restore(folder, resume, run.device, recipe.epochs, run.steps_per_epoch,
                                          run.model, run.opt, run.sched, run.scaler, run.train_loader)
        if D.is_main_process():
            folder.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    _run_epochs(run, history, resumed_from, folder, keep_checkpoints, progress)

    model = run.model
    if D.is_distributed() and sync_bn:
        model = _revert_sync_bn(model)
    model.eval()
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    return FinetuneResult(history=frame, epochs=len(frame), seconds=time.perf_counter() - t_start,
                          resumed_from=resumed_from, checkpoint_dir=folder, model=model, recipe=recipe)
