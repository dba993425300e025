"""Per-epoch fine-tuning checkpoints: atomic writes, listing, resume, RNG state.

A checkpoint (``checkpoint_dir/epoch_NNNN.pt``) holds only tensors, numbers and state dicts,
so it loads with ``torch.load(..., weights_only=True)``. It does not hold the architecture:
a pruned model must be rebuilt (e.g. with ``load_pruned``) before resuming into it.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, ToolkitError

CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.pt$")
FORMAT = 1


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


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.pt"


# ----------------------------------------------------------------------------- RNG state


def loader_generators(loader: Any) -> list[torch.Generator]:
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


def rng_state(loader: Any) -> dict[str, Any]:
    """Global torch (and CUDA) RNG state plus the loader's generators."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "loader": [g.get_state() for g in loader_generators(loader)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], loader: Any) -> None:
    """Restore what :func:`rng_state` saved (loader/CUDA parts only where they still fit)."""
    torch.set_rng_state(state["torch"])
    gens = loader_generators(loader)
    if len(gens) == len(state.get("loader", [])):
        for g, s in zip(gens, state["loader"], strict=True):
            g.set_state(s)
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- files


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoints intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_latest(checkpoint_dir: Path, device: torch.device) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint (damaged files are skipped with a warning), or None."""
    for epoch, path in reversed(list_checkpoints(checkpoint_dir)):
        try:
            return path, torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # damaged file: fall back to the previous epoch
            warnings.warn(f"skipping unreadable checkpoint {path} (epoch {epoch}): {exc}", stacklevel=4)
    return None


def training_state(
    epoch: int, epochs: int, steps_per_epoch: int, model: nn.Module, opt: torch.optim.Optimizer,
    sched: Any, scaler: torch.amp.GradScaler, loader: Any, history: list[dict[str, float]],
) -> dict[str, Any]:
    """Everything a resume needs after ``epoch`` (tensors, numbers and state dicts only)."""
    return {
        "format": FORMAT,
        "epoch": epoch,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng": rng_state(loader),
        "history": history,
    }


def write_epoch(folder: Path, state: dict[str, Any], keep: int | None) -> None:
    """Save ``state`` as its epoch's checkpoint, then delete all but the newest ``keep``."""
    save_checkpoint(checkpoint_path(folder, state["epoch"]), state)
    if keep is not None:
        for _, old in list_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)


def restore(
    folder: Path, resume: bool, device: torch.device, epochs: int, steps_per_epoch: int,
    model: nn.Module, opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler, loader: Any,
) -> tuple[list[dict[str, float]], int | None]:
    """Load the newest checkpoint of ``folder`` into model, optimizer, schedule, scaler and RNGs.

    Returns ``(history, resumed_from_epoch)``; ``([], None)`` when there is nothing to resume.
    Refuses a folder that already holds checkpoints unless ``resume`` (no silent overwrite),
    and a checkpoint of another run length or model structure (:class:`CheckpointError`).
    """
    existing = list_checkpoints(folder)
    if existing and not resume:
        raise ToolkitError(
            f"{folder} already holds checkpoints (up to epoch {existing[-1][0]}). Pass "
            "resume=True to continue that run, or use an empty checkpoint_dir."
        )
    loaded = load_latest(folder, device) if resume else None
    if loaded is None:
        return [], None
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
    set_rng_state(ckpt["rng"], loader)
    return [dict(row) for row in ckpt["history"]], int(ckpt["epoch"])
