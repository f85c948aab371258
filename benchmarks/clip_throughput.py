"""selfsup's CLIP training step against Hugging Face's ``CLIPModel`` of the same tower sizes,
on the same batches, in one run.

    python benchmarks/clip_throughput.py                        # batch 256, as openclipart-clip
    python benchmarks/clip_throughput.py --batch-size 64 --steps 5 --json clip.json
    python benchmarks/clip_throughput.py --device cuda --precision bf16 --batch-size 1024

The towers. ``clip-tiny``'s own image tower is a ConvNet, which ``CLIPModel`` cannot build,
and a ConvNet timed against a ViT of matched FLOPs would compare two architectures, not two
implementations. So both sides get the same ViT: selfsup builds ``clip-tiny`` with
``image_encoder: vit-tiny`` at the text tower's shape (D 128, 2 blocks, 2 heads, MLP 4·D,
patch 4 at 32 px: 0.41M parameters, the ConvNet's 0.39M), as a run sets it with
``--set encoder_args.image_encoder=vit-tiny --set encoder_args.image_options=...``, and HF's
``CLIPVisionConfig`` has exactly those sizes. The text tower is ``clip-tiny``'s own (D 128,
2 blocks, 2 heads, MLP 4·D, no dropout, learned positions, the tokenizer's vocabulary, 32
tokens) on both sides; both project to 128 without a bias, start the logit scale at 1/0.07,
and use the exact GELU (HF's default is quick_gelu; the cost is the same). The parameter
counts differ by the unused mask tokens selfsup's towers carry, the ViT patch bias and HF's
extra LayerNorm before its vision blocks (the notes list them).

Batches: openclipart pairs at 32 px (the ``openclipart-pairs`` training split, captions
tokenized by a WordPiece tokenizer selfsup trains on them, 4,000 ids and 32 tokens as the
``openclipart-clip`` preset), or generated pairs (``--pairs generated``, or when openclipart is
not installed): drawn shapes captioned with their colour, shape and place.

- selfsup: ``build_method("clip", {}, encoder, DataInfo(...))`` as the engine builds it
  (channels-last, as the engine's default ``train.channels_last``), timed through its real
  ``training_step`` on the uint8 batch: it normalises the images, runs both towers and the
  projections, and the symmetric InfoNCE in float32 with the clamped learned scale.
- Hugging Face: ``CLIPModel(config)`` with ``return_loss=True``, SDPA attention; the same
  normalised images (selfsup's ``prepare``, counted in its step), ``attention_mask`` =
  tokens != [PAD], and [SEP] as its end-of-text token, where it pools the text.

A step is zero_grad, forward (under bf16 autocast with ``--precision bf16``), backward, AdamW
step (lr 5e-4, weight decay 0.2 on every parameter: the preset's). ``--warmup`` untimed steps,
then ``--steps`` timed ones; each model in a fresh spawned process for its own peak memory
(``ru_maxrss`` on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU), alternating
selfsup / HF over ``--rounds`` rounds. FLOPs per step are counted by torch's
``FlopCounterMode`` over one extra untimed forward and backward pass of each model.

On a machine others load, wall times follow their load: the headline ratio is that of the
median step's pairs/s, and the table adds each step's CPU time (``time.process_time``), which
with ``--threads 1`` hardly depends on the load.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import versus_hf
from torch import Tensor, nn
from versus_hf import Model

from selfsup.data.tokenizer import CLS_ID, PAD_ID, SEP_ID, encode_batch, train_tokenizer
from selfsup.encoders import ENCODERS
from selfsup.errors import SelfsupError

LABELS: dict[str, str] = {"selfsup": "selfsup `clip`", "hf": "HF `CLIPModel`"}
LR, WEIGHT_DECAY = 5e-4, 0.2
"""AdamW settings of both models (those of the openclipart-clip preset)."""
TEXT_TOWER: dict[str, Any] = ENCODERS["clip-tiny"].defaults["text_options"]
"""clip-tiny's text tower: D 128, 2 blocks, 2 heads, no dropout."""


@dataclass
class RunSpec:
    """Everything a child process needs: the batches, the tower sizes and the settings."""

    images: np.ndarray  # (S, B, 3, H, W) uint8: warm-up batches first, then timed ones
    tokens: np.ndarray  # (S, B, L) int64
    vocab_size: int
    image: dict[str, Any]  # vit-tiny options: embed_dim, depth, num_heads, patch_size
    text: dict[str, Any] = field(default_factory=lambda: dict(TEXT_TOWER))
    proj_dim: int = 128
    warmup: int = 2
    device: str = "cpu"
    precision: str = "32"
    threads: int = 1
    seed: int = 0


# --- data ----------------------------------------------------------------------------------

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220),
           "yellow": (230, 210, 40), "black": (20, 20, 20), "purple": (140, 50, 170)}  # fmt: skip
PLACES = {"top left": (0, 0), "top right": (0, 1), "bottom left": (1, 0), "bottom right": (1, 1)}


def generated_pairs(n: int, size: int, seed: int = 0) -> tuple[list[Tensor], list[str]]:
    """``n`` uint8 (3, size, size) drawings of a square or a disk of some colour in some
    quarter on a light noisy background, each captioned with what it shows."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, captions = [], []
    for _ in range(n):
        colour, place, shape = (rng.choice(list(d)) for d in (COLOURS, PLACES, ("square", "disk")))
        image = torch.randint(200, 256, (3, size, size), generator=g, dtype=torch.uint8)
        half = size // 2
        cy, cx = (half * v + half // 2 for v in PLACES[place])
        r = rng.randint(size // 8, size // 4)
        inside = (ys - cy).abs().maximum((xs - cx).abs()) <= r
        if shape == "disk":
            inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r
        image[:, inside] = torch.tensor(COLOURS[colour], dtype=torch.uint8)[:, None]
        images.append(image)
        extra = rng.choice(["", " on a light background", " drawn in flat colour"])
        captions.append(f"a {colour} {shape} in the {place}{extra}.")
    return images, captions


def load_pairs_batches(
    kind: str, size: int, batch_size: int, count: int, vocab_size: int, max_length: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int, str]:
    """-> images (count, B, 3, S, S) uint8, tokens (count, B, L) int64, the tokenizer's
    vocabulary size and a line saying where the pairs came from. Only the images the batches
    use are decoded."""
    source = ""
    if kind == "openclipart":
        from selfsup.data.pairs import decode_images, load_pairs

        try:
            corpus = load_pairs("openclipart-pairs", "train", image_size=size)
            captions = corpus.captions
            picked = versus_hf.batch_indices(len(captions), batch_size, count, seed)  # (count, B)
            order = sorted(set(picked.flatten().tolist()))

            def fail(what: str) -> None:
                raise SelfsupError(what)

            decoded, _, _ = decode_images(
                [corpus.images[i] for i in order], [corpus.keys[i] for i in order], size, fail
            )
            row = {i: k for k, i in enumerate(order)}
            images = decoded[torch.tensor([[row[i] for i in b] for b in picked.tolist()])]
            source = f"openclipart-pairs train split ({len(captions):,} pairs, {size} px)"
        except SelfsupError as error:
            print(f"note: openclipart pairs not available ({error}); using generated pairs")
            kind = "generated"
    if kind == "generated":
        drawn, captions = generated_pairs(2000, size, seed)
        picked = versus_hf.batch_indices(len(captions), batch_size, count, seed)
        images = torch.stack(drawn)[picked]  # (count, B, 3, S, S)
        source = f"generated pairs ({len(captions):,} captioned shapes, {size} px)"
    tok = train_tokenizer(captions, "wordpiece", vocab_size=vocab_size)
    tokens = encode_batch(tok, captions, max_length)[picked]  # (count, B, L)
    return images.numpy(), tokens.numpy(), tok.get_vocab_size(), source


# --- the two models ------------------------------------------------------------------------


def selfsup_clip(spec: RunSpec) -> nn.Module:
    """selfsup's CLIP as the engine builds it, with a ViT image tower."""
    from selfsup.data.info import DataInfo
    from selfsup.encoders import build_encoder
    from selfsup.methods import build_method

    _, _, channels, size, _ = spec.images.shape
    encoder = build_encoder(
        "clip-tiny",
        in_channels=channels,
        image_size=size,
        vocab_size=spec.vocab_size,
        max_length=spec.tokens.shape[-1],
        pad_id=PAD_ID,
        image_encoder="vit-tiny",
        image_options=spec.image,
        text_options=spec.text,
        proj_dim=spec.proj_dim,
    )
    info = DataInfo(
        channels=channels,
        image_size=size,
        modality="pairs",
        vocab_size=spec.vocab_size,
        max_length=spec.tokens.shape[-1],
    )
    net = build_method("clip", {}, encoder, info)
    return net.to(memory_format=torch.channels_last)  # the engine's train.channels_last


def hf_clip(spec: RunSpec) -> nn.Module:
    """``CLIPModel`` with the same towers: sizes, exact GELU, [SEP] as end of text."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    _, _, channels, size, _ = spec.images.shape
    text, image = spec.text, spec.image
    text_config = CLIPTextConfig(
        vocab_size=spec.vocab_size,
        hidden_size=text["embed_dim"],
        intermediate_size=int(text["embed_dim"] * text.get("mlp_ratio", 4.0)),
        num_hidden_layers=text["depth"],
        num_attention_heads=text["num_heads"],
        max_position_embeddings=spec.tokens.shape[-1],
        hidden_act="gelu",
        attention_dropout=text.get("dropout", 0.0),
        pad_token_id=PAD_ID,
        bos_token_id=CLS_ID,
        eos_token_id=SEP_ID,  # pools the first [SEP]: every row of encode_batch has one
        projection_dim=spec.proj_dim,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=image["embed_dim"],
        intermediate_size=int(image["embed_dim"] * image.get("mlp_ratio", 4.0)),
        num_hidden_layers=image["depth"],
        num_attention_heads=image["num_heads"],
        num_channels=channels,
        image_size=size,
        patch_size=image["patch_size"],
        hidden_act="gelu",
        projection_dim=spec.proj_dim,
    )
    config = CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=spec.proj_dim,
        logit_scale_init_value=math.log(1 / 0.07),
        attn_implementation="sdpa",
    )
    return CLIPModel(config)


def only_here(model: Model, net: Any) -> dict[str, int]:
    """Parameters one side has and the other lacks (the rest match one for one)."""
    if model == "selfsup":
        towers = net.encoder
        return {
            "image mask_token (unused by CLIP)": towers.image.mask_token.numel(),
            "text mask_token (unused by CLIP)": towers.text.mask_token.numel(),
            "ViT patch-embedding bias": towers.image.patch_embed.bias.numel(),
        }
    return {
        "vision pre-LayerNorm": sum(p.numel() for p in net.vision_model.pre_layrnorm.parameters())
    }


# --- the child process: one model, warm-up, timed steps ------------------------------------


def run_model(model: Model, spec: RunSpec) -> dict[str, Any]:
    """Train ``model`` on the spec's batches; meant to run in a fresh process. Returns timings,
    memory, FLOPs, parameter counts and the first and last loss."""
    from torch.utils.flop_counter import FlopCounterMode

    import selfsup.methods  # noqa: F401 - libraries load before the memory baseline
    from selfsup.views import prepare

    if model == "hf":
        import transformers.models.clip.modeling_clip  # noqa: F401

    torch.set_num_threads(spec.threads)
    device = spec.device
    images = torch.from_numpy(spec.images).to(device)  # (S, B, 3, H, W) uint8
    tokens = torch.from_numpy(spec.tokens).to(device)  # (S, B, L)
    baseline = versus_hf.memory_baseline(device)

    torch.manual_seed(spec.seed)
    net: Any = (selfsup_clip if model == "selfsup" else hf_clip)(spec).to(device)
    net.train()

    def forward(i: int) -> Tensor:
        if model == "selfsup":
            return net.training_step({"image": images[i], "tokens": tokens[i]})["loss"]
        out = net(
            input_ids=tokens[i],
            pixel_values=prepare(images[i]),
            attention_mask=(tokens[i] != PAD_ID).long(),
            return_loss=True,
        )
        return out.loss

    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    step = versus_hf.make_step(forward, optimizer, device, spec.precision)
    losses = [step(i) for i in range(spec.warmup)]
    cpu_start = time.process_time()
    timed, seconds = versus_hf.timed_steps(step, range(spec.warmup, len(images)), device)
    cpu_seconds = time.process_time() - cpu_start
    losses += timed
    memory = versus_hf.memory_used(device, baseline)

    optimizer.zero_grad(set_to_none=True)  # untimed: the FLOPs of one forward and backward
    with FlopCounterMode(display=False) as counter, versus_hf.autocast(device, spec.precision):
        forward(len(images) - 1).backward()
    flops = counter.get_total_flops()

    pairs = spec.images.shape[1] * len(seconds)
    return {
        "model": model,
        "params": sum(p.numel() for p in net.parameters()),
        "params_only_here": only_here(model, net),
        "ms_per_step": 1000 * sum(seconds) / len(seconds),
        "ms_per_step_median": 1000 * statistics.median(seconds),
        "cpu_ms_per_step": 1000 * cpu_seconds / len(seconds),
        "samples_per_s": pairs / sum(seconds),
        "samples_per_s_median": spec.images.shape[1] / statistics.median(seconds),
        "gflop_per_step": flops / 1e9,
        "gflop_per_s": flops * len(seconds) / sum(seconds) / 1e9,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        **memory,
    }


# --- report --------------------------------------------------------------------------------


def print_table(
    runs: list[dict[str, Any]], summary: dict[Model, dict[str, Any]], cuda: bool
) -> None:
    """A markdown table: every run, then each model's mean."""
    memory = "cuda_peak_mb" if cuda else "peak_rss_mb"
    columns: dict[str, Callable[[dict[str, Any]], str]] = {
        "model": lambda r: LABELS[r["model"]],
        "round": lambda r: str(r["round"]),
        "ms/step": lambda r: f"{r['ms_per_step']:,.0f}",
        "CPU ms/step": lambda r: f"{r['cpu_ms_per_step']:,.0f}",
        "pairs/s": lambda r: f"{r['samples_per_s']:,.1f}",
        "pairs/s, median step": lambda r: f"{r['samples_per_s_median']:,.1f}",
        "GFLOP/s": lambda r: f"{r['gflop_per_s']:,.1f}",
        "CUDA peak MB" if cuda else "peak RSS MB": lambda r: f"{r[memory]:,.0f}",
        "+RSS MB": lambda r: f"{r['rss_increase_mb']:,.0f}",
        "loss first → last": lambda r: (
            f"{r['first_loss']:.2f} → {r['last_loss']:.2f}" if "first_loss" in r else ""
        ),
    }
    means = ({**s, "model": m, "round": "mean"} for m, s in summary.items())
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for r in [*runs, *means]:
        print("| " + " | ".join(cell(r) for cell in columns.values()) + " |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = versus_hf.run_parser(__doc__, steps=10, warmup=2)
    sources = ["openclipart", "generated"]
    help = "openclipart pairs (generated when openclipart is not installed) or drawn shapes"
    p.add_argument("--pairs", choices=sources, default="openclipart", help=help)
    p.add_argument("--batch-size", type=int, default=256, help="pairs per step (preset: 256)")
    p.add_argument("--image-size", type=int, default=32, help="image side (preset: 32)")
    p.add_argument("--patch-size", type=int, default=4, help="ViT patch side: 64 patches at 32 px")
    p.add_argument("--image-dim", type=int, default=128, help="ViT width (the text tower's)")
    p.add_argument("--image-depth", type=int, default=2, help="ViT blocks (the text tower's)")
    p.add_argument("--image-heads", type=int, default=2, help="ViT heads (the text tower's)")
    p.add_argument("--max-length", type=int, default=32, help="tokens per caption (preset: 32)")
    help = "WordPiece vocabulary asked of the trainer (preset: 4000; the captions may give fewer)"
    p.add_argument("--vocab-size", type=int, default=4000, help=help)
    args = p.parse_args(argv)
    versus_hf.check_run_arguments(args, ("batch_size", "image_dim", "image_depth", "image_heads"))
    if args.image_dim % args.image_heads:
        raise SelfsupError(f"--image-dim {args.image_dim} is not divisible by --image-heads")
    if args.image_size % args.patch_size:
        raise SelfsupError(f"--patch-size {args.patch_size} does not divide --image-size")
    if args.max_length < 3:
        raise SelfsupError("--max-length must leave room for [CLS], a token and [SEP]: 3 or more")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time both models on the same batches, print the table and the notes, and return every
    number (written to --json too when it is given)."""
    versus_hf.require_transformers()
    args = parse_args(argv)
    count = args.warmup + args.steps
    images, tokens, vocab, source = load_pairs_batches(
        args.pairs, args.image_size, args.batch_size, count, args.vocab_size, args.max_length,
        args.seed,
    )  # fmt: skip
    image = {"embed_dim": args.image_dim, "depth": args.image_depth,
             "num_heads": args.image_heads, "patch_size": args.patch_size}  # fmt: skip
    spec = RunSpec(images, tokens, vocab, image, warmup=args.warmup, device=args.device,
                   precision=args.precision, threads=args.threads, seed=args.seed)  # fmt: skip
    fill = float((tokens[args.warmup :] != PAD_ID).mean())
    t = spec.text
    print(
        f"data: {source}; WordPiece vocabulary {vocab} (asked {args.vocab_size}); batch "
        f"{args.batch_size} pairs, captions of {args.max_length} tokens ({100 * fill:.0f}% real)"
    )
    print(
        f"towers: ViT D {args.image_dim}, {args.image_depth} blocks, {args.image_heads} heads, "
        f"patch {args.patch_size} at {args.image_size} px | text D {t['embed_dim']}, "
        f"{t['depth']} blocks, {t['num_heads']} heads | MLP 4·D, projections to {spec.proj_dim}"
    )
    print(
        f"{args.device}, precision {args.precision}, {args.threads} threads; {args.warmup} "
        f"warm-up + {args.steps} timed steps, {args.rounds} round(s); torch {torch.__version__}, "
        f"python {sys.version.split()[0]}\n"
    )

    def say(round_: int, model: Model, r: dict[str, Any]) -> str:
        return (
            f"{LABELS[model]:<16} {r['samples_per_s']:8.1f} pairs/s, peak {r['peak_rss_mb']:.0f} "
            f"MB, loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}"
        )

    runs = versus_hf.alternate(run_model, spec, args.rounds, args.in_process, say)
    means = ["ms_per_step", "cpu_ms_per_step", "samples_per_s", "samples_per_s_median"]
    means += ["gflop_per_s"]
    means += ["peak_rss_mb", "rss_increase_mb"]
    same = ["params", "params_only_here", "gflop_per_step"]
    summary = {
        m: versus_hf.summarise(runs, m, [*means, "cuda_peak_mb"], same) for m in versus_hf.MODELS
    }
    print()
    print_table(runs, summary, args.device == "cuda")

    ours, theirs = summary["selfsup"], summary["hf"]
    notes = [
        f"parameters: selfsup {ours['params']:,}, HF {theirs['params']:,}. Only in selfsup: "
        + ", ".join(f"{k} {v:,}" for k, v in ours["params_only_here"].items())
        + "; only in HF: "
        + ", ".join(f"{k} {v:,}" for k, v in theirs["params_only_here"].items())
        + ".",
        f"work: {ours['gflop_per_step']:.3g} GFLOP per forward and backward on selfsup's side, "
        f"{theirs['gflop_per_step']:.3g} on HF's, as FlopCounterMode counts them (matmuls and "
        "convolutions; attention inside SDPA on a CPU is not counted, on either side).",
        "design differences that are part of what is compared (HF's model is used unmodified "
        "but for its sizes): HF's text tower attends causally and pools at [SEP], selfsup's "
        "(clip-tiny's setting) attends both ways and averages the non-pad states; HF's vision "
        "tower normalises the tokens before its blocks too; selfsup computes the loss in "
        "float32 under bf16 and clamps the logit scale at 100; selfsup's training_step also "
        "returns the image features and the logit scale, as it does under the engine.",
        f"CPU time per timed step (process time, all of its threads): selfsup "
        f"{ours['cpu_ms_per_step']:,.0f} ms, HF {theirs['cpu_ms_per_step']:,.0f} ms; with "
        "--threads 1 this is the steadiest figure on a shared machine, where wall times "
        "follow the other processes' load.",
        "both timed steps include normalising the uint8 images (selfsup's prepare) and the "
        "zero_grad, forward, backward and AdamW step.",
        versus_hf.memory_note(args.in_process, args.device),
    ]
    return versus_hf.finish(
        args,
        runs,
        summary,
        notes,
        "samples_per_s_median",  # on a loaded machine the median step is the steadier figure
        vocab_size=vocab,
        data=source,
        token_fill=fill,
    )


if __name__ == "__main__":
    main()
