"""Fine-tune from the command line, alone or on many processes with ``torchrun`` (DDP).

    # one process (``agentic-toolkit finetune ...`` is the same command)
    python -m agentic_toolkit.cli.finetune --model cifar_resnet56 --pretrained true --data cifar10 \\
        --epochs 2 --batch-size 128 --lr 0.01 --out runs/ft

    # N processes (one per GPU; gloo on CPU): the same command under torchrun
    torchrun --nproc_per_node=8 -m agentic_toolkit.cli.finetune --pruned runs/pruned_r50 \\
        --data /data/imagenet --recipe imagenet_cnn --sync-bn --out runs/ft

``--recipe cifar|imagenet_cnn|imagenet_vit`` starts from a :class:`~agentic_toolkit.Recipe`
preset (epochs, batch size, optimizer, lr, schedule, warm-up, weight decay, label smoothing,
KD settings); every flag given explicitly overrides the preset's value. ``--scale-lr`` applies
the linear scaling rule when ``--batch-size`` differs from the preset's batch.
``--batch-size`` is the global batch: each of the N processes takes ``batch-size / N``.
The training data are always sharded by a DistributedSampler (also with one process), so
a run on N processes sees the same global batches as a run on one, and with ``--freeze-bn``
(or ``--sync-bn`` on GPUs) computes the same updates up to floating-point summation order.
Only rank 0 prints and writes ``--out`` (history.csv, summary.json, model.safetensors) and
the checkpoints. With ``--pruned DIR``, ``--out`` is also a pruned-model folder
(strategy.json, history.json, meta.json from DIR) that ``load_pruned`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import ToolkitError
from ..training import distributed as D

HELP = "Fine-tune a (pruned) model, optionally distilled; runs under torchrun (DDP)."
DEFAULT_BATCH = 128


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``finetune`` flags (shared by ``agentic-toolkit finetune`` and ``python -m``)."""
    from ..training.recipe import OPTIMIZERS, PRESETS, SCHEDULES

    m = p.add_argument_group("model")
    m.add_argument("--model", help="model name (create_model); not needed with --pruned")
    m.add_argument("--pretrained", default=None,
                   help="'true' (offline CIFAR weights) or a checkpoint path")
    m.add_argument("--pruned", type=Path, default=None, help="a pruned model directory (save_pruned)")
    m.add_argument("--num-classes", type=int, default=None)
    m.add_argument("--teacher", default=None, help="teacher model name for distillation")
    m.add_argument("--teacher-pretrained", default=None, help="'true' or a checkpoint path")
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True, help="'cifar10' or an ImageNet-style folder (train/, val/)")
    d.add_argument("--limit", type=int, default=None, help="CIFAR-10: use this many training images")
    d.add_argument("--val-limit", type=int, default=None, help="CIFAR-10: use this many test images")
    d.add_argument("--no-augment", action="store_true", help="no training augmentation")
    d.add_argument("--no-shuffle", action="store_true", help="keep the training order fixed")
    d.add_argument("--no-val", action="store_true", help="skip validation after each epoch")
    d.add_argument("--workers", type=int, default=4, help="loader workers (ImageNet folders)")
    t = p.add_argument_group("recipe (explicit flags override --recipe; without it: Recipe defaults, 1 epoch)")
    t.add_argument("--recipe", default=None, choices=sorted(PRESETS), help="start from this Recipe preset")
    t.add_argument("--epochs", type=int, default=None, help="default 1")
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"global batch over all processes (default: the recipe's, else {DEFAULT_BATCH})")
    t.add_argument("--scale-lr", action="store_true",
                   help="scale the recipe's lr by batch-size / the recipe's batch (linear scaling rule)")
    t.add_argument("--lr", type=float, default=None, help="default 0.01")
    t.add_argument("--weight-decay", type=float, default=None, help="default 1e-4")
    t.add_argument("--momentum", type=float, default=None, help="SGD momentum, default 0.9")
    t.add_argument("--optimizer", default=None, choices=OPTIMIZERS, help="default sgd")
    t.add_argument("--schedule", default=None, choices=SCHEDULES, help="default cosine")
    t.add_argument("--warmup-epochs", type=float, default=None, help="default 0")
    t.add_argument("--label-smoothing", type=float, default=None, help="default 0")
    t.add_argument("--kd-alpha", type=float, default=None, help="default 0.5 (used with --teacher)")
    t.add_argument("--kd-temperature", type=float, default=None, help="default 4 (used with --teacher)")
    r = p.add_argument_group("run")
    r.add_argument("--amp", default="auto", help="auto, bf16, fp16 or off")
    r.add_argument("--channels-last", action="store_true")
    r.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics fixed")
    r.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs")
    r.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("output")
    o.add_argument("--checkpoint-dir", type=Path, default=None)
    o.add_argument("--resume", action="store_true")
    o.add_argument("--out", type=Path, default=None, help="folder for history.csv, summary.json, weights "
                   "(with --pruned: also a folder load_pruned reads)")
    o.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agentic_toolkit.cli.finetune", description=HELP)
    add_arguments(p)
    return p


RECIPE_FLAGS = ("epochs", "lr", "weight_decay", "momentum", "optimizer", "schedule", "warmup_epochs",
                "label_smoothing", "kd_alpha", "kd_temperature")


def recipe_from_args(args: argparse.Namespace):
    """``(recipe, global batch)``: the ``--recipe`` preset (or Recipe defaults with 1 epoch),
    then every explicitly given flag; ``--scale-lr`` rescales the preset's lr to the batch."""
    from ..training.recipe import Recipe

    base = Recipe.preset(args.recipe) if args.recipe else Recipe(epochs=1)
    batch = args.batch_size or base.batch_size or DEFAULT_BATCH
    if args.scale_lr:
        if base.batch_size is None:
            raise ToolkitError("--scale-lr needs --recipe (a reference batch size to scale from)")
        base = base.scaled(batch)
    flags = {k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k) is not None}
    return base.replace(**flags, batch_size=batch), batch


def _pretrained(value: str | None) -> bool | str:
    if value is None or value.lower() in ("false", "no", "0", ""):
        return False
    return True if value.lower() in ("true", "yes", "1") else value


def _load_model(args: argparse.Namespace) -> torch.nn.Module:
    from ..models import create_model

    if args.pruned is not None:
        try:
            from ..pruning.persist import load_pruned
        except ImportError as exc:
            raise ToolkitError(f"--pruned needs agentic_toolkit.pruning.persist ({exc})") from exc
        return load_pruned(args.pruned).model
    if not args.model:
        raise ToolkitError("pass --model NAME or --pruned DIR")
    return create_model(args.model, pretrained=_pretrained(args.pretrained), num_classes=args.num_classes)


def _train_loader(dataset, per_process: int, args: argparse.Namespace, workers: int) -> DataLoader:
    # Always a DistributedSampler (num_replicas=1 alone): then one process and N processes
    # draw the same global batches (rank r takes every N-th sample of the same permutation).
    sampler = DistributedSampler(
        dataset, num_replicas=D.world_size(), rank=D.rank(), shuffle=not args.no_shuffle,
        seed=args.seed, drop_last=False,
    )
    from ..data import _batch_passthrough

    return DataLoader(dataset, batch_size=per_process, sampler=sampler, num_workers=workers,
                      collate_fn=_batch_passthrough, pin_memory=torch.cuda.is_available())


def _loaders(args: argparse.Namespace, per_process: int, model: torch.nn.Module):
    from ..data import cifar10, imagenet_folder

    if args.data == "cifar10":
        base = cifar10("train", batch_size=per_process, limit=args.limit, seed=args.seed,
                       augment=not args.no_augment)
        if D.rank() > 0:  # same subset (seed) on every rank, but independent augmentation
            base.dataset.generator.manual_seed(args.seed + 1_000_003 * D.rank())
        train = _train_loader(base.dataset, per_process, args, 0)
        val = None if args.no_val else cifar10("test", batch_size=max(per_process, 100), limit=args.val_limit)
        return train, val
    root = Path(args.data)
    base = imagenet_folder(root, "train", batch_size=per_process, model=model,
                           augment=not args.no_augment, num_workers=args.workers)
    train = _train_loader(base.dataset, per_process, args, args.workers)
    val = None if args.no_val else imagenet_folder(root, "val", batch_size=per_process, model=model,
                                                   num_workers=args.workers)
    return train, val


def train(args: argparse.Namespace) -> dict:
    """Fine-tune as ``args`` say; returns the summary (also written to ``--out`` by rank 0).

    Expects the process group (if any) to be set up by :func:`~..training.distributed.init_from_env`.
    """
    from ..models import create_model
    from ..training.finetune import finetune

    recipe, batch = recipe_from_args(args)  # bad flags fail before any process group starts
    device = D.init_from_env()
    world = D.world_size()
    if batch % world:
        raise ToolkitError(f"--batch-size {batch} is not divisible by {world} processes")
    per_process = batch // world
    args.batch_size = batch
    torch.manual_seed(args.seed)
    model = _load_model(args)
    teacher = None
    if args.teacher:
        teacher = create_model(args.teacher, pretrained=_pretrained(args.teacher_pretrained),
                               num_classes=args.num_classes)
    train_loader, val = _loaders(args, per_process, model)
    result = finetune(
        model, train_loader, val, recipe, teacher=teacher,
        amp=args.amp if args.amp != "off" else False, channels_last=args.channels_last,
        freeze_bn=args.freeze_bn, sync_bn=args.sync_bn, device=device,
        checkpoint_dir=args.checkpoint_dir, resume=args.resume, seed=args.seed,
        progress=not args.no_progress,
    )
    summary = {
        "world_size": world,
        "global_batch": batch,
        "per_process_batch": per_process,
        "epochs": result.epochs,
        "final": {k: float(v) for k, v in result.final.items()},
        "best_val_top1": result.best_val_top1,
        "seconds": result.seconds,
        "recipe": recipe.to_dict(),
    }
    if D.is_main_process() and args.out is not None:
        _write_out(args, model, result, summary)
    if D.is_main_process():
        print(json.dumps(summary), flush=True)
    return summary


def _write_out(args: argparse.Namespace, model: torch.nn.Module, result, summary: dict) -> None:
    """``--out``: history.csv, summary.json and the weights; for a ``--pruned`` model a folder
    ``load_pruned`` reads (the pruned folder's strategy/history/meta + fine-tuned weights)."""
    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    result.history.to_csv(args.out / "history.csv", index=False)
    if args.pruned is not None:
        from ..pruning.persist import write_pruned_dir

        write_pruned_dir(args.out, model, args.pruned,
                         note=f"fine-tuned {result.epochs} epochs (agentic_toolkit.cli.finetune)")
    else:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(args.out / "model.safetensors"))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    """``agentic-toolkit finetune``: train, then always leave the process group."""
    try:
        train(args)
    finally:
        D.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 2 with a one-line message on bad input."""
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except ToolkitError as exc:
        print(f"agentic_toolkit.cli.finetune (rank {D.rank()}): error: {exc}", file=sys.stderr)
        return 2
    finally:
        D.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
