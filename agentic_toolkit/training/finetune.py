"""Fine-tune a (pruned) model: optional distillation, AMP, checkpoints with resume, DDP.

The same :func:`finetune` runs in a notebook, in a script, and under ``torchrun`` (see
:mod:`agentic_toolkit.cli.finetune`): when a process group is running, the model is wrapped in
DistributedDataParallel, loaders are sharded, metrics are summed over ranks and only rank 0
prints, shows progress bars and writes checkpoints.

Checkpoints (``checkpoint_dir/epoch_NNNN.pt``, one per epoch) hold only tensors, numbers and
state dicts, so they load with ``torch.load(..., weights_only=True)``. They do not hold the
architecture: a pruned model must be rebuilt (e.g. with ``load_pruned``) before resuming,
and ``resume=True`` loads into that same model object.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import CheckpointError, ToolkitError
from . import distributed as D
from .evaluation import autocast, check_labels, evaluate, model_device, resolve_amp

CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.pt$")
HISTORY_COLUMNS = ["epoch", "loss", "train_top1", "val_top1", "val_top5", "val_loss", "lr", "seconds"]
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "linear", "constant")


class NonFiniteLossError(ToolkitError):
    """The training loss became NaN or infinite; training stopped before the optimizer step."""


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune`.

    ``history`` has one row per epoch: ``epoch``, ``loss`` (mean training loss, including
    the distillation term), ``train_top1``, ``val_top1``, ``val_top5``, ``val_loss`` (NaN
    without a validation loader), ``lr`` (learning rate of the epoch's last step) and
    ``seconds`` (wall time of the epoch, validation included). Accuracies are percent.
    """

    history: pd.DataFrame
    epochs: int
    seconds: float
    resumed_from: int | None = None
    checkpoint_dir: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)

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


# ----------------------------------------------------------------------------- helpers


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


def _build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    # No weight decay on biases and normalisation parameters (1-D tensors), as in timm.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    if not decay and not no_decay:
        raise ToolkitError("the model has no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ToolkitError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _lr_factor(schedule: str, total: int, warmup: int):
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


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch.Generators that drive a loader's shuffling and augmentation, in a fixed order."""
    found: list[torch.Generator] = []
    for obj in (
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(getattr(loader, "dataset", None), "generator", None),
    ):
        if isinstance(obj, torch.Generator) and all(obj is not g for g in found):
            found.append(obj)
    return found


def _rng_state(loader: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "loader": [g.get_state() for g in _loader_generators(loader)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], loader: Any) -> None:
    torch.set_rng_state(state["torch"])
    gens = _loader_generators(loader)
    if len(gens) == len(state.get("loader", [])):
        for g, s in zip(gens, state["loader"], strict=True):
            g.set_state(s)
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every complete checkpoint in ``checkpoint_dir``, oldest first."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoints intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_latest(checkpoint_dir: Path, device: torch.device) -> tuple[Path, dict[str, Any]] | None:
    for epoch, path in reversed(list_checkpoints(checkpoint_dir)):
        try:
            return path, torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # damaged file: fall back to the previous epoch
            warnings.warn(f"skipping unreadable checkpoint {path} (epoch {epoch}): {exc}", stacklevel=3)
    return None


def _kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): KL(teacher || student) on temperature-softened outputs, times T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=-1),
        F.log_softmax(teacher / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


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


def _validate_args(epochs, lr, kd_alpha, kd_temperature, label_smoothing, warmup_epochs, optimizer,
                   schedule) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ToolkitError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise ToolkitError(f"lr must be > 0, got {lr!r}")
    if not 0.0 <= kd_alpha <= 1.0:
        raise ToolkitError(f"kd_alpha must be in [0, 1], got {kd_alpha!r}")
    if not kd_temperature > 0:
        raise ToolkitError(f"kd_temperature must be > 0, got {kd_temperature!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ToolkitError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if warmup_epochs < 0 or warmup_epochs > epochs:
        raise ToolkitError(f"warmup_epochs must be in [0, epochs], got {warmup_epochs!r}")
    if optimizer not in OPTIMIZERS:
        raise ToolkitError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ToolkitError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


# ----------------------------------------------------------------------------- finetune


def finetune(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    epochs: int,
    optimizer: str = "sgd",
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    schedule: str = "cosine",
    warmup_epochs: float = 0,
    teacher: nn.Module | None = None,
    kd_alpha: float = 0.5,
    kd_temperature: float = 4.0,
    label_smoothing: float = 0.0,
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

    Loss: cross-entropy (with ``label_smoothing``); with a ``teacher`` (typically the
    unpruned model) it is ``(1 - kd_alpha) * CE + kd_alpha * T^2 * KL(teacher_T || student_T)``
    with ``T = kd_temperature``. Optimizer ``"sgd"`` (``momentum``) or ``"adamw"``; no weight
    decay on 1-D parameters (biases, norms). The learning rate follows ``schedule``
    (``cosine``, ``linear``, ``constant``) per step after ``warmup_epochs`` of linear warm-up.

    ``amp="auto"`` uses bf16 (or fp16 with loss scaling) autocast on CUDA and full precision
    on CPU. ``freeze_bn`` keeps BatchNorm statistics fixed (affine parameters still train);
    ``sync_bn`` uses SyncBatchNorm under multi-GPU DDP.

    With ``checkpoint_dir`` a checkpoint is written after every epoch (atomically);
    ``resume=True`` continues from the newest one in the same model object, restoring
    optimizer, schedule, RNG and loader-generator states and the history, so an interrupted
    run ends after the same ``epochs`` (single-process resumes are bit-exact on CPU).
    ``keep_checkpoints=k`` deletes all but the newest ``k`` files.

    Raises :class:`ToolkitError` for empty loaders, labels outside the classifier's range and
    a NaN/Inf loss (:class:`NonFiniteLossError`, naming the epoch and step).
    """
    _validate_args(epochs, lr, kd_alpha, kd_temperature, label_smoothing, warmup_epochs, optimizer,
                   schedule)
    if resume and checkpoint_dir is None:
        raise ToolkitError("resume=True needs checkpoint_dir (where the checkpoints are)")
    if keep_checkpoints is not None and keep_checkpoints < 1:
        raise ToolkitError(f"keep_checkpoints must be >= 1 or None, got {keep_checkpoints!r}")
    distributed = D.is_distributed()
    main = D.is_main_process()
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
    opt = _build_optimizer(model, optimizer, lr, weight_decay, momentum)
    total_steps = epochs * steps_per_epoch
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(schedule, total_steps, warmup_steps))

    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    history: list[dict[str, float]] = []
    start_epoch, resumed_from = 0, None
    if folder is not None:
        existing = list_checkpoints(folder)
        if existing and not resume:
            raise ToolkitError(
                f"{folder} already holds checkpoints (up to epoch {existing[-1][0]}). Pass "
                "resume=True to continue that run, or use an empty checkpoint_dir."
            )
        loaded = _load_latest(folder, dev) if resume else None
        if loaded is not None:
            path, ckpt = loaded
            if ckpt.get("epochs") != epochs or ckpt.get("steps_per_epoch") != steps_per_epoch:
                raise CheckpointError(
                    f"{path} belongs to a run of {ckpt.get('epochs')} epochs x "
                    f"{ckpt.get('steps_per_epoch')} steps; this call has {epochs} x {steps_per_epoch}. "
                    "Resume with the same epochs and data, or start in a new checkpoint_dir."
                )
            try:
                model.load_state_dict(ckpt["model"])
                opt.load_state_dict(ckpt["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise CheckpointError(
                    f"{path} does not fit this model/optimizer. Resume needs the same (identically "
                    f"pruned) model as the interrupted run. Details: {str(exc)[:500]}"
                ) from exc
            sched.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            _set_rng_state(ckpt["rng"], train_loader)
            history = [dict(row) for row in ckpt["history"]]
            start_epoch = resumed_from = int(ckpt["epoch"])
        if main:
            folder.mkdir(parents=True, exist_ok=True)

    show = progress and main
    if show:
        from tqdm.auto import tqdm

        epoch_bar = tqdm(total=epochs, initial=start_epoch, desc="finetune", unit="epoch")
        if resumed_from is not None:
            epoch_bar.write(f"resumed from {folder} at epoch {resumed_from}/{epochs}")
    t_start = time.perf_counter()
    # Known up front for toolkit/timm classifiers, so bad labels are caught before the first
    # forward pass (which would already update BatchNorm statistics); else after it.
    num_classes = getattr(model, "num_classes", None)
    num_classes = num_classes if isinstance(num_classes, int) and num_classes > 0 else None

    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        _set_train_mode(model, freeze_bn)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.float64, device=dev)
        seen = 0
        last_lr = opt.param_groups[0]["lr"]
        batch_bar = (
            tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
            if show else None
        )
        for step, (x, y) in enumerate(train_loader, 1):
            where = f"training data (epoch {epoch}, step {step})"
            if num_classes is not None:
                check_labels(y, num_classes, where)
            x = x.to(dev, non_blocking=True, memory_format=fmt)
            y_dev = y.to(dev, non_blocking=True)
            with autocast(dev, amp_dtype):
                logits = net(x)
                t_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
            logits = logits.float()
            if num_classes != logits.shape[-1]:
                num_classes = logits.shape[-1]
                check_labels(y, num_classes, where)
            loss = F.cross_entropy(logits, y_dev, label_smoothing=label_smoothing)
            if t_logits is not None:
                if t_logits.shape != logits.shape:
                    raise ToolkitError(
                        f"teacher outputs {tuple(t_logits.shape)} but the model {tuple(logits.shape)}: "
                        "the teacher must predict the same classes"
                    )
                loss = (1.0 - kd_alpha) * loss + kd_alpha * _kd_loss(logits, t_logits.float(), kd_temperature)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"non-finite training loss ({loss_value}) at epoch {epoch}, step {step} of "
                    f"{steps_per_epoch}; stopped before the optimizer step. Lower lr (now "
                    f"{opt.param_groups[0]['lr']:.3g}), check the inputs for NaN/Inf, or set amp=False."
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            last_lr = opt.param_groups[0]["lr"]
            sched.step()
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(-1) == y_dev).sum()
            seen += len(y)
            if batch_bar is not None:
                batch_bar.update(1)
                if step % 10 == 0 or step == steps_per_epoch or dev.type == "cpu":
                    batch_bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}",
                                          acc=f"{100 * float(correct) / seen:.2f}", lr=f"{last_lr:.3g}")
        if batch_bar is not None:
            batch_bar.close()
        totals = D.all_reduce_sum([float(loss_sum), float(correct), float(seen)], dev)
        row = {
            "epoch": epoch,
            "loss": totals[0] / totals[2],
            "train_top1": 100.0 * totals[1] / totals[2],
            "val_top1": float("nan"),
            "val_top5": float("nan"),
            "val_loss": float("nan"),
            "lr": float(last_lr),
        }
        if val_loader is not None:
            metrics = evaluate(model, val_loader, device=dev, amp=amp, channels_last=channels_last)
            row.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if folder is not None:
            if main:
                _save_checkpoint(
                    folder / f"epoch_{epoch:04d}.pt",
                    {
                        "format": 1,
                        "epoch": epoch,
                        "epochs": epochs,
                        "steps_per_epoch": steps_per_epoch,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        "rng": _rng_state(train_loader),
                        "history": history,
                    },
                )
                if keep_checkpoints is not None:
                    for _, old in list_checkpoints(folder)[:-keep_checkpoints]:
                        old.unlink(missing_ok=True)
            D.barrier()
        if show:
            epoch_bar.update(1)
            post = {"loss": f"{row['loss']:.4f}", "train": f"{row['train_top1']:.2f}"}
            if val_loader is not None:
                post["val"] = f"{row['val_top1']:.2f}"
            epoch_bar.set_postfix(post)
    if show:
        epoch_bar.close()

    if distributed and sync_bn:
        model = _revert_sync_bn(model)
    model.eval()
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    return FinetuneResult(
        history=frame,
        epochs=len(frame),
        seconds=time.perf_counter() - t_start,
        resumed_from=resumed_from,
        checkpoint_dir=folder,
        model=model,
    )
