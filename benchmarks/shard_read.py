"""Read throughput of the two shard formats on the same data: WebDataset tar (``wds:``) against
the uint8 ``.npy`` shards (``shards:``).

    python benchmarks/shard_read.py                               # Fashion-MNIST train, 28 px
    python benchmarks/shard_read.py --data digits --image-size 64 # any --data spec, resized

Packs the source's two splits in each format (``selfsup pack`` with ``--format wds`` and
``--format npy``) and reads one epoch of the train split through the engine's loader path
(``ResumableSampler`` with the windowed shuffle, DataLoader, batch 256) with 0 workers (one
process decodes: the cost per sample) and with ``--workers`` workers. Files come from the OS
page cache (pack has just written them), so this measures decoding, not the disk.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def epoch(spec: str, batch_size: int, workers: int) -> tuple[int, float]:
    """(samples, seconds) of one epoch of ``spec``'s train split, worker start-up included."""
    from selfsup.data import load_images, make_loader
    from selfsup.engine.sampler import ResumableSampler

    data = load_images(spec)
    sampler = ResumableSampler(len(data), batch_size, seed=0, order=data.epoch_order)
    started = time.perf_counter()
    loader = make_loader(data, batch_size, sampler=sampler, num_workers=workers, pin_memory=False)
    samples = sum(len(batch["image"]) for batch in loader)
    return samples, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="fashion-mnist", help="any image --data spec")
    parser.add_argument("--image-size", type=int, help="resize while packing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--tmp", help="folder for the shards (default: the system's temp folder)")
    args = parser.parse_args()

    from selfsup.data.pack import pack

    root = Path(tempfile.mkdtemp(prefix="selfsup-read-", dir=args.tmp))
    os.environ.setdefault("SELFSUP_CACHE", str(root / "cache"))
    print(f"{args.data}, image size {args.image_size or 'as stored'}, batch {args.batch_size}")
    print(
        f"{'format':>6} {'pack s':>7} {'MB':>7} {'0 workers /s':>13} {f'{args.workers} workers /s':>13}"
    )
    for form, prefix in (("npy", "shards"), ("wds", "wds")):
        out = root / form
        started = time.perf_counter()
        pack(args.data, out, format=form, image_size=args.image_size)  # type: ignore[arg-type]
        pack_s = time.perf_counter() - started
        rates = []
        for workers in (0, args.workers):
            samples, seconds = epoch(f"{prefix}:{out}", args.batch_size, workers)
            rates.append(samples / seconds)
        print(
            f"{form:>6} {pack_s:>7.1f} {folder_mb(out):>7.1f} {rates[0]:>13,.0f} {rates[1]:>13,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
