"""Adapt the pretrained CIFAR ResNet-56 to the JPEG CIFAR-10 set; the baseline for accuracy studies.

The offline CIFAR ResNet weights were trained on the original (PNG) CIFAR-10 and lose about
10 points on the re-encoded JPEG test set. A short fine-tune on the JPEG training set with
plain SGD recovers most of it. Writes

- data/cifar_resnet56_adaptation.csv: epoch (0 = unadapted), train_loss, train_top1,
  test_top1, test_top5, test_loss, lr, seconds (per epoch), cumulative_seconds;
- data/cifar_resnet56_adaptation.json: the settings and the final numbers;
- data/cifar_resnet56_adapted.safetensors: the adapted weights
  (``create_model("cifar_resnet56", pretrained="data/cifar_resnet56_adapted.safetensors")``).

Checkpoints go to runs/adapt_cifar_resnet56/, so an interrupted run continues where it stopped
when started again. ``--smoke`` runs one epoch on 512 images and writes under runs/smoke/.

    nice -n 10 .venv/bin/python scripts/adapt_cifar_resnet56.py --threads 1  # one epoch: ~19 min
    .venv/bin/python scripts/adapt_cifar_resnet56.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import pandas as pd
import torch

from agentic_toolkit import cifar10, create_model, evaluate, finetune

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="1 epoch on 512 train / 512 test images")
    ap.add_argument("--fresh", action="store_true", help="delete old checkpoints instead of resuming")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 avoids OpenMP spin-waits on a busy shared machine)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke or os.environ.get("SMOKE"):
        args.smoke, args.epochs = True, 1
    out_dir = ROOT / ("runs/smoke" if args.smoke else "data")
    ckpt_dir = ROOT / "runs" / ("smoke_adapt" if args.smoke else "adapt_cifar_resnet56")
    if args.fresh or args.smoke:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit_train, limit_test = (512, 512) if args.smoke else (None, None)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = create_model("cifar_resnet56", pretrained=True)
    train = cifar10("train", batch_size=args.batch_size, seed=args.seed, limit=limit_train)
    test = cifar10("test", batch_size=500, limit=limit_test)
    print(f"train {len(train.dataset)} images, test {len(test.dataset)} images, "
          f"{torch.get_num_threads()} threads", flush=True)

    before = evaluate(model, test, progress=not args.no_progress)
    print(f"unadapted JPEG test top-1: {before['top1']:.2f}%", flush=True)
    result = finetune(
        model, train, test,
        epochs=args.epochs, optimizer="sgd", lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule="cosine", amp=False,
        checkpoint_dir=ckpt_dir, resume=True, seed=args.seed, progress=not args.no_progress,
    )
    h = result.history
    rows = [{"epoch": 0, "train_loss": float("nan"), "train_top1": float("nan"),
             "test_top1": before["top1"], "test_top5": before["top5"], "test_loss": before["loss"],
             "lr": float("nan"), "seconds": 0.0}]
    for r in h.itertuples():
        rows.append({"epoch": r.epoch, "train_loss": r.loss, "train_top1": r.train_top1,
                     "test_top1": r.val_top1, "test_top5": r.val_top5, "test_loss": r.val_loss,
                     "lr": r.lr, "seconds": r.seconds})
    frame = pd.DataFrame(rows)
    frame["cumulative_seconds"] = frame["seconds"].cumsum()
    frame.to_csv(out_dir / "cifar_resnet56_adaptation.csv", index=False, float_format="%.4f")

    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "cifar_resnet56_adapted.safetensors"))
    summary = {
        "model": "cifar_resnet56 (pretrained, Idelbayev)",
        "data": "JPEG CIFAR-10 (offline archive); test = JPEG test set",
        "train_images": len(train.dataset),
        "test_images": len(test.dataset),
        "epochs": args.epochs, "lr": args.lr, "schedule": "cosine (per step)", "optimizer": "sgd",
        "momentum": args.momentum, "weight_decay": args.weight_decay, "batch_size": args.batch_size,
        "augment": "random crop (pad 4) + horizontal flip", "seed": args.seed,
        "unadapted_test_top1": before["top1"],
        "adapted_test_top1": float(h["val_top1"].iloc[-1]),
        "best_test_top1": result.best_val_top1,
        "train_seconds": float(h["seconds"].sum()),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    (out_dir / "cifar_resnet56_adaptation.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(frame.to_string(index=False))
    print(f"JPEG test top-1: {before['top1']:.2f}% -> {summary['adapted_test_top1']:.2f}% "
          f"after {args.epochs} epoch(s); weights: {out_dir / 'cifar_resnet56_adapted.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
