"""Memory and time of one SimCLR step on a big batch: whole, and with the gradient cache.

    python benchmarks/gradient_cache.py                     # batch 4096, micro-batch 256
    python benchmarks/gradient_cache.py --batch 8192 --micro 512

A third variant, one plain step on a batch of 256 alone, is the memory to match.

Each variant runs in its own fresh process, so peak resident memory (ru_maxrss) belongs to
that variant alone. Also printed: the largest gradient difference between the two, which
the gradient cache keeps at float32 round-off (BatchNorm aside: here the encoder is the
convnet with its BatchNorm swapped for GroupNorm, so the two are the same computation).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


def build(size: int, width: int) -> nn.Module:
    from selfsup.encoders import build_encoder
    from selfsup.methods import DataInfo, build_method

    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=1, image_size=size, width=width)
    for module in list(encoder.modules()):  # per-sample norms: exact equivalence
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, nn.GroupNorm(1, child.num_features))
    method = build_method("simclr", {}, encoder, DataInfo(1, size, channels_last=False))
    dim = encoder.embed_dim
    method.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 128))
    return method


def run_variant(args: argparse.Namespace) -> None:
    from lightning_fabric import Fabric

    from selfsup.engine.accumulate import cached_step

    method = build(args.size, args.width)
    g = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randint(
            0, 256, (args.batch, 1, args.size, args.size), generator=g, dtype=torch.uint8
        )
    }
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.manual_seed(5)
    start = time.perf_counter()
    if args.variant == "micro":  # the reference: one plain step on a micro-batch alone
        batch = {"image": batch["image"][: args.micro]}
    if args.variant == "whole":  # the cache's views, micro-batch by micro-batch, one graph
        z1, z2 = [], []
        for i in range(0, args.batch, args.micro):
            x1, x2 = method.make_views({"image": batch["image"][i : i + args.micro]})
            z1.append(method.embed(x1))
            z2.append(method.embed(x2))
        loss = method.contrast([torch.cat(z1), torch.cat(z2)])
        loss.backward()
    elif args.variant == "micro":
        loss = method.training_step(batch)["loss"]
        loss.backward()
    else:
        fabric = Fabric(accelerator="cpu", devices=1)
        model = fabric.setup_module(method)
        loss = cached_step(fabric, model, batch, args.micro)["loss"]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grads = {n: p.grad for n, p in method.named_parameters() if p.grad is not None}
    torch.save(grads, args.grads_out)
    print(json.dumps({"loss": loss.item(), "seconds": seconds, "peak_mb": peak, "base_mb": base}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--micro", type=int, default=256)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--variant", choices=["whole", "cached", "micro"], help=argparse.SUPPRESS)
    parser.add_argument("--grads-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args)
        return
    results, grads = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("whole", "cached", "micro"):
            out = Path(tmp) / f"{variant}.pt"
            cmd = [sys.executable, __file__, "--variant", variant, "--grads-out", str(out)]
            cmd += ["--batch", str(args.batch), "--micro", str(args.micro)]
            cmd += ["--size", str(args.size), "--width", str(args.width)]
            line = (
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            results[variant] = json.loads(line)
            grads[variant] = torch.load(out, weights_only=True)
    gap = max((grads["whole"][n] - grads["cached"][n]).abs().max().item() for n in grads["whole"])
    scale = max(g.abs().max().item() for g in grads["whole"].values())
    print(f"SimCLR step, convnet width {args.width}, {args.size} px, batch {args.batch}")
    print(f"{'variant':<32}{'loss':>10}{'seconds':>10}{'peak MB':>10}{'step MB':>10}")
    rows = (
        ("whole", f"whole batch of {args.batch}"),
        ("cached", f"gradient cache, micro {args.micro}"),
        ("micro", f"plain batch of {args.micro}"),
    )
    for variant, label in rows:
        r = results[variant]
        step_mb = r["peak_mb"] - r["base_mb"]
        print(
            f"{label:<32}{r['loss']:>10.5f}{r['seconds']:>10.1f}{r['peak_mb']:>10.0f}{step_mb:>10.0f}"
        )
    print("step MB: peak resident memory minus the process's resident memory before the step")
    print(f"largest gradient difference: {gap:.2e} (largest gradient {scale:.2e})")


if __name__ == "__main__":
    main()
