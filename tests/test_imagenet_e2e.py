"""The README's ImageNet recipe end to end on a tiny ImageNet-style folder (CPU, gloo):
``agentic-toolkit prune`` a 224-pixel timm model -> ``torchrun -m agentic_toolkit.cli.finetune``
with KD, killed after its first checkpoint and resumed -> ``load_pruned`` -> ``evaluate``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import agentic_toolkit as at

CLASSES = 10
TRAIN_PER_CLASS = 11  # the train split holds out 10 per class (imagenet_folder): 1 per class trains
VAL_PER_CLASS = 2
# the installed console script when there is one, else the same entry point
CLI = ([str(Path(sys.executable).parent / "agentic-toolkit")] if (Path(sys.executable).parent / "agentic-toolkit").exists()
       else [sys.executable, "-c", "import sys; from agentic_toolkit.cli import main; sys.exit(main())"])


def _folder(root):
    """``root/{train,val}/<class>/*.JPEG``: random images of 64-160 px (the transforms resize them)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c in range(CLASSES):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(64, 161, size=2)
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                pixels[..., c % 3] //= 2  # a little class signal
                Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=85)
    return root


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def _kill_tree(pid: int) -> None:
    for p in [*_descendants(pid), pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _run(cmd, timeout=150):
    # own session: on a timeout the whole group (torchrun and its workers) is killed
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_imagenet_folder_prune_torchrun_kd_resume_load_evaluate(tmp_path):
    from safetensors.torch import load_file, save_file

    data = _folder(tmp_path / "imagenet")
    torch.manual_seed(0)
    unpruned = at.create_model("resnet18", num_classes=CLASSES)  # random init, 224 px
    weights = tmp_path / "resnet18_10.safetensors"
    save_file({k: v.contiguous() for k, v in unpruned.state_dict().items()}, str(weights))

    # 1. prune to half the MACs with the CLI
    pruned = tmp_path / "pruned"
    report = json.loads(_run([*CLI, "prune", "resnet18", "--pretrained",
                              str(weights), "--num-classes", str(CLASSES), "--target-macs", "50%",
                              "--out", str(pruned), "--json"]))
    assert report["input_shape"] == [1, 3, 224, 224] and report["within_tolerance"]
    assert -5.0 <= report["error_pct"] <= 1.0  # MACs in the band
    target = report["target_macs"]

    # 2. torchrun on 2 processes, KD from the unpruned model, a checkpoint per epoch
    ckpt, out = tmp_path / "ckpt", tmp_path / "finetuned"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "agentic_toolkit.cli.finetune", "--pruned", str(pruned), "--data", str(data),
           "--teacher", "resnet18", "--teacher-pretrained", str(weights), "--num-classes", str(CLASSES),
           "--epochs", "2", "--batch-size", "4", "--lr", "0.01", "--workers", "0", "--no-progress",
           "--checkpoint-dir", str(ckpt), "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
                             start_new_session=True)
    deadline = time.time() + 150
    while not (ckpt / "epoch_0001.pt").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    _kill_tree(first.pid)  # torchrun and both workers, as a pre-empted job
    err = first.communicate()[1]
    assert (ckpt / "epoch_0001.pt").exists(), err[-3000:]
    assert not (ckpt / "epoch_0002.pt").exists() and not out.exists(), "the run must have been killed mid-way"

    resumed = _run([*cmd, "--resume"])
    (summary,) = [json.loads(line) for line in resumed.splitlines() if line.startswith("{")]
    assert summary["epochs"] == 2 and summary["world_size"] == 2
    assert summary["recipe"]["kd_alpha"] > 0  # distilled from the teacher
    assert sorted(p.name for p in ckpt.glob("epoch_*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]

    # 3. load_pruned of --out, then evaluate on val
    loaded = at.load_pruned(out)
    assert loaded.macs == report["achieved_macs"] and -5.0 <= 100 * (loaded.macs - target) / target <= 1.0
    trained = torch.load(ckpt / "epoch_0002.pt", map_location="cpu", weights_only=True)["model"]
    state = loaded.model.state_dict()
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[k], trained[k]) for k in state)  # the reloaded model is the trained one
    assert state.keys() == load_file(str(out / "model.safetensors")).keys()
    val = at.imagenet_folder(data, "val", batch_size=10, model=loaded.model, num_workers=0)
    scores = at.evaluate(loaded.model, val)
    assert 0.0 <= scores["top1"] <= 100.0 and np.isfinite(scores["loss"])
    assert abs(scores["top1"] - history["val_top1"].iloc[-1]) <= 100 / (CLASSES * VAL_PER_CLASS) + 1e-9
