"""Adapt a pretrained CIFAR ResNet to the JPEG CIFAR-10 set; the baselines of accuracy studies.

The offline CIFAR ResNet weights were trained on the original (PNG) CIFAR-10 and lose accuracy
on the re-encoded JPEG test set (``docs/models.md``). A short fine-tune on the JPEG **train** split
(45,000 images: the 5,000 ``val`` images are held out for selection) recovers it:
:data:`RECIPE`, 3 epochs of SGD with a short warm-up and a cosine decay (one cycle). Writes,
for ``MODEL`` = ``cifar_resnet56`` or ``cifar_resnet20``:

- ``MODEL_adaptation.csv``: epoch (0 = unadapted), train_loss, train_top1, val_top1
  (held-out val split), test_top1 / test_top5 / test_loss (JPEG test set: before and after
  only, reported, never used for a choice), lr, seconds (per epoch), cumulative_seconds;
- ``MODEL_adaptation.json``: the settings and the final numbers;
- ``MODEL_adapted.safetensors``: the adapted weights of the last epoch
  (``create_model("cifar_resnet56", pretrained="data/cifar_resnet56_adapted.safetensors")``).

Checkpoints go to ``runs/adapt_MODEL/`` (one per epoch), so an interrupted run continues
where it stopped when started again.

    python scripts/adapt_cifar_resnet56.py --threads 1                        # ResNet-56
    python scripts/adapt_cifar_resnet56.py --model cifar_resnet20 --threads 1  # ResNet-20
    python scripts/adapt_cifar_resnet56.py --smoke       # 512 / 512 images -> data/smoke/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from agentic_toolkit.data import cifar10
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.models import create_model
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.training.evaluation import evaluate
from agentic_toolkit.training.finetune import finetune
from agentic_toolkit.training.recipe import Recipe

from .common import StudyResult, output_dir, parse_study_args

ADAPTED_WEIGHTS = PROJECT_ROOT / "data" / "cifar_resnet56_adapted.safetensors"
MODELS = ("cifar_resnet56", "cifar_resnet20")
#: The committed baselines' recipe: 3 epochs of SGD momentum 0.9, batch 128, wd 5e-4,
#: lr 0.02 after a linear warm-up over the first 0.3 epoch, then cosine to 0 (one cycle).
RECIPE = Recipe.preset("cifar", epochs=3, lr=0.02, warmup_epochs=0.3)


def adapted_weights(model_name: str = "cifar_resnet56") -> Path:
    """Where the committed adapted weights of ``model_name`` live (``data/MODEL_adapted.safetensors``)."""
    return PROJECT_ROOT / "data" / f"{model_name}_adapted.safetensors"


@dataclass
class AdaptationResult(StudyResult):
    """``frame`` (one row per epoch, 0 = unadapted), ``report`` (settings, final numbers) and
    the adapted ``model``."""

    model: torch.nn.Module | None = field(default=None, repr=False)
    model_name: str = "cifar_resnet56"

    def summary(self) -> str:
        r = self.report
        return (f"{self.model_name}: JPEG test top-1 {r['unadapted_test_top1']:.2f}% -> "
                f"{r['adapted_test_top1']:.2f}% after {r['epochs']} epoch(s) on {r['train_images']} "
                f"train-split images (val top-1 {r['adapted_val_top1']:.2f}%)")

    def write(self, out_dir: str | Path) -> list[Path]:
        """The CSV, the JSON report and the adapted weights in ``out_dir``."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        name = self.model_name
        paths = [out / f"{name}_adaptation.csv", out / f"{name}_adaptation.json", out / f"{name}_adapted.safetensors"]
        self.frame.to_csv(paths[0], index=False, float_format="%.4f")
        paths[1].write_text(json.dumps(self.report, indent=2) + "\n")
        if self.model is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
            save_file(state, str(paths[2]))
        return paths


def adapt_cifar_resnet(
    model_name: str = "cifar_resnet56",
    *,
    recipe: Recipe = RECIPE,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    checkpoint_dir: str | Path | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> AdaptationResult:
    """Fine-tune a pretrained CIFAR ResNet on the JPEG train split (resuming from
    ``checkpoint_dir``, default ``runs/adapt_MODEL``, unless ``fresh``), watching the held-out
    val split each epoch; JPEG test top-1 before and after is reported, never selected on."""
    if model_name not in MODELS:
        raise ToolkitError(f"model_name must be one of {MODELS}, got {model_name!r}")
    checkpoint_dir = checkpoint_dir or PROJECT_ROOT / "runs" / f"adapt_{model_name}"
    if fresh:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    torch.manual_seed(seed)
    model = create_model(model_name, pretrained=True)
    train = cifar10("train", batch_size=recipe.batch_size or 128, seed=seed, limit=train_limit)
    val = cifar10("val", batch_size=500, limit=test_limit)
    test = cifar10("test", batch_size=500, limit=test_limit)
    print(f"{model_name}: train {len(train.dataset)}, val {len(val.dataset)}, test {len(test.dataset)} "
          f"images, {torch.get_num_threads()} threads", flush=True)
    before = evaluate(model, test, progress=progress)
    print(f"unadapted JPEG test top-1: {before['top1']:.2f}%", flush=True)
    result = finetune(model, train, val, recipe, amp=False, checkpoint_dir=checkpoint_dir,
                      resume=True, seed=seed, progress=progress)
    after = evaluate(model, test, progress=progress)
    frame = _adaptation_frame(result.history, before, after)
    report = {
        "model": f"{model_name} (pretrained, Idelbayev)",
        "data": "JPEG CIFAR-10 (offline archive): train split (val held out), val split, JPEG test set",
        "train_images": len(train.dataset), "val_images": len(val.dataset), "test_images": len(test.dataset),
        "epochs": recipe.epochs, "lr": recipe.lr, "warmup_epochs": recipe.warmup_epochs,
        "schedule": f"{recipe.schedule} (per step)", "optimizer": recipe.optimizer,
        "momentum": recipe.momentum, "weight_decay": recipe.weight_decay,
        "batch_size": recipe.batch_size, "recipe": recipe.to_dict(),
        "augment": "random crop (pad 4) + horizontal flip", "seed": seed,
        "weights": "last epoch (no selection)",
        "unadapted_test_top1": before["top1"], "adapted_test_top1": after["top1"],
        "adapted_val_top1": float(result.history["val_top1"].iloc[-1]),
        "train_seconds": float(result.history["seconds"].sum()),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    return AdaptationResult(frame, report, model, model_name)


def _adaptation_frame(history: pd.DataFrame, before: dict, after: dict) -> pd.DataFrame:
    nan = float("nan")
    rows = [{"epoch": 0, "train_loss": nan, "train_top1": nan, "val_top1": nan, "test_top1": before["top1"],
             "test_top5": before["top5"], "test_loss": before["loss"], "lr": nan, "seconds": 0.0}]
    last = int(history["epoch"].iloc[-1])
    for r in history.itertuples():
        final = int(r.epoch) == last
        rows.append({"epoch": r.epoch, "train_loss": r.loss, "train_top1": r.train_top1, "val_top1": r.val_top1,
                     "test_top1": after["top1"] if final else nan, "test_top5": after["top5"] if final else nan,
                     "test_loss": after["loss"] if final else nan, "lr": r.lr, "seconds": r.seconds})
    frame = pd.DataFrame(rows)
    frame["cumulative_seconds"] = frame["seconds"].cumsum()
    return frame


def main(argv: list[str] | None = None) -> int:
    """Command line of the study (``scripts/adapt_cifar_resnet56.py``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_resnet56", choices=MODELS)
    ap.add_argument("--epochs", type=int, default=RECIPE.epochs)
    ap.add_argument("--lr", type=float, default=RECIPE.lr)
    ap.add_argument("--batch-size", type=int, default=RECIPE.batch_size)
    ap.add_argument("--weight-decay", type=float, default=RECIPE.weight_decay)
    ap.add_argument("--momentum", type=float, default=RECIPE.momentum)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="1 epoch on 512 train / 512 test images -> data/smoke/")
    ap.add_argument("--fresh", action="store_true", help="delete old checkpoints instead of resuming")
    ap.add_argument("--out-dir", type=Path, default=None, help="default data/ (--smoke: data/smoke/)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 avoids OpenMP spin-waits on a busy shared machine)")
    ap.add_argument("--no-progress", action="store_true")
    args, smoke = parse_study_args(ap, argv)
    recipe = RECIPE.replace(epochs=1 if smoke else args.epochs, lr=args.lr, batch_size=args.batch_size,
                            weight_decay=args.weight_decay, momentum=args.momentum)
    out_dir = args.out_dir or output_dir(smoke)
    limit = 512 if smoke else None
    result = adapt_cifar_resnet(
        args.model, recipe=recipe, seed=args.seed, train_limit=limit, test_limit=limit,
        checkpoint_dir=PROJECT_ROOT / "runs" / "smoke_adapt" if smoke else None,
        fresh=args.fresh or smoke, progress=not args.no_progress,
    )
    paths = result.write(out_dir)
    print(result.frame.to_string(index=False))
    print(f"{result.summary()}; wrote {', '.join(str(p) for p in paths)}")
    return 0
