"""Sharded data at 10k, 100k and 1M samples: peak memory should stay flat, time grow linearly.

    python benchmarks/scaling.py                                  # 10k, 100k, 1M, WebDataset
    python benchmarks/scaling.py --format npy                     # the same on .npy shards
    python benchmarks/scaling.py --sizes 10000 --tmp /scratch     # one size, shards elsewhere

For each size, in a temporary folder (1M 28x28 images take 2.6 GB of disk as WebDataset, 785
MB as .npy):

1. pack:  synthetic uint8 1x28x28 images (seeded random pixels, label = index % 10), made
          and written chunk by chunk through ``WebDatasetWriter`` (PNG + cls in tar shards) or
          ``ShardWriter`` (.npy), as ``selfsup pack`` writes;
2. epoch: one epoch through the engine's loader path: ``wds:PATH`` or ``shards:PATH``, the
          ``ResumableSampler`` with the windowed shuffle, a DataLoader with 2 workers, batch 256.

Each phase runs in a fresh process, so its peak resident memory (ru_maxrss) is its own: the
main process's, and the largest loader worker's. Samples/s is the epoch's, worker start-up
included. The epoch reads files that pack has just written, so they usually come from the
OS page cache (drop it between phases for cold-disk numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (1, 28, 28)  # (C, H, W)
CHUNK = 8192


def peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def synthetic_chunks(n: int):
    """(images uint8 (B, 1, 28, 28), labels (B,)) for n samples, CHUNK at a time."""
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        rng = np.random.default_rng([n, start])
        yield (
            rng.integers(0, 256, (stop - start, *SHAPE), dtype=np.uint8),
            np.arange(start, stop) % 10,
        )


def run_pack(args: argparse.Namespace) -> dict[str, float]:
    from selfsup.data.shards import ShardWriter
    from selfsup.data.webdataset import WebDatasetWriter, image_samples

    started = time.perf_counter()
    if args.format == "npy":
        writer = ShardWriter(
            args.dir, channels=SHAPE[0], image_size=SHAPE[1:], shard_size=args.shard_size
        )
        writer.write_split("train", args.size, synthetic_chunks(args.size))
    else:
        writer = WebDatasetWriter(
            args.dir,
            modality="image",
            channels=SHAPE[0],
            image_size=SHAPE[1:],
            shard_size=args.shard_size,
        )
        writer.write_split("train", image_samples(synthetic_chunks(args.size), SHAPE))
    index = writer.finish(
        source="synthetic", has_labels=True, class_names=[str(i) for i in range(10)]
    )
    return {
        "seconds": time.perf_counter() - started,
        "shards": len(index["splits"]["train"]["shards"]),
        "peak_mb": peak_mb(),
    }


def run_epoch(args: argparse.Namespace) -> dict[str, float]:
    import gc

    from selfsup.data import load_images, make_loader
    from selfsup.engine.sampler import ResumableSampler

    base = peak_mb()
    started = time.perf_counter()
    data = load_images(f"{'shards' if args.format == 'npy' else 'wds'}:{args.dir}")
    sampler = ResumableSampler(len(data), args.batch_size, seed=0, order=data.epoch_order)
    loader = make_loader(
        data, args.batch_size, sampler=sampler, num_workers=args.workers, pin_memory=False
    )
    samples, checksum = 0, 0
    for batch in loader:
        samples += len(batch["image"])
        checksum += int(batch["label"].sum())
    seconds = time.perf_counter() - started
    del loader  # shuts the workers down, so their peaks reach RUSAGE_CHILDREN
    gc.collect()
    expected = (len(data) // args.batch_size) * args.batch_size
    if samples != expected:
        raise SystemExit(f"epoch gave {samples} samples, expected {expected}")
    return {
        "samples": samples,
        "seconds": seconds,
        "peak_mb": peak_mb(),
        "after_import_mb": base,
        "worker_peak_mb": peak_mb(resource.RUSAGE_CHILDREN),
    }


def phase(name: str, size: int, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Run one phase in a fresh Python process and return what it measured."""
    command = [sys.executable, __file__, "--phase", name, "--size", str(size), "--dir", str(folder)]
    command += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    command += ["--format", args.format]
    if args.shard_size:
        command += ["--shard-size", str(args.shard_size)]
    env = {**os.environ, "SELFSUP_CACHE": str(folder.parent / "cache")}  # sample tables
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{name} at {size:,} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="comma-separated sample counts"
    )
    parser.add_argument("--tmp", help="folder for the shards (default: the system's temp folder)")
    parser.add_argument(
        "--shard-size", type=int, help="images per shard (default: 64 MiB of pixels)"
    )
    parser.add_argument(
        "--format", choices=["wds", "npy"], default="wds", help="shard format (selfsup pack)"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--phase", choices=["pack", "epoch"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps((run_pack if args.phase == "pack" else run_epoch)(args)))
        return

    header = (
        f"{'samples':>10} {'shards':>6} {'pack s':>7} {'pack peak MB':>12} {'epoch s':>8} "
        f"{'samples/s':>10} {'peak MB':>8} {'worker peak MB':>14}"
    )
    print(
        f"{args.format} shards of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} uint8, batch {args.batch_size}, "
        f"{args.workers} workers"
    )
    print(header)
    if args.tmp:
        Path(args.tmp).mkdir(parents=True, exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        folder = Path(tempfile.mkdtemp(prefix="selfsup-scaling-", dir=args.tmp))
        try:
            packed = phase("pack", size, folder / "shards", args)
            epoch = phase("epoch", size, folder / "shards", args)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(
            f"{epoch['samples']:>10,} {packed['shards']:>6} {packed['seconds']:>7.1f} "
            f"{packed['peak_mb']:>12.0f} {epoch['seconds']:>8.1f} "
            f"{epoch['samples'] / epoch['seconds']:>10,.0f} {epoch['peak_mb']:>8.0f} "
            f"{epoch['worker_peak_mb']:>14.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
