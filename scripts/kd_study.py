"""Does distillation from the unpruned model help a pruned CIFAR ResNet-56 recover? Measured.

The (adapted) CIFAR ResNet-56 is pruned to ~50% of its MACs (torch-pruning, uniform channel
ratio found by bisection, L2-magnitude importance), then fine-tuned twice from the same
pruned weights with the same data order, epochs and learning rate: once with plain
cross-entropy, once with ``(1 - a) * CE + a * T^2 * KL`` from the unpruned model. Writes

- data/kd_study.csv: one row per arm, seed and epoch (epoch 0 = pruned, before fine-tuning)
  with test_top1 on the full JPEG test set, train loss/top-1, lr and seconds;
- data/kd_study.json: the settings, teacher and pruned accuracies, and the final
  per-arm numbers with the KD - CE difference.

    nice -n 10 .venv/bin/python scripts/kd_study.py --threads 1      # ~30-40 min on 2 busy cores
    .venv/bin/python scripts/kd_study.py --smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch

from agentic_toolkit import cifar10, create_model, evaluate, finetune, proxy_accuracy
from agentic_toolkit.profiling.profile import profile_macs

ROOT = Path(__file__).resolve().parent.parent
ADAPTED = ROOT / "data" / "cifar_resnet56_adapted.safetensors"
INPUT = (1, 3, 32, 32)


def macs(model: torch.nn.Module) -> int:
    return int(profile_macs(model, input_size=INPUT).total_macs)


def prune_uniform(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """A pruned copy: every prunable group loses ``ratio`` of its channels (L2 magnitude)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    tp.pruner.MetaPruner(
        pruned, torch.randn(INPUT), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[pruned.linear],
        # torch-pruning mutates these dicts: always pass fresh ones
        in_channel_groups={}, out_channel_groups={}, num_heads={},
    ).step()
    return pruned.eval()


def prune_to_fraction(model: torch.nn.Module, fraction: float, tol: float = 0.01):
    """Bisect the uniform ratio until MACs are within ``[fraction - tol, fraction]`` of the model's."""
    base = macs(model)
    lo, hi = 0.0, 0.95
    best = None
    for _ in range(12):
        mid = (lo + hi) / 2
        cand = prune_uniform(model, mid)
        frac = macs(cand) / base
        if frac > fraction:
            lo = mid
        else:
            hi = mid
            best = (cand, mid, frac)
            if frac >= fraction - tol:
                break
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-weights", default=str(ADAPTED),
                    help="adapted ResNet-56 weights; falls back to the offline pretrained ones")
    ap.add_argument("--fraction", type=float, default=0.5, help="target MACs / unpruned MACs")
    ap.add_argument("--train-limit", type=int, default=10000, help="training images (seeded subset)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--kd-alpha", type=float, default=0.5)
    ap.add_argument("--kd-temperature", type=float, default=4.0)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (data order/augmentation)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke or os.environ.get("SMOKE"):
        args.smoke, args.train_limit, args.epochs = True, 256, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = ROOT / ("runs/smoke" if args.smoke else "data")
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    progress = not args.no_progress

    weights = Path(args.teacher_weights)
    if weights.is_file():
        teacher, teacher_source = create_model("cifar_resnet56", pretrained=weights), str(weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights)
    else:
        print(f"{weights} not found: using the unadapted pretrained weights as teacher", flush=True)
        teacher, teacher_source = create_model("cifar_resnet56", pretrained=True), "pretrained (unadapted)"
    test = cifar10("test", batch_size=500, limit=512 if args.smoke else None)

    pruned, ratio, frac = prune_to_fraction(teacher, args.fraction)
    print(f"pruned: uniform ratio {ratio:.4f}, MACs {macs(pruned):,} = {100 * frac:.2f}% of {macs(teacher):,}",
          flush=True)
    teacher_acc = evaluate(teacher, test, progress=progress)
    pruned_acc = evaluate(pruned, test, progress=progress)
    recal = proxy_accuracy(cifar10("train", batch_size=100, augment=False, limit=2000), batches=10)
    print(f"teacher {teacher_acc['top1']:.2f}%, pruned {pruned_acc['top1']:.2f}% "
          f"(proxy with BN re-estimation {recal(pruned):.2f}% on 1000 train images)", flush=True)

    rows, finals = [], []
    for seed in seeds:
        for arm in ("ce", "kd"):
            student = copy.deepcopy(pruned)
            train = cifar10("train", batch_size=args.batch_size, limit=args.train_limit, seed=seed)
            res = finetune(
                student, train, test, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                schedule="cosine", amp=False, seed=seed, progress=progress,
                teacher=teacher if arm == "kd" else None,
                kd_alpha=args.kd_alpha, kd_temperature=args.kd_temperature,
            )
            rows.append({"arm": arm, "seed": seed, "epoch": 0, "test_top1": pruned_acc["top1"],
                         "test_top5": pruned_acc["top5"], "test_loss": pruned_acc["loss"]})
            for r in res.history.itertuples():
                rows.append({"arm": arm, "seed": seed, "epoch": r.epoch, "train_loss": r.loss,
                             "train_top1": r.train_top1, "test_top1": r.val_top1,
                             "test_top5": r.val_top5, "test_loss": r.val_loss, "lr": r.lr,
                             "seconds": r.seconds})
            finals.append({"arm": arm, "seed": seed, "test_top1": float(res.history["val_top1"].iloc[-1]),
                           "seconds": float(res.history["seconds"].sum())})
            print(f"seed {seed} {arm}: test top-1 {finals[-1]['test_top1']:.2f}% "
                  f"in {finals[-1]['seconds']:.0f}s", flush=True)

    frame = pd.DataFrame(rows)
    frame.insert(0, "mac_fraction", round(frac, 4))
    frame.to_csv(out_dir / "kd_study.csv", index=False, float_format="%.4f")
    by_arm = pd.DataFrame(finals).groupby("arm")["test_top1"]
    diffs = [k["test_top1"] - c["test_top1"] for c, k in zip(finals[::2], finals[1::2], strict=True)]
    summary = {
        "teacher": teacher_source, "teacher_test_top1": teacher_acc["top1"],
        "pruning": "torch-pruning MetaPruner, uniform ratio, L2 magnitude (bisection on the ratio)",
        "uniform_ratio": ratio, "mac_fraction": frac, "pruned_macs": macs(pruned),
        "unpruned_macs": macs(teacher), "pruned_test_top1_before_finetune": pruned_acc["top1"],
        "train_images": len(train.dataset), "test_images": len(test.dataset), "epochs": args.epochs,
        "lr": args.lr, "schedule": "cosine", "batch_size": args.batch_size,
        "weight_decay": args.weight_decay, "kd_alpha": args.kd_alpha,
        "kd_temperature": args.kd_temperature, "seeds": seeds,
        "final_test_top1": {arm: by_arm.get_group(arm).tolist() for arm in ("ce", "kd")},
        "mean_test_top1": {arm: float(by_arm.get_group(arm).mean()) for arm in ("ce", "kd")},
        "kd_minus_ce_per_seed": diffs,
        "threads": torch.get_num_threads(),
    }
    (out_dir / "kd_study.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
