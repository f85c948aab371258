"""The frame-encoder baseline for video: an image encoder pretrained on single frames of the
moving Fashion-MNIST clips, its frame features averaged over each clip, probed for the garment
and for the direction of motion exactly as ``selfsup evaluate`` probes a video encoder.

    python benchmarks/video_frames.py                      # SimCLR on frames, 400 steps of 256
    python benchmarks/video_frames.py --method mae --encoder vit-tiny --steps 400
    python benchmarks/video_frames.py --frames-run runs/frames-simclr   # probe an existing run

The budget matches the VideoMAE preset's: 400 steps of 32 clips × 8 frames are 102,400
frames, as are 400 steps of 256 single frames. The frames are every frame of the 6,000
training clips (48,000 images of 32 px, written once as an npz source); the probes are the
label-efficiency protocol's linear probe and kNN (``evaluate_features``) at the VideoMAE
preset's fractions and seeds, on the 2,000 test clips. The same encoder at random init is
probed beside it. Averaging frame features cannot tell a clip played forwards from one played
backwards, so the direction probe shows what a video representation adds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from selfsup.data.video import moving_fashion_mnist
from selfsup.errors import SelfsupError
from selfsup.evaluate.protocol import FeatureSet, evaluate_features
from selfsup.evaluate.run import random_init_encoder
from selfsup.export import load_encoder
from selfsup.views import prepare

LABELS = ("garment", "direction")


def write_frames(path: Path) -> int:
    """Every frame of the training clips as an ``npz:`` image source -> how many."""
    clips, garments, _ = moving_fashion_mnist("train")  # (N, T, C, H, W) uint8
    frames = clips.flatten(0, 1).numpy()  # (N·T, C, H, W)
    labels = garments.repeat_interleave(clips.shape[1]).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=frames, labels=labels)
    return len(frames)


def pretrain(args: argparse.Namespace, frames: Path, out: Path) -> float:
    """``selfsup pretrain`` on the frames, exported to ``out`` -> wall seconds."""
    command = [
        sys.executable, "-m", "selfsup", "pretrain", "--method", args.method,
        "--encoder", args.encoder, "--data", f"npz:{frames}", "--max-steps", str(args.steps),
        "--batch-size", str(args.batch_size), "--out", str(out), "--no-eval",
        "--set", "train.max_time=null",
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


@torch.no_grad()
def clip_features(encoder: nn.Module, clips: Tensor, batch: int = 64) -> Tensor:
    """(N, T, C, H, W) uint8 clips -> (N, D): the mean of the encoder's frame features."""
    channels = (getattr(encoder, "build_args", None) or {}).get("in_channels")
    out = []
    for start in range(0, len(clips), batch):
        part = clips[start : start + batch]
        x = prepare(part.flatten(0, 1), channels=channels)  # (B·T, C, H, W) normalised
        features = encoder(x).float()  # (B·T, D)
        out.append(features.view(len(part), part.shape[1], -1).mean(dim=1))
    return torch.cat(out)


def probe(encoders: dict[str, nn.Module], args: argparse.Namespace) -> list[dict[str, Any]]:
    train_clips, train_garments, train_directions = moving_fashion_mnist("train")
    test_clips, test_garments, test_directions = moving_fashion_mnist("test")
    labels = {
        "garment": (train_garments, test_garments),
        "direction": (train_directions, test_directions),
    }
    rows = []
    for name, encoder in encoders.items():
        encoder.eval()
        start = time.perf_counter()
        train_x, test_x = clip_features(encoder, train_clips), clip_features(encoder, test_clips)
        print(f"{name}: features in {time.perf_counter() - start:.0f} s", flush=True)
        for label in LABELS:
            train_y, test_y = labels[label]
            found = evaluate_features(
                {name: FeatureSet(train_x, train_y.long(), test_x, test_y.long())},
                fractions=args.fractions,
                seeds=args.seeds,
            )
            rows += [row | {"label": label} for row in found]
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| encoder | label | protocol | " + " | ".join(
        f"{f:.0%} labels" for f in sorted({r["label_fraction"] for r in rows})) + " |"]  # fmt: skip
    lines.append("|---" * (3 + len({r["label_fraction"] for r in rows})) + "|")
    keys = dict.fromkeys((r["encoder"], r["label"], r["protocol"]) for r in rows)
    for encoder, label, protocol in keys:
        cells = [
            f"{100 * r['accuracy']:.1f}" + (f" ± {100 * r['std']:.1f}" if r["seeds"] > 1 else "")
            for r in sorted(rows, key=lambda r: r["label_fraction"])
            if (r["encoder"], r["label"], r["protocol"]) == (encoder, label, protocol)
        ]
        lines.append(f"| {encoder} | {label} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--method", default="simclr", help="image method pretrained on the frames")
    p.add_argument("--encoder", default="convnet")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--work", type=Path, default=Path("runs/video-frames"))
    p.add_argument("--frames-run", type=Path, default=None, help="probe this run, skip training")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        raise SelfsupError("--steps and --batch-size must be at least 1")

    run, wall = args.frames_run, None
    if run is None:
        frames = args.work / "frames.npz"
        if not frames.is_file():
            print(f"wrote {write_frames(frames):,} training frames to {frames}", flush=True)
        run = args.work / f"frames-{args.method}"
        wall = pretrain(args, frames, run)
    encoder = load_encoder(run)
    name = f"{args.method} on frames"
    rows = probe({name: encoder, "random init": random_init_encoder(encoder, 0)}, args)
    print()
    print(table(rows))
    if wall is not None:
        print(f"\npretraining wall time: {wall:.0f} s ({args.steps} steps of {args.batch_size})")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "pretrain_s": wall}, indent=2))
    return rows


if __name__ == "__main__":
    try:
        main()
    except SelfsupError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
