"""Offline data: discovery order, checksum, decode cache, loaders and calibration subsets."""

from __future__ import annotations

import pytest
import torch

import agentic_toolkit.paths as paths
from agentic_toolkit.data import (
    CIFAR_ARCHIVE,
    CIFAR_CLASSES,
    calibration_batches,
    cifar10,
    cifar10_tensors,
    imagenet_folder,
)
from agentic_toolkit.errors import ChecksumError, DataNotFoundError, ToolkitError


def test_test_split_is_complete_and_balanced():
    images, labels = cifar10_tensors("test")
    assert images.shape == (10000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1000] * len(CIFAR_CLASSES)


def test_train_loader_augments_and_shuffles():
    loader = cifar10("train", batch_size=256, limit=512)
    x, y = next(iter(loader))
    assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (256,)
    plain = cifar10("train", batch_size=256, limit=512, augment=False, shuffle=False)
    assert len(plain.dataset) == 512
    # normalised: roughly zero mean, unit std
    xp, _ = next(iter(plain))
    assert abs(xp.mean().item()) < 0.5 and 0.5 < xp.std().item() < 1.5


def test_calibration_batches_are_fixed_and_seeded():
    a = calibration_batches("cifar10", n_batches=2, batch_size=16, seed=3)
    b = calibration_batches("cifar10", n_batches=2, batch_size=16, seed=3)
    c = calibration_batches("cifar10", n_batches=2, batch_size=16, seed=4)
    assert len(a) == 2 and a[0][0].shape == (16, 3, 32, 32)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0])


def _isolate(monkeypatch, tmp_path):
    """Make the default search places empty so only what a test sets up is found."""
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "proj")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.DATA_ENV, raising=False)


def test_missing_data_lists_places_and_fix(monkeypatch, tmp_path):
    _isolate(monkeypatch, tmp_path)
    with pytest.raises(DataNotFoundError) as info:
        cifar10("test")
    msg = str(info.value)
    assert str(tmp_path / "data" / CIFAR_ARCHIVE) in msg
    assert "AGENTIC_TOOLKIT_DATA" in msg and "download=True" in msg


def test_env_variable_is_searched_and_corrupt_archive_is_refused(monkeypatch, tmp_path):
    _isolate(monkeypatch, tmp_path)
    fake = tmp_path / "elsewhere" / CIFAR_ARCHIVE
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not a tarball")
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(ChecksumError) as info:
        cifar10("test")
    assert str(fake) in str(info.value) and "adeb9b8c" in str(info.value)


def test_bad_arguments_are_clear():
    with pytest.raises(ToolkitError, match="split"):
        cifar10("validation")
    with pytest.raises(ToolkitError, match="batch_size"):
        cifar10("test", batch_size=0)
    with pytest.raises(DataNotFoundError, match="ImageNet-style"):
        imagenet_folder("/nonexistent/imagenet")


def test_imagenet_folder_uses_timm_transforms(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        Image.new("RGB", (300, 260), (10, 200, 30)).save(tmp_path / "val" / cls / "x.jpeg")
    loader = imagenet_folder(tmp_path, "val", batch_size=2, num_workers=0)
    x, y = next(iter(loader))
    assert x.shape == (2, 3, 224, 224) and sorted(y.tolist()) == [0, 1]


def test_val_split_is_held_out_balanced_and_disjoint():
    tr_x, tr_y = cifar10_tensors("train")
    va_x, va_y = cifar10_tensors("val")
    full_x, _ = cifar10_tensors("train", holdout=False)
    assert len(va_y) == 5000 and len(tr_y) == 45000 and len(full_x) == 50000
    assert torch.bincount(va_y, minlength=10).tolist() == [500] * 10
    # disjoint: no val image appears among the training images (compare raw bytes)
    train_keys = {bytes(x.numpy()) for x in tr_x}
    assert not any(bytes(x.numpy()) in train_keys for x in va_x)
    # fixed: the same images every call
    assert torch.equal(cifar10_tensors("val")[0], va_x)
    loader = cifar10("val", batch_size=100)
    assert not loader.dataset.augment and len(loader.dataset) == 5000


def test_imagenet_holdout_slice(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (40, 40), (i * 20, 0, 0)).save(d / f"{i}.jpg")
    kw = dict(batch_size=4, num_workers=0, input_size=(3, 32, 32))
    train = imagenet_folder(tmp_path, "train", holdout_per_class=2, **kw)
    hold = imagenet_folder(tmp_path, "holdout", holdout_per_class=2, **kw)
    assert len(train.dataset) == 8 and len(hold.dataset) == 4
    assert not set(train.dataset.indices) & set(hold.dataset.indices)
    assert len(imagenet_folder(tmp_path, "val", **kw).dataset) == 12
    with pytest.raises(ToolkitError, match="holdout"):
        imagenet_folder(tmp_path, "test", **kw)


def test_decode_archive_without_a_val_folder(tmp_path):
    """The shared archive stores train/ and test/ only (val is carved from train): a fresh decode
    (no cache yet) must not fail on the empty val split."""
    import io
    import tarfile

    from PIL import Image

    from agentic_toolkit.data import decode_cifar_archive

    path = tmp_path / "tiny.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split, cls, name in [("train", "cat", "0000.jpg"), ("train", "airplane", "0001.jpg"),
                                 ("test", "dog", "0000.jpg")]:
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), (10, 20, 30)).save(buf, format="JPEG")
            info = tarfile.TarInfo(f"{split}/{cls}/{name}")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    out = decode_cifar_archive(path)
    assert set(out) == {"train", "test"}
    assert out["train"][0].shape == (2, 3, 32, 32) and out["train"][1].tolist() == [0, 3]  # airplane, cat
