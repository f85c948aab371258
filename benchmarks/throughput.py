"""Throughput of one SimCLR pretraining step, three ways, measured in one run.

    python benchmarks/throughput.py                      # Fashion-MNIST shapes, convnet, batch 256
    python benchmarks/throughput.py --encoder resnet18-narrow --channels 3 --size 32

1. selfsup:     uint8 batch -> batched kornia views on the training device -> encoder in
                channels-last at the resolved precision (what `selfsup pretrain` runs);
2. pre-augmented: the same step fed views made beforehand (the ceiling augmentation allows);
3. plain:       float32, NCHW, per-image augmentation in 2 DataLoader workers (the way a
                first implementation usually looks);
4. pretrain:    the real `selfsup pretrain` loop (``selfsup.pretrain``) on the same images as
                an npz source, for 10 + N steps: samples/s from its own metrics.csv windows
                after the first 10 steps (start-up, the first step and the final checkpoint
                left out, as the warm-up steps are left out of the others), so the cost of the
                loop around the step (sampling, copies, clipping, logging, the collapse
                monitor, checkpoints) stays visible.

For each: samples/s (images per second, each image giving two views), peak resident memory,
achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode over one step) against the
machine's GEMM peak at the same precision, measured here too; and the share of the step
spent making views.
"""

from __future__ import annotations

import argparse
import csv
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from selfsup.encoders import build_encoder
from selfsup.engine.precision import resolve_precision
from selfsup.methods import DataInfo, build_method
from selfsup.methods.simclr import SimCLRConfig
from selfsup.views import ImageAugment
from selfsup.views.image import image_pipeline, normalize


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_peak_gflops(precision: str, n: int = 2048, repeats: int = 10) -> float:
    """Sustained matrix-multiply rate of this machine at ``precision``."""
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def build(args, channels_last: bool):
    torch.manual_seed(0)
    encoder = build_encoder(args.encoder, in_channels=args.channels, image_size=args.size)
    cfg = SimCLRConfig(augment=ImageAugment(crop_scale=(0.2, 1.0)))
    method = build_method(
        "simclr",
        vars(cfg) | {"augment": vars(cfg.augment)},
        encoder,
        DataInfo(args.channels, args.size, channels_last),
    )
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method, torch.optim.AdamW(method.parameters(), lr=1e-3)


def train_step(method, optimizer, x1, x2, precision: str) -> None:
    with autocast(precision):
        z1 = method.projector(method.encoder(x1))
        z2 = method.projector(method.encoder(x2))
        loss = method.loss(z1.float(), z2.float())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def count_flops(method, x1, x2, precision: str) -> float:
    with FlopCounterMode(display=False) as counter:
        with autocast(precision):
            loss = method.loss(
                method.projector(method.encoder(x1)).float(),
                method.projector(method.encoder(x2)).float(),
            )
        loss.backward()
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


class PerImageViews(Dataset):
    """The plain way: every sample augmented on its own in a loader worker."""

    def __init__(self, images: torch.Tensor, size: int, channels: int) -> None:
        self.images = images
        self.pipeline = image_pipeline(ImageAugment(crop_scale=(0.2, 1.0)), channels, size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i : i + 1].float() / 255  # (1, C, H, W)
        return normalize(self.pipeline(x))[0], normalize(self.pipeline(x))[0]


def pretrain_loop(args, pool: torch.Tensor, precision: str) -> tuple[float, int]:
    """Samples/s of the real pretrain loop on ``pool`` (uint8 (N, C, H, W)) and its step count:
    the mean of its logged windows after the first ``log_every`` steps."""
    from selfsup import pretrain

    log_every = 10
    with tempfile.TemporaryDirectory() as folder:
        images = pool.permute(0, 2, 3, 1).squeeze(-1).numpy()  # (N, H, W[, C]) as npz holds them
        np.savez(Path(folder) / "pool.npz", images=images)
        run = pretrain(
            method="simclr",
            encoder=args.encoder,
            data={"name": f"npz:{folder}/pool.npz"},
            method_args={"augment": {"crop_scale": [0.2, 1.0]}},
            train={
                "batch_size": args.batch_size,
                "max_steps": log_every + args.steps,
                "precision": precision,
                "log_every": log_every,
                "progress": False,
            },
            out=str(Path(folder) / "run"),
            evaluate=False,
        )
        with (run.run_dir / "metrics.csv").open() as f:
            rates = [
                float(r["samples_per_s"])
                for r in csv.DictReader(f)
                if r.get("samples_per_s") and int(float(r["step"])) > log_every
            ]
    return sum(rates) / len(rates), run.train.steps


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--encoder", default="convnet")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--steps",
        type=int,
        default=30,
        help="timed steps per variant (after 2 warm-up steps; the loop's after 10)",
    )
    p.add_argument("--precision", default="auto", help="auto | 32-true | bf16-mixed")
    p.add_argument("--workers", type=int, default=2, help="loader workers of the plain variant")
    args = p.parse_args()

    precision = resolve_precision(args.precision, "cpu")
    threads = torch.get_num_threads()
    b, steps = args.batch_size, args.steps
    pool = torch.randint(
        0, 256, (b * (steps + 2), args.channels, args.size, args.size), dtype=torch.uint8
    )
    batches = pool.split(b)
    print(
        f"encoder {args.encoder}, {args.channels}x{args.size}x{args.size}, batch {b}, {threads} threads, "
        f"precision {precision} (auto: {resolve_precision('auto', 'cpu')})"
    )

    # 1. selfsup
    method, opt = build(args, channels_last=True)
    view_time = step_time = 0.0
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        x1, x2 = method.views(batch)
        t1 = time.perf_counter()
        train_step(method, opt, x1, x2, precision)
        t2 = time.perf_counter()
        if i >= 2:
            view_time += t1 - t0
            step_time += t2 - t0
    ours = b * steps / step_time
    flops = count_flops(method, x1, x2, precision)
    mem_ours = peak_rss_mb()

    # 2. the same step on views made beforehand
    views = [method.views(batch) for batch in batches]
    start = None
    for i, (x1, x2) in enumerate(views):
        if i == 2:
            start = time.perf_counter()
        train_step(method, opt, x1, x2, precision)
    pre = b * steps / (time.perf_counter() - start)

    # 3. plain: float32, NCHW, per-image augmentation in loader workers
    plain_method, plain_opt = build(args, channels_last=False)
    plain_method.views.channels_last = False
    loader = DataLoader(
        PerImageViews(pool, args.size, args.channels),
        batch_size=b,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    start = None
    for i, (x1, x2) in enumerate(loader):
        if i == 2:
            start = time.perf_counter()
        train_step(plain_method, plain_opt, x1, x2, "32-true")
    plain = b * steps / (time.perf_counter() - start)

    # 4. the real pretrain loop on the same images
    loop, loop_steps = pretrain_loop(args, pool, precision)

    peak = gemm_peak_gflops(precision)
    achieved = flops * ours / b / 1e9
    print()
    print(f"{'variant':<34}{'samples/s':>10}{'vs plain':>10}")
    print(
        f"{'selfsup (batched views, CL, ' + precision + ')':<34}{ours:>10.0f}{ours / plain:>9.2f}x"
    )
    print(f"{'same step, pre-augmented input':<34}{pre:>10.0f}{pre / plain:>9.2f}x")
    print(f"{'plain (fp32, NCHW, per-image aug)':<34}{plain:>10.0f}{1:>9.2f}x")
    print(f"{'selfsup pretrain loop':<34}{loop:>10.0f}{loop / plain:>9.2f}x")
    print()
    print(
        f"selfsup step at {100 * ours / pre:.0f}% of the pre-augmented step; "
        f"views take {100 * view_time / step_time:.0f}% of the step"
    )
    print(
        f"the pretrain loop runs at {100 * loop / ours:.0f}% of the selfsup step "
        f"({loop_steps} steps, the first 10 left out)"
    )
    print(
        f"FLOPs per step {flops / 1e9:.1f} G; achieved {achieved:.0f} GFLOP/s; "
        f"GEMM peak at {precision} {peak:.0f} GFLOP/s ({100 * achieved / peak:.0f}% of peak)"
    )
    print(
        f"peak resident memory {mem_ours:.0f} MB after the selfsup variant, {peak_rss_mb():.0f} MB in all"
    )


if __name__ == "__main__":
    main()
