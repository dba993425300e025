"""Offline data: CIFAR-10 from the JPEG archive (decoded once into a uint8 cache),
ImageNet-style folders with timm transforms, and seeded calibration subsets.

Data is searched in this order: an explicit ``root``, ``$AGENTIC_TOOLKIT_DATA``,
``./data``, ``../shared/data``; torchvision downloads only with ``download=True``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data_cache import cached_tensors
from .errors import DataNotFoundError, ToolkitError
from .hashing import verify_sha256
from .models import CIFAR_MEAN, CIFAR_STD
from .paths import cache_dir, find_data_file

CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR_ARCHIVE = "cifar10/cifar10_jpg.tar.gz"
CIFAR_SHA256 = "adeb9b8c9a00432b5afd5f2a9861b1299d572df0f4c01fb7ed1f6182cbf713a6"
SPLITS = ("train", "val", "test")
#: Held-out selection data: a fixed, class-balanced, seeded slice of the training images.
#: Every selection the toolkit makes (search scores, best epochs, the budget panel) uses it;
#: ``test`` is for final reports only.
VAL_PER_CLASS = 500
VAL_SEED = 0


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ToolkitError(f"split must be one of {SPLITS}, got {split!r}")


def holdout_indices(labels: torch.Tensor, per_class: int, seed: int = VAL_SEED) -> torch.Tensor:
    """Sorted indices of ``per_class`` seeded random items of every class (class-balanced)."""
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < per_class:
            raise ToolkitError(f"class {c} has {len(idx)} items, fewer than the {per_class} held out")
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(picked).sort().values


def _select_split(split: str, train: tuple[torch.Tensor, torch.Tensor], holdout: bool):
    """``train`` without the held-out slice (unless ``holdout=False``), or the ``val`` slice."""
    images, labels = train
    keep = holdout_indices(labels, VAL_PER_CLASS)
    if split == "val":
        return images[keep], labels[keep]
    if not holdout:
        return images, labels
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[keep] = False
    return images[mask], labels[mask]


def decode_cifar_archive(archive: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Decode every JPEG of the archive: ``{split: (uint8 N x 3 x 32 x 32, int64 labels)}``.

    Images are ordered by split, class (CIFAR order) and file name.
    """
    from PIL import Image

    found: dict[str, list[tuple[int, str, np.ndarray]]] = {s: [] for s in SPLITS}
    class_index = {c: i for i, c in enumerate(CIFAR_CLASSES)}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".jpg"):
                continue
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[-3] not in SPLITS or parts[-2] not in class_index:
                continue
            data = tar.extractfile(member).read()
            with Image.open(io.BytesIO(data)) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
            found[parts[-3]].append((class_index[parts[-2]], parts[-1], arr))
    out = {}
    for split, items in found.items():
        if not items:  # "val" is carved from "train" (not stored in the archive)
            continue
        items.sort(key=lambda t: (t[0], t[1]))
        images = torch.from_numpy(np.stack([a for _, _, a in items])).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([c for c, _, _ in items], dtype=torch.int64)
        out[split] = (images, labels)
    return out


def _torchvision_cifar(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(root), train=split == "train", download=True)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.int64)


def cifar10_tensors(
    split: str = "train", root: str | Path | None = None, download: bool = False, holdout: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as ``(uint8 images N x 3 x 32 x 32, int64 labels)``.

    ``val`` is a fixed, class-balanced, seeded slice of 5,000 training images (500 per
    class); ``train`` excludes it (45,000 images) unless ``holdout=False`` (all 50,000).
    The JPEG archive is checksum-verified and decoded once; both archive splits are cached
    in the cache directory as a tensor file that later calls load in well under a second.
    """
    _check_split(split)
    if split != "test":
        return _select_split(split, _archive_split("train", root, download), holdout)
    return _archive_split("test", root, download)


def _archive_split(split: str, root, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        archive = find_data_file(CIFAR_ARCHIVE, root, what="CIFAR-10 JPEG archive")
    except DataNotFoundError as exc:
        if not download:
            raise DataNotFoundError(
                f"{exc}\nOr pass download=True to fetch the original CIFAR-10 with torchvision."
            ) from None
        return _torchvision_cifar(split, Path(root) if root else cache_dir() / "cifar10_download")
    digest = verify_sha256(archive, CIFAR_SHA256)

    def build() -> dict[str, torch.Tensor]:
        decoded = decode_cifar_archive(archive)
        return {f"{s}_{k}": t for s, (x, y) in decoded.items() for k, t in (("images", x), ("labels", y))}

    # verified against the archive's and its own sha256; rebuilt when it cannot be trusted
    blob = cached_tensors(cache_dir(), f"cifar10_jpg_{digest[:16]}", digest, build, (3, 32, 32))
    if f"{split}_images" not in blob:
        raise ToolkitError(f"the CIFAR-10 archive {archive} holds no '{split}' images")
    return blob[f"{split}_images"], blob[f"{split}_labels"]


class TensorImageDataset(Dataset):
    """Normalised float images from a uint8 tensor, with optional batched CIFAR augmentation
    (random 32x32 crop of the 4-pixel zero-padded image, horizontal flip).

    ``__getitems__`` returns a whole batch at once so a DataLoader does no per-image work.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        augment: bool = False,
        seed: int = 0,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ToolkitError("images must be a uint8 tensor of shape N x C x H x W")
        if len(images) != len(labels):
            raise ToolkitError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.augment = images, labels, augment
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std).view(1, -1, 1, 1) * 255.0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.augment:
            b, _, h, w = x.shape
            padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
            oy = torch.randint(0, 9, (b,), generator=self.generator)
            ox = torch.randint(0, 9, (b,), generator=self.generator)
            rows = (oy[:, None] + torch.arange(h))[:, :, None]
            cols = (ox[:, None] + torch.arange(w))[:, None, :]
            x = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)
            flip = torch.rand(b, generator=self.generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return ((x - self.mean) / self.std).contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(self.images[index : index + 1])[0], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self._transform(self.images[idx]), self.labels[idx]


def _batch_passthrough(batch):
    """Collate for datasets whose ``__getitems__`` already returns a batch."""
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch
    return torch.utils.data.default_collate(batch)


def cifar10(
    split: str = "train",
    batch_size: int = 128,
    root: str | Path | None = None,
    download: bool = False,
    augment: bool | None = None,
    shuffle: bool | None = None,
    seed: int = 0,
    limit: int | None = None,
    drop_last: bool = False,
    holdout: bool = True,
) -> DataLoader:
    """CIFAR-10 DataLoader from the offline JPEG set (see :func:`cifar10_tensors`).

    Args:
        split: ``train`` (45,000 images; all 50,000 with ``holdout=False``), ``val`` (the
            5,000 held-out training images, for every selection) or ``test`` (10,000, for
            final reports only).
        batch_size: images per batch.
        root: the folder holding ``cifar10/cifar10_jpg.tar.gz``; default: the data roots.
        download: fetch the original CIFAR-10 with torchvision when the archive is missing.
        augment: random crop and flip; default True for ``train``, False otherwise.
        shuffle: default True for ``train``, False otherwise.
        seed: seeds the subset, the augmentation and the shuffling.
        limit: keep a seeded random subset of that many images (for smoke runs).
        drop_last: drop a last incomplete batch.
        holdout: leave the ``val`` slice out of ``train``.

    Returns:
        A DataLoader of normalised ``(images, labels)`` batches.

    Example:
        >>> import agentic_toolkit as at
        >>> # reads the offline CIFAR-10 archive (not part of the package):
        >>> loader = at.cifar10("val", batch_size=4, limit=8)  # doctest: +SKIP
        >>> images, labels = next(iter(loader))  # doctest: +SKIP
        >>> images.shape, len(loader)  # doctest: +SKIP
        (torch.Size([4, 3, 32, 32]), 2)
    """
    _check_split(split)
    if batch_size < 1:
        raise ToolkitError(f"batch_size must be >= 1, got {batch_size}")
    images, labels = cifar10_tensors(split, root, download, holdout)
    if limit is not None:
        if limit < 1:
            raise ToolkitError(f"limit must be >= 1, got {limit}")
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:limit]
        images, labels = images[keep.sort().values], labels[keep.sort().values]
    is_train = split == "train"
    dataset = TensorImageDataset(images, labels, augment=is_train if augment is None else augment, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=is_train if shuffle is None else shuffle,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=_batch_passthrough,
        drop_last=drop_last,
    )


def imagenet_folder(
    root: str | Path,
    split: str = "val",
    batch_size: int = 64,
    model: torch.nn.Module | None = None,
    input_size: tuple[int, int, int] = (3, 224, 224),
    augment: bool | None = None,
    num_workers: int = 4,
    shuffle: bool | None = None,
    holdout_per_class: int = 10,
) -> DataLoader:
    """ImageNet-style ``root/<split>/<class>/*.jpeg`` loader with timm's transforms.

    Args:
        root: the folder that holds ``train/`` and ``val/``.
        split: ``train`` (``root/train`` without the held-out slice), ``holdout`` (a fixed,
            seeded, class-balanced slice of ``holdout_per_class`` images per class of
            ``root/train``: the selection data for searches and best epochs) or ``val``
            (``root/val``, the set papers report ImageNet top-1 on: final reports only).
        batch_size: images per batch.
        model: when given, its pretrained config (input size, mean, std, crop) is used.
        input_size: ``(C, H, W)`` without a model config.
        augment: timm's training transforms; default True for ``train`` only.
        num_workers: loader worker processes.
        shuffle: default True for ``train`` only.
        holdout_per_class: images per class held out of ``train``; 0 gives all of ``root/train``.

    Returns:
        A DataLoader of ``(images, labels)`` batches.

    Example:
        >>> import tempfile, pathlib, agentic_toolkit as at
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for cls in ("cat", "dog"):
        ...         (pathlib.Path(tmp) / "val" / cls).mkdir(parents=True)
        ...         Image.new("RGB", (40, 40)).save(f"{tmp}/val/{cls}/0.jpeg")
        ...     loader = at.imagenet_folder(tmp, "val", batch_size=2, input_size=(3, 32, 32), num_workers=0)
        ...     images, labels = next(iter(loader))
        >>> images.shape, labels.tolist()
        (torch.Size([2, 3, 32, 32]), [0, 1])
    """
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    if split not in ("train", "holdout", "val"):
        raise ToolkitError(f"split must be 'train', 'holdout' or 'val', got {split!r}")
    folder = Path(root).expanduser() / ("train" if split == "holdout" else split)
    if not folder.is_dir():
        raise DataNotFoundError(
            f"no ImageNet-style folder at {folder}: expected {folder}/<class>/<image> files. "
            "Pass the folder that holds 'train/' and 'val/'."
        )
    is_train = split == "train" if augment is None else augment
    cfg = resolve_data_config({"input_size": input_size}, model=model)
    dataset: Dataset = ImageFolder(str(folder), transform=create_transform(**cfg, is_training=is_train))
    if split != "val" and (holdout_per_class > 0 or split == "holdout"):
        if holdout_per_class < 1:
            raise ToolkitError("split='holdout' needs holdout_per_class >= 1")
        targets = torch.tensor(dataset.targets)
        keep = holdout_indices(targets, holdout_per_class)
        if split == "train":
            mask = torch.ones(len(targets), dtype=torch.bool)
            mask[keep] = False
            keep = torch.nonzero(mask).flatten()
        dataset = torch.utils.data.Subset(dataset, keep.tolist())
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=split == "train" if shuffle is None else shuffle,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )


def calibration_batches(
    source: str | Dataset | DataLoader = "cifar10",
    n_batches: int = 4,
    batch_size: int = 64,
    seed: int = 0,
    split: str = "train",
    root: str | Path | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, seeded subset as a list of ``(images, labels)`` batches, without augmentation.

    The same seed always gives the same images, so importance scores are reproducible.

    Args:
        source: ``"cifar10"`` or any map-style dataset / DataLoader (its dataset is used).
        n_batches: number of batches (fewer when the data set is smaller).
        batch_size: images per batch.
        seed: picks the images.
        split: with ``"cifar10"``: ``train`` for importance scores, ``val`` for selection.
        root: with ``"cifar10"``: where the archive is; default: the data roots.

    Returns:
        A list of ``(images, labels)`` tensor pairs.

    Example:
        >>> import torch, agentic_toolkit as at
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(10, 3, 32, 32), torch.arange(10))
        >>> batches = at.calibration_batches(data, n_batches=2, batch_size=4)
        >>> [len(y) for _, y in batches]
        [4, 4]
        >>> torch.equal(batches[0][1], at.calibration_batches(data, 2, 4)[0][1])  # seeded
        True
    """
    if n_batches < 1 or batch_size < 1:
        raise ToolkitError("n_batches and batch_size must be >= 1")
    if isinstance(source, str):
        if source != "cifar10":
            raise ToolkitError(f"unknown calibration source {source!r}; pass 'cifar10' or a Dataset")
        images, labels = cifar10_tensors(split, root)
        dataset: Dataset = TensorImageDataset(images, labels, augment=False)
    else:
        dataset = source.dataset if isinstance(source, DataLoader) else source
    if isinstance(dataset, TensorImageDataset) and dataset.augment:
        dataset = TensorImageDataset(dataset.images, dataset.labels, augment=False)
    total = len(dataset)
    need = min(n_batches * batch_size, total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:need].tolist()
    batches = []
    for start in range(0, need, batch_size):
        idx = order[start : start + batch_size]
        if hasattr(dataset, "__getitems__"):
            batches.append(dataset.__getitems__(idx))
        else:
            batches.append(torch.utils.data.default_collate([dataset[i] for i in idx]))
    return batches


__all__ = [
    "CIFAR_CLASSES",
    "TensorImageDataset",
    "calibration_batches",
    "cifar10",
    "cifar10_tensors",
    "decode_cifar_archive",
    "holdout_indices",
    "imagenet_folder",
]
