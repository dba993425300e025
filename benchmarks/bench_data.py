"""One epoch of JPEG decoding vs one epoch served from the uint8 cache (CIFAR-10 train).

Prints both times and their ratio; the goal is a cache at least 5x faster.
Usage: python benchmarks/bench_data.py [--limit N]
"""

from __future__ import annotations

import argparse
import io
import tarfile
import time

import numpy as np
import torch
from PIL import Image

from agentic_toolkit.data import CIFAR_ARCHIVE, cifar10
from agentic_toolkit.paths import find_data_file


def jpeg_epoch(limit: int | None) -> tuple[float, int]:
    """Decode the train JPEGs from the archive into normalised float batches, as a
    loader without a cache would each epoch."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    start, n = time.perf_counter(), 0
    with tarfile.open(find_data_file(CIFAR_ARCHIVE), "r:gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.startswith("train/")):
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                arr = np.array(img.convert("RGB"), dtype=np.uint8)
            x = (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - mean) / std
            n += 1
            if limit and n >= limit:
                break
    del x
    return time.perf_counter() - start, n


def cache_epoch(limit: int | None) -> tuple[float, int]:
    loader = cifar10("train", batch_size=128, limit=limit)  # loads (and if needed builds) the cache
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="images per epoch (default: all 50,000)")
    args = parser.parse_args()
    cache_epoch(256)  # make sure the cache exists before timing
    t_cache, n_cache = cache_epoch(args.limit)
    t_jpeg, n_jpeg = jpeg_epoch(args.limit)
    print(f"JPEG decode epoch : {t_jpeg:7.2f} s for {n_jpeg} images")
    print(f"cached epoch      : {t_cache:7.2f} s for {n_cache} images (with augmentation)")
    print(f"ratio jpeg/cache  : {t_jpeg / t_cache:7.1f}x  (goal >= 5x)")


if __name__ == "__main__":
    main()
