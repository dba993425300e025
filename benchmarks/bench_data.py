"""One epoch of JPEG decoding vs one epoch served from the uint8 cache (CIFAR-10 train).

The JPEG epoch decodes as many training JPEGs as the cached ``train`` epoch serves (45,000:
the held-out ``val`` slice is not in it); the two epochs alternate ``--repeat`` times and the
best time of each is kept, for 1 torch thread and for all cores (the cached epoch's
augmentation runs on torch's threads; decoding does not). Prints both times and the ratio of
images per second; the goal is a cache at least 5x faster. Writes data/bench_data.csv (one
row per thread count, with the machine, date and versions).

    python benchmarks/bench_data.py [--limit N]
    python benchmarks/bench_data.py --smoke       # 512 images -> data/smoke/
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from agentic_toolkit.data import CIFAR_ARCHIVE, cifar10
from agentic_toolkit.paths import find_data_file
from agentic_toolkit.tables import annotate, cpu_cores, machine_line, write_table
from reproduce.common import output_dir


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="images per epoch (default: all 50,000; --smoke: 512)")
    parser.add_argument("--smoke", action="store_true", help="512 images, written to data/smoke/")
    parser.add_argument("--repeat", type=int, default=None, help="epochs of each, interleaved; best kept (default 3; --smoke: 1)")
    parser.add_argument("--threads", default=None, help="torch thread counts to measure (default: 1 and all cores; --smoke: 1)")
    parser.add_argument("--out", type=Path, default=None, help="default: data/bench_data.csv (--smoke: data/smoke/)")
    args = parser.parse_args(argv)
    limit = args.limit or (512 if args.smoke else None)
    repeat = max(1, args.repeat or (1 if args.smoke else 3))
    threads = [int(t) for t in args.threads.split(",")] if args.threads else ([1] if args.smoke else sorted({1, cpu_cores()}))
    cache_epoch(256)  # make sure the cache exists before timing
    before, rows = torch.get_num_threads(), []
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            cache_times, jpeg_times = [], []
            for _ in range(repeat):  # interleaved, so load changes on a shared machine hit both alike
                t, n_cache = cache_epoch(limit)
                cache_times.append(t)
                t, n_jpeg = jpeg_epoch(n_cache)  # as many images as the cached epoch served
                jpeg_times.append(t)
            t_cache, t_jpeg = min(cache_times), min(jpeg_times)
            rows.append({
                "split": "train", "torch_threads": n_threads, "repeat": repeat, "jpeg_images": n_jpeg,
                "jpeg_s": round(t_jpeg, 3), "cache_images": n_cache, "cache_s": round(t_cache, 3),
                "cache_batch_size": 128, "cache_augment": True,
                "jpeg_img_per_s": round(n_jpeg / t_jpeg), "cache_img_per_s": round(n_cache / t_cache),
                "ratio": round((n_cache / t_cache) / (n_jpeg / t_jpeg), 2),
            })
            print(f"{n_threads} torch thread(s): JPEG decode epoch {t_jpeg:6.2f} s, cached epoch {t_cache:6.2f} s "
                  f"(with augmentation) for {n_cache} images, best of {repeat}: {rows[-1]['ratio']:.1f}x (goal >= 5x)")
    finally:
        torch.set_num_threads(before)
    df = annotate(pd.DataFrame(rows))
    out = write_table(df, args.out or output_dir(args.smoke) / "bench_data.csv")
    print(f"{machine_line()}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
