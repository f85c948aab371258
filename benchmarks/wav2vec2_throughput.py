"""selfsup's wav2vec 2.0 pretraining step against Hugging Face's ``Wav2Vec2ForPreTraining``
of the same size, on the same batches.

    python benchmarks/wav2vec2_throughput.py                       # wav2vec2-tiny, batch 16 x 2 s
    python benchmarks/wav2vec2_throughput.py --steps 5 --rounds 1 --json w2v.json
    python benchmarks/wav2vec2_throughput.py --device cuda --precision bf16 --batch-size 64

Batches: the Asterisk prompts (every installed language, 8 kHz), each batch cropped to its
shortest prompt as selfsup's pretraining does, or generated chirps (``--audio generated``,
or when the prompts are not installed). Both sides get the same list of waveforms.

- selfsup: ``build_method("wav2vec2", {}, encoder, info)`` as the engine builds it, timed
  through its real ``training_step`` (it draws span masks and distractors itself).
- Hugging Face: ``Wav2Vec2ForPreTraining`` with the same conv stack (group norm after the
  first conv), D, depth, heads, 4·D MLP, convolutional positions, G = 2 codebooks of V = 320,
  256-dim codes, K = 100 distractors, κ = 0.1, diversity weight 0.1; its masks and distractors
  are drawn with its own ``_compute_mask_indices`` (mask_prob 0.65, length 10) and
  ``_sample_negative_indices`` before each step and counted in the step's time.

A step is zero_grad, forward (under bf16 autocast with ``--precision bf16``), backward, AdamW
step (lr 1e-3). ``--warmup`` untimed steps, then ``--steps`` timed ones; each model runs in a
fresh spawned process so that its peak memory (``ru_maxrss`` on a CPU,
``torch.cuda.max_memory_allocated`` on a GPU) is its own, alternating selfsup / HF over
``--rounds`` rounds to show how much timings wander. Throughput is seconds of audio per
second of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
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

SAMPLE_RATE = 8000


@dataclass
class Spec:
    batches: list[np.ndarray]
    warmup: int
    device: str
    precision: str
    threads: int
    seed: int


def asterisk_or_chirps(kind: str, count: int, seconds: float) -> tuple[list[np.ndarray], str]:
    """Up to ``count`` waveforms of at most ``seconds`` at 8 kHz, and where they come from."""
    if kind == "asterisk":
        try:
            from selfsup.data.audio import load_audio

            data = load_audio("asterisk", "train", sample_rate=SAMPLE_RATE, max_seconds=seconds)
            waves = [data[i]["audio"].numpy() for i in range(min(count, len(data)))]
            return [w[~np.isnan(w)] for w in waves], f"Asterisk prompts ({len(data)} in train)"
        except Exception as error:  # noqa: BLE001 - any failure falls back to generated audio
            print(f"Asterisk prompts unavailable ({error}); using generated chirps")
    rng = np.random.default_rng(0)
    waves = []
    for _ in range(count):
        t = np.arange(int(SAMPLE_RATE * rng.uniform(0.6, seconds))) / SAMPLE_RATE
        f0, slope = rng.uniform(150, 400), rng.uniform(500, 2000)
        waves.append(np.sin(2 * np.pi * (f0 * t + slope * t**2 / 2)).astype(np.float32))
    return waves, "generated chirps"


def make_batches(waves: list[np.ndarray], batch: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` (batch, T) arrays: random prompts, each cropped at a random offset to the
    batch's shortest (selfsup's ``crop_to_shortest``, done here once for both sides)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        picked = [waves[i] for i in rng.choice(len(waves), batch, replace=False)]
        shortest = min(len(w) for w in picked)
        starts = [rng.integers(0, len(w) - shortest + 1) for w in picked]
        out.append(np.stack([w[s : s + shortest] for w, s in zip(picked, starts)]))
    return out


def hf_model(encoder: Any) -> Any:
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    fe = encoder.feature_encoder
    config = Wav2Vec2Config(
        hidden_size=encoder.embed_dim,
        num_hidden_layers=len(encoder.blocks),
        num_attention_heads=encoder.blocks[0].attn.num_heads,
        intermediate_size=4 * encoder.embed_dim,
        conv_dim=[encoder.conv_dim] * len(fe.kernels),
        conv_kernel=fe.kernels,
        conv_stride=fe.strides,
        conv_bias=False,
        feat_extract_norm="group",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=encoder.pos_conv.kernel_size[0],
        num_conv_pos_embedding_groups=encoder.pos_conv.groups,
        num_codevector_groups=2,
        num_codevectors_per_group=320,
        codevector_dim=256,
        proj_codevector_dim=256,
        num_negatives=100,
        contrastive_logits_temperature=0.1,
        diversity_loss_weight=0.1,
        mask_time_prob=0.65,
        mask_time_length=10,
        feat_quantizer_dropout=0.0,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        attn_implementation="sdpa",
    )
    return Wav2Vec2ForPreTraining(config)


def run_model(model: Model, spec: Spec) -> dict[str, Any]:
    """Train ``model`` ("selfsup" or "hf") on the spec's batches; timings and peak memory."""
    from selfsup.encoders import build_encoder
    from selfsup.methods import DataInfo, build_method

    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    device = torch.device(spec.device)
    encoder = build_encoder("wav2vec2-tiny", sample_rate=SAMPLE_RATE)
    if model == "selfsup":
        info = DataInfo(modality="audio", sample_rate=SAMPLE_RATE, max_samples=2 * SAMPLE_RATE)
        net = build_method("wav2vec2", {}, encoder, info).to(device)
    else:
        net = hf_model(encoder).to(device)
    net.train()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    waves = [torch.from_numpy(b).to(device) for b in spec.batches]

    def forward(i: int) -> torch.Tensor:
        wave = waves[i]
        if model == "selfsup":
            return net.training_step({"audio": wave})["loss"]
        from transformers.models.wav2vec2.modeling_wav2vec2 import (
            _compute_mask_indices,
            _sample_negative_indices,
        )

        B, T = wave.shape
        frames = int(net._get_feat_extract_output_lengths(torch.tensor(T)))
        mask = _compute_mask_indices((B, frames), 0.65, 10, min_masks=2)
        negatives = _sample_negative_indices((B, frames), 100, mask_time_indices=mask)
        return net(
            wave,
            mask_time_indices=torch.from_numpy(mask).to(device),
            sampled_negative_indices=torch.from_numpy(negatives).to(device),
        ).loss

    step = make_step(forward, opt, device.type, spec.precision)
    losses, seconds, peak = warm_then_time(step, spec.warmup, len(waves), device.type)
    took = sum(seconds)
    audio_s = sum(w.numel() for w in waves[spec.warmup :]) / SAMPLE_RATE
    return {
        "model": model,
        "params": params,
        "seconds": took,
        "audio_s_per_s": audio_s / took,
        "steps_per_s": len(losses) / took,
        "peak_mb": peak,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = run_parser(__doc__, steps=10, warmup=2)
    parser.add_argument("--audio", choices=["asterisk", "generated"], default="asterisk")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    check_run_arguments(args, ("batch_size",))
    require_transformers()

    waves, source = asterisk_or_chirps(args.audio, 400, args.seconds)
    batches = make_batches(waves, args.batch_size, args.warmup + args.steps, args.seed)
    spec = Spec(batches, args.warmup, args.device, args.precision, args.threads, args.seed)
    lengths = [b.shape[1] / SAMPLE_RATE for b in batches[args.warmup :]]
    print(f"data: {source}; batch {args.batch_size}, cropped to {min(lengths):.2f}-"
          f"{max(lengths):.2f} s; {args.device}, {args.precision}, {args.threads} threads; "
          f"{args.warmup} warm-up + {args.steps} timed steps, {args.rounds} round(s); "
          f"torch {torch.__version__}")  # fmt: skip

    def say(round_: int, model: Model, r: dict[str, Any]) -> str:
        return (f"{model:<8} {r['audio_s_per_s']:8.1f} s of audio/s, peak {r['peak_mb']:.0f} "
                f"MB, loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}")  # fmt: skip

    runs = alternate(run_model, spec, args.rounds, args.in_process, say)
    labels = ("selfsup wav2vec2", "HF Wav2Vec2ForPreTraining")
    return median_table(args, runs, "audio_s_per_s", "s of audio / s", labels, source=source)


if __name__ == "__main__":
    main()
