"""Does distillation from the unpruned model help a pruned CIFAR ResNet-56 recover? Measured.

The (adapted, see :mod:`.adaptation`) CIFAR ResNet-56 is pruned to ~50% of its MACs with the
toolkit's pruner: :func:`~agentic_toolkit.fit_to_budget` solves the ratio of a uniform
L2-magnitude strategy (every layer ranked alone, so every prunable group loses the same share
of channels) for the MAC target, then ``.prune()``. The pruned model is fine-tuned twice per
seed from the same weights with the same data order and :class:`~agentic_toolkit.Recipe`:
once with plain cross-entropy (arm ``ce``), once with ``(1 - a) * CE + a * T^2 * KL`` from
the unpruned model (arm ``kd``).

Every finished piece (the set-up evaluation, each arm x seed) is appended as one JSON line to
a cache, so an interrupted study resumes with what is missing; a line is reused only when its
settings (weights checksum, MAC fraction, strategy, recipe, data sizes) match.

    python scripts/kd_study.py --threads 1            # the full study -> data/kd_study.{csv,json}
    python scripts/kd_study.py --smoke                # 256 images, 1 epoch -> data/smoke/
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agentic_toolkit.data import cifar10
from agentic_toolkit.models import create_model
from agentic_toolkit.parallel import read_records
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.pruning.budget import fit_to_budget
from agentic_toolkit.pruning.strategy import Strategy
from agentic_toolkit.tables import machine_info
from agentic_toolkit.training.evaluation import evaluate
from agentic_toolkit.training.finetune import finetune
from agentic_toolkit.training.proxy import proxy_accuracy
from agentic_toolkit.training.recipe import Recipe

from .adaptation import ADAPTED_WEIGHTS
from .common import StudyResult, output_dir, parse_study_args

ARMS = ("ce", "kd")
INPUT = (1, 3, 32, 32)
#: Uniform channel ratio, L2-magnitude importance: each group ranked alone (no global ranking).
UNIFORM_L2 = Strategy(importance="magnitude_l2", isomorphic=False, global_pruning=False)
#: The committed study's recipe: SGD momentum 0.9, lr 0.01 cosine, wd 5e-4, batch 128, 2 epochs.
RECIPE = Recipe.preset("cifar", epochs=2)
CACHE = PROJECT_ROOT / "runs" / "kd_study.jsonl"


@dataclass
class KDStudyResult(StudyResult):
    """Per-epoch rows (``frame``: arm, seed, epoch 0 = pruned before fine-tuning, test and
    train metrics) and the ``report`` (settings, teacher/pruned accuracy, final per-arm
    numbers, KD - CE per seed)."""

    def summary(self) -> str:
        r = self.report
        means = r["mean_test_top1"]
        diffs = ", ".join(f"{d:+.2f}" for d in r["kd_minus_ce_per_seed"])
        return (
            f"teacher {r['teacher_test_top1']:.2f}%, pruned to {100 * r['mac_fraction']:.1f}% of its MACs: "
            f"{r['pruned_test_top1_before_finetune']:.2f}% before fine-tuning; after {r['epochs']} epoch(s) "
            f"CE {means['ce']:.2f}%, KD {means['kd']:.2f}% (KD - CE per seed: {diffs})"
        )

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """``kd_study.csv`` and ``kd_study.json`` in ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.frame.to_csv(out / "kd_study.csv", index=False, float_format="%.4f")
        (out / "kd_study.json").write_text(json.dumps(self.report, indent=2) + "\n")
        return out / "kd_study.csv", out / "kd_study.json"


class JsonlCache:
    """Finished pieces of a study, one JSON line each: ``{"key", "settings", "record"}``.

    A line is used only when its ``settings`` equal this study's, so changing a setting
    re-measures instead of mixing results. Appends are flushed and fsynced; a line cut short
    by a crash is ignored. ``path=None`` keeps everything in memory.
    """

    def __init__(self, path: str | Path | None, settings: dict[str, Any]):
        self.path = Path(path) if path is not None else None
        self.settings = json.loads(json.dumps(settings))
        self.records: dict[str, Any] = {}
        if self.path is not None and self.path.is_file():
            self.records.update(read_records(self.path, self.settings))

    def get(self, key: str) -> Any:
        return self.records.get(key)

    def put(self, key: str, record: Any) -> Any:
        """Store ``record`` (JSON-normalised, as a later run reads it back) and return it."""
        record = json.loads(json.dumps(record))
        self.records[key] = record
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"key": key, "settings": self.settings, "record": record})
            with open(self.path, "a+b") as fh:  # appends go to the end whatever the position
                size = fh.seek(0, os.SEEK_END)
                if size:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")  # end a line a crash cut short
                fh.write(line.encode() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        return record


def load_teacher(weights: str | Path | None = None) -> tuple[torch.nn.Module, str]:
    """The adapted ResNet-56 (``data/cifar_resnet56_adapted.safetensors``), else the offline
    pretrained weights; returns ``(model, description of the weights)``."""
    path = Path(weights) if weights is not None else ADAPTED_WEIGHTS
    if path.is_file():
        shown = path.relative_to(PROJECT_ROOT) if path.resolve().is_relative_to(PROJECT_ROOT) else path
        return create_model("cifar_resnet56", pretrained=path), str(shown)
    print(f"{path} not found: using the unadapted pretrained weights as teacher", flush=True)
    return create_model("cifar_resnet56", pretrained=True), "pretrained (unadapted)"


def prune_to_fraction(model: torch.nn.Module, fraction: float, strategy: Strategy = UNIFORM_L2,
                      tolerance: tuple[float, float] = (0.0, 2.0)):
    """``(pruned copy, BudgetFit)``: ``strategy``'s ratio solved for ``fraction`` of the MACs
    (at most the target, at most ``tolerance[1]`` % below it)."""
    fit = fit_to_budget(model, strategy, fraction * _macs(model), torch.randn(INPUT), tolerance=tolerance)
    return fit.prune().model.eval(), fit


def _macs(model: torch.nn.Module) -> int:
    from agentic_toolkit.profiling.profile import profile_macs

    return int(profile_macs(model, input_size=INPUT).total_macs)


def _setup_record(teacher, pruned, test, progress: bool) -> dict[str, Any]:
    teacher_acc = evaluate(teacher, test, progress=progress)
    pruned_acc = evaluate(pruned, test, progress=progress)
    recal = proxy_accuracy(cifar10("train", batch_size=100, augment=False, limit=2000), batches=10)
    return {"teacher": teacher_acc, "pruned": pruned_acc, "pruned_proxy_bn_recalibrated": recal(pruned)}


def _arm_record(arm: str, seed: int, pruned, teacher, test, recipe: Recipe, train_limit: int | None,
                progress: bool) -> dict[str, Any]:
    student = copy.deepcopy(pruned)
    train = cifar10("train", batch_size=recipe.batch_size or 128, limit=train_limit, seed=seed)
    res = finetune(student, train, test, recipe, teacher=teacher if arm == "kd" else None, amp=False,
                   seed=seed, progress=progress)
    return {
        "history": res.to_dict()["history"],
        "test_top1": float(res.history["val_top1"].iloc[-1]),
        "seconds": float(res.history["seconds"].sum()),
        "train_images": len(train.dataset),
    }


def _rows(arm: str, seed: int, pruned_acc: dict, record: dict) -> list[dict[str, Any]]:
    rows = [{"arm": arm, "seed": seed, "epoch": 0, "test_top1": pruned_acc["top1"],
             "test_top5": pruned_acc["top5"], "test_loss": pruned_acc["loss"]}]
    for r in record["history"]:
        rows.append({"arm": arm, "seed": seed, "epoch": r["epoch"], "train_loss": r["loss"],
                     "train_top1": r["train_top1"], "test_top1": r["val_top1"], "test_top5": r["val_top5"],
                     "test_loss": r["val_loss"], "lr": r["lr"], "seconds": r["seconds"]})
    return rows


def kd_study(
    *,
    teacher_weights: str | Path | None = None,
    fraction: float = 0.5,
    recipe: Recipe = RECIPE,
    seeds: tuple[int, ...] = (0, 1),
    train_limit: int | None = 10_000,
    test_limit: int | None = None,
    cache: str | Path | None = CACHE,
    progress: bool = True,
) -> KDStudyResult:
    """Run (or resume from ``cache``) the CE vs KD comparison; see the module docstring."""
    from agentic_toolkit.hashing import sha256_file

    teacher, teacher_source = load_teacher(teacher_weights)
    pruned, fit = prune_to_fraction(teacher, fraction)
    pruned_macs, unpruned_macs = _macs(pruned), _macs(teacher)
    print(f"pruned: uniform ratio {fit.ratio:.4f}, MACs {pruned_macs:,} = "
          f"{100 * pruned_macs / unpruned_macs:.2f}% of {unpruned_macs:,}", flush=True)
    weights = Path(teacher_weights) if teacher_weights is not None else ADAPTED_WEIGHTS
    settings = {
        "teacher_sha256": sha256_file(weights) if weights.is_file() else teacher_source,
        "fraction": fraction, "strategy": fit.strategy.to_dict(), "recipe": recipe.to_dict(),
        "train_limit": train_limit, "test_limit": test_limit,
    }
    store = JsonlCache(cache, settings)
    test = cifar10("test", batch_size=500, limit=test_limit)
    setup = store.get("setup") or store.put("setup", _setup_record(teacher, pruned, test, progress))
    print(f"teacher {setup['teacher']['top1']:.2f}%, pruned {setup['pruned']['top1']:.2f}% (proxy with BN "
          f"re-estimation {setup['pruned_proxy_bn_recalibrated']:.2f}% on 1000 train images)", flush=True)

    rows, finals = [], []
    for seed in seeds:
        for arm in ARMS:
            key = f"{arm}/seed{seed}"
            record = store.get(key)
            if record is None:
                record = store.put(key, _arm_record(arm, seed, pruned, teacher, test, recipe, train_limit,
                                                    progress))
                state = "measured"
            else:
                state = "cached"
            rows += _rows(arm, seed, setup["pruned"], record)
            finals.append({"arm": arm, "seed": seed, "test_top1": record["test_top1"],
                           "seconds": record["seconds"], "train_images": record["train_images"]})
            print(f"seed {seed} {arm}: test top-1 {record['test_top1']:.2f}% in {record['seconds']:.0f}s "
                  f"({state})", flush=True)

    frac = pruned_macs / unpruned_macs
    frame = pd.DataFrame(rows)
    frame.insert(0, "mac_fraction", round(frac, 4))
    by_arm = pd.DataFrame(finals).groupby("arm")["test_top1"]
    diffs = [k["test_top1"] - c["test_top1"] for c, k in zip(finals[::2], finals[1::2], strict=True)]
    report = {
        "teacher": teacher_source, "teacher_test_top1": setup["teacher"]["top1"],
        "pruning": "agentic_toolkit fit_to_budget + prune: uniform per-group ratio, L2 magnitude "
                   "(Strategy importance=magnitude_l2, isomorphic=False, global_pruning=False)",
        "strategy": fit.strategy.to_dict(), "target_fraction": fraction,
        "uniform_ratio": fit.ratio, "mac_fraction": frac, "pruned_macs": pruned_macs,
        "unpruned_macs": unpruned_macs, "pruned_test_top1_before_finetune": setup["pruned"]["top1"],
        "pruned_proxy_top1_bn_recalibrated": setup["pruned_proxy_bn_recalibrated"],
        "train_images": finals[0]["train_images"], "test_images": len(test.dataset), "epochs": recipe.epochs,
        "lr": recipe.lr, "schedule": recipe.schedule, "batch_size": recipe.batch_size,
        "weight_decay": recipe.weight_decay, "kd_alpha": recipe.kd_alpha,
        "kd_temperature": recipe.kd_temperature, "recipe": recipe.to_dict(), "seeds": list(seeds),
        "final_test_top1": {arm: by_arm.get_group(arm).tolist() for arm in ARMS},
        "mean_test_top1": {arm: float(by_arm.get_group(arm).mean()) for arm in ARMS},
        "kd_minus_ce_per_seed": diffs,
        "seconds_per_arm": {arm: [f["seconds"] for f in finals if f["arm"] == arm] for arm in ARMS},
        "threads": torch.get_num_threads(),
        "machine": machine_info(),
    }
    return KDStudyResult(frame, report)


def main(argv: list[str] | None = None) -> int:
    """Command line of the study (``scripts/kd_study.py``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-weights", default=None,
                    help=f"adapted ResNet-56 weights (default {ADAPTED_WEIGHTS.relative_to(PROJECT_ROOT)}); "
                         "falls back to the offline pretrained ones")
    ap.add_argument("--fraction", type=float, default=0.5, help="target MACs / unpruned MACs")
    ap.add_argument("--train-limit", type=int, default=10_000, help="training images (seeded subset)")
    ap.add_argument("--epochs", type=int, default=RECIPE.epochs)
    ap.add_argument("--lr", type=float, default=RECIPE.lr)
    ap.add_argument("--batch-size", type=int, default=RECIPE.batch_size)
    ap.add_argument("--weight-decay", type=float, default=RECIPE.weight_decay)
    ap.add_argument("--kd-alpha", type=float, default=RECIPE.kd_alpha)
    ap.add_argument("--kd-temperature", type=float, default=RECIPE.kd_temperature)
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds (data order/augmentation)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=None,
                    help=f"JSONL cache (default {CACHE.relative_to(PROJECT_ROOT)}; --smoke: data/smoke/)")
    ap.add_argument("--fresh", action="store_true", help="ignore and replace the cache")
    ap.add_argument("--out-dir", type=Path, default=None, help="default data/ (--smoke: data/smoke/)")
    ap.add_argument("--smoke", action="store_true", help="256 training / 512 test images, 1 epoch, seed 0")
    ap.add_argument("--no-progress", action="store_true")
    args, smoke = parse_study_args(ap, argv)
    recipe = RECIPE.replace(epochs=1 if smoke else args.epochs, lr=args.lr, batch_size=args.batch_size,
                            weight_decay=args.weight_decay, kd_alpha=args.kd_alpha,
                            kd_temperature=args.kd_temperature)
    out_dir = args.out_dir or output_dir(smoke)
    cache = args.cache or (out_dir / "kd_study.jsonl" if smoke else CACHE)
    if args.fresh or smoke:
        cache.unlink(missing_ok=True)
    t0 = time.perf_counter()
    result = kd_study(
        teacher_weights=args.teacher_weights, fraction=args.fraction, recipe=recipe,
        seeds=(0,) if smoke else tuple(int(s) for s in args.seeds.split(",")),
        train_limit=256 if smoke else args.train_limit, test_limit=512 if smoke else None,
        cache=cache, progress=not args.no_progress,
    )
    paths = result.write(out_dir)
    print(result.summary())
    print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - t0:.0f}s (cache: {cache})")
    return 0
