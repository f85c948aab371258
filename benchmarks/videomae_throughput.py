"""selfsup's VideoMAE pretraining step against Hugging Face's ``VideoMAEForPreTraining`` of the
same size, on the same batches.

    python benchmarks/videomae_throughput.py                  # the moving-fashion-mnist preset
    python benchmarks/videomae_throughput.py --steps 5 --rounds 1 --json vmae.json
    python benchmarks/videomae_throughput.py --device cuda --precision bf16 --batch-size 64

Batches: moving Fashion-MNIST clips (8 frames of 32 px, grayscale), or random clips
(``--clips generated``, or when Fashion-MNIST is not installed). Both sides get the same clips.

- selfsup: ``build_method("videomae", {}, encoder, info)`` with the preset's ``video-vit-tiny``
  (cubes of 2 frames × 8² px, D 192, 4 blocks, 3 heads; decoder 96 wide, 2 blocks), timed
  through its real ``training_step`` (it draws its own tube mask, 90%).
- Hugging Face: ``VideoMAEForPreTraining`` with the same encoder and decoder sizes, mean
  pooling, per-cube normalised targets; its ``bool_masked_pos`` is a tube mask drawn by the
  same rule before each step and counted in the step's time. HF decodes only the hidden
  cubes' positions in its last layer; selfsup's decoder predicts every cube and the loss reads
  the hidden ones.

A step is zero_grad, forward (under bf16 autocast with ``--precision bf16``), backward, AdamW
step (lr 1.5e-3). ``--warmup`` untimed steps, then ``--steps`` timed ones; each model runs in a
fresh spawned process so that its peak memory is its own, alternating selfsup / HF over
``--rounds`` rounds. Throughput is clips per second.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import torch
from versus_hf import (
    Model,
    alternate,
    check_run_arguments,
    make_step,
    median_table,
    require_transformers,
    run_parser,
    warm_then_time,
)

FRAMES, SIZE, PATCH, TUBELET = 8, 32, 8, 2


@dataclass
class Spec:
    batches: list[torch.Tensor]
    warmup: int
    device: str
    precision: str
    threads: int
    seed: int


def clips_for(kind: str, count: int, batch: int, seed: int) -> tuple[list[torch.Tensor], str]:
    """``count`` uint8 batches (B, T, 1, 32, 32) of clips, and where they come from."""
    g = torch.Generator().manual_seed(seed)
    if kind == "moving-fashion-mnist":
        try:
            from selfsup.data.video import moving_fashion_mnist

            clips = moving_fashion_mnist("train")[0]
            picks = torch.randperm(len(clips), generator=g)[: count * batch]
            return list(clips[picks].split(batch)), "moving Fashion-MNIST (6,000 train clips)"
        except Exception as error:  # noqa: BLE001 - any failure falls back to random clips
            print(f"moving Fashion-MNIST unavailable ({error}); using random clips")
    shape = (batch, FRAMES, 1, SIZE, SIZE)
    batches = [torch.randint(0, 256, shape, generator=g, dtype=torch.uint8) for _ in range(count)]
    return batches, "random clips"


def hf_model() -> Any:
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    config = VideoMAEConfig(
        image_size=SIZE,
        patch_size=PATCH,
        num_channels=1,
        num_frames=FRAMES,
        tubelet_size=TUBELET,
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=3,
        intermediate_size=4 * 192,
        decoder_hidden_size=96,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=3,
        decoder_intermediate_size=4 * 96,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        qkv_bias=True,
        use_mean_pooling=True,
        norm_pix_loss=True,
        attn_implementation="sdpa",
    )
    return VideoMAEForPreTraining(config)


def run_model(model: Model, spec: Spec) -> dict[str, Any]:
    """Train ``model`` ("selfsup" or "hf") on the spec's batches; timings and peak memory."""
    from selfsup.encoders import build_encoder
    from selfsup.methods import DataInfo, build_method
    from selfsup.methods.videomae import to_clip_input
    from selfsup.views.video import tube_mask

    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    device = torch.device(spec.device)
    if model == "selfsup":
        encoder = build_encoder(
            "video-vit-tiny", in_channels=1, image_size=SIZE, frames=FRAMES, patch_size=PATCH
        )
        info = DataInfo(modality="video", channels=1, image_size=SIZE, max_length=FRAMES)
        net = build_method("videomae", {}, encoder, info).to(device)
    else:
        net = hf_model().to(device)
    net.train()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1.5e-3, weight_decay=0.05)
    clips = [b.to(device) for b in spec.batches]
    slices, spatial = FRAMES // TUBELET, (SIZE // PATCH) ** 2

    def forward(i: int) -> torch.Tensor:
        if model == "selfsup":
            return net.training_step({"video": clips[i]})["loss"]
        mask = tube_mask(len(clips[i]), slices, spatial, device=device)
        return net(to_clip_input(clips[i]), bool_masked_pos=mask).loss

    step = make_step(forward, opt, device.type, spec.precision)
    losses, seconds, peak = warm_then_time(step, spec.warmup, len(clips), device.type)
    count = sum(len(c) for c in clips[spec.warmup :])
    return {
        "model": model,
        "params": params,
        "seconds": sum(seconds),
        "clips_per_s": count / sum(seconds),
        "median_step_ms": 1000 * statistics.median(seconds),
        "peak_mb": peak,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = run_parser(__doc__, steps=10, warmup=2)
    parser.add_argument(
        "--clips", choices=["moving-fashion-mnist", "generated"], default="moving-fashion-mnist"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    check_run_arguments(args, ("batch_size",))
    require_transformers()

    batches, source = clips_for(args.clips, args.warmup + args.steps, args.batch_size, args.seed)
    spec = Spec(batches, args.warmup, args.device, args.precision, args.threads, args.seed)
    print(f"data: {source}; batch {args.batch_size} x {FRAMES} frames of {SIZE} px; "
          f"{args.device}, {args.precision}, {args.threads} threads; {args.warmup} warm-up + "
          f"{args.steps} timed steps, {args.rounds} round(s); torch {torch.__version__}")  # fmt: skip

    def say(round_: int, model: Model, r: dict[str, Any]) -> str:
        return (f"{model:<8} {r['clips_per_s']:8.1f} clips/s, peak {r['peak_mb']:.0f} MB, "
                f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}")  # fmt: skip

    runs = alternate(run_model, spec, args.rounds, args.in_process, say)
    labels = ("selfsup videomae", "HF VideoMAEForPreTraining")
    return median_table(args, runs, "clips_per_s", "clips / s", labels, source=source)


if __name__ == "__main__":
    main()
