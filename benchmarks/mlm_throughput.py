"""selfsup's MLM training step against Hugging Face's ``BertForMaskedLM`` of the same size.

    python benchmarks/mlm_throughput.py                          # transformer-tiny, batch 64
    python benchmarks/mlm_throughput.py --steps 5 --json mlm.json
    python benchmarks/mlm_throughput.py --device cuda --precision bf16 --batch-size 256

Both models train on the same fixed list of batches: the fortunes training texts (a generated
corpus when fortunes are not installed, or with ``--corpus generated``), a WordPiece
vocabulary trained on them with selfsup, rows encoded by ``encode_batch`` ([CLS] .. [SEP]
[PAD] ..).

- selfsup: ``build_method("mlm", {}, encoder, DataInfo(...))`` exactly as the engine builds
  it, timed through its real ``training_step`` (it draws BERT masks itself, then runs the
  encoder, the head on the selected positions and the loss).
- Hugging Face: ``BertForMaskedLM`` (SDPA attention, same D, depth, heads, 4·D MLP, vocabulary,
  max length, dropout 0.1, exact GELU) with ``labels`` = the MLM targets (-100 elsewhere) and
  ``attention_mask`` = tokens != [PAD].

Identical masks: before step i both sides reseed the global RNG with ``seed + i`` and draw with
the same ``selfsup.views.masking.bert_mask`` call (inside ``training_step`` for selfsup, just
before the forward pass for HF), so both models see the same inputs and targets, and both
timed steps include drawing them. The warm-up steps check it: digests of both sides' masks
are compared.

A step is zero_grad, forward (under bf16 autocast with ``--precision bf16``), backward,
AdamW step (lr 5e-4, weight decay 0.01 on every parameter, for both). ``--warmup`` untimed
steps, then ``--steps`` timed ones. Each model runs in a fresh spawned process (unless
``--in-process``, meant for smoke tests) so that its peak memory is its own (resident set
``ru_maxrss`` on a CPU, and its rise above the child's baseline once data are loaded;
``torch.cuda.max_memory_allocated`` on a GPU), alternating selfsup / HF / selfsup / HF over
``--rounds`` rounds to show how much timings wander.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from versus_hf import (
    MODELS,
    Model,
    alternate,
    batch_indices,
    check_run_arguments,
    finish,
    make_step,
    memory_baseline,
    memory_note,
    memory_used,
    require_transformers,
    run_parser,
    summarise,
    timed_steps,
)

from selfsup.data.tokenizer import PAD_ID, encode_batch, train_tokenizer
from selfsup.errors import SelfsupError

LABELS: dict[str, str] = {"selfsup": "selfsup MLM", "hf": "HF BertForMaskedLM"}
LR, WEIGHT_DECAY = 5e-4, 0.01
"""AdamW settings of both models (those of the fortunes-mlm preset)."""


@dataclass
class RunSpec:
    """Everything a child process needs: sizes, the batches, the tokenizer and the settings."""

    batches: np.ndarray  # (S, B, L) int64 token ids: warm-up batches first, then timed ones
    tokenizer_json: str
    vocab_size: int
    max_length: int
    embed_dim: int
    depth: int
    heads: int
    warmup: int
    device: str
    precision: Literal["32", "bf16"]
    threads: int
    seed: int


# --- data ----------------------------------------------------------------------------------


def generated_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """``n`` sentences of made-up words (Zipf-like frequencies, 3 to 60 words each), so that
    rows have varied lengths and padding like real text."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "qu", "da"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(2000)]
    weights = [1 / (r + 1) for r in range(len(words))]
    return [
        " ".join(rng.choices(words, weights=weights, k=rng.randint(3, 60))) + "." for _ in range(n)
    ]


def load_corpus(kind: str) -> tuple[list[str], str]:
    """The training texts and a line saying where they came from."""
    if kind == "fortunes":
        from selfsup.data.text import load_texts

        try:
            texts = load_texts("fortunes", "train").texts
            return texts, f"fortunes train split ({len(texts):,} texts)"
        except SelfsupError as error:
            note = f"fortunes not available ({error}); using a generated corpus instead"
            print(f"note: {note}")
            texts = generated_corpus()
            return texts, note
    texts = generated_corpus()
    return texts, f"generated corpus ({len(texts):,} sentences of made-up words)"


# --- the child process: one model, warm-up, timed steps ------------------------------------


def _digest(inputs: Tensor, targets: Tensor) -> str:
    """A short hash of one step's masked inputs and targets."""
    h = hashlib.sha1(inputs.cpu().numpy().tobytes())
    h.update(targets.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def run_model(model: Model, spec: RunSpec) -> dict[str, Any]:
    """Train ``model`` on ``spec.batches``; meant to run in a fresh process. Returns timings,
    memory, parameter counts, first/last loss and the digests of the warm-up masks."""
    from tokenizers import Tokenizer

    from selfsup.data.tokenizer import special_ids
    from selfsup.encoders import build_encoder
    from selfsup.methods import DataInfo, build_method
    from selfsup.views import masking

    if model == "hf":
        from transformers import BertConfig, BertForMaskedLM

    torch.set_num_threads(spec.threads)
    device = spec.device
    tok = Tokenizer.from_str(spec.tokenizer_json)
    batches = torch.from_numpy(spec.batches).to(device)  # (S, B, L)
    ids = special_ids(tok)
    mask_args = {
        "vocab_size": spec.vocab_size,
        "mask_id": ids["[MASK]"],
        "special_ids": [ids[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")],
    }
    baseline = memory_baseline(device)

    torch.manual_seed(spec.seed)
    extra: dict[str, int]
    if model == "selfsup":
        encoder = build_encoder(
            "transformer-tiny",
            vocab_size=spec.vocab_size,
            max_length=spec.max_length,
            pad_id=PAD_ID,
            depth=spec.depth,
            embed_dim=spec.embed_dim,
            num_heads=spec.heads,
        )
        info = DataInfo(
            modality="text",
            vocab_size=spec.vocab_size,
            max_length=spec.max_length,
            tokenizer=tok,
        )
        net = build_method("mlm", {}, encoder, info).to(device)
        extra = {"mask_token (unused by MLM)": encoder.mask_token.numel()}

        def forward(tokens: Tensor) -> Tensor:
            return net.training_step({"tokens": tokens})["loss"]  # draws the masks itself

    else:
        config = BertConfig(
            vocab_size=spec.vocab_size,
            hidden_size=spec.embed_dim,
            num_hidden_layers=spec.depth,
            num_attention_heads=spec.heads,
            intermediate_size=4 * spec.embed_dim,
            max_position_embeddings=spec.max_length,
            type_vocab_size=1,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            hidden_act="gelu",
            pad_token_id=PAD_ID,
            attn_implementation="sdpa",
        )
        net = BertForMaskedLM(config).to(device)
        extra = {"token_type_embeddings": net.bert.embeddings.token_type_embeddings.weight.numel()}

        def forward(tokens: Tensor) -> Tensor:
            inputs, targets = masking.bert_mask(tokens, **mask_args)  # (B, L) each
            out = net(input_ids=inputs, attention_mask=tokens != PAD_ID, labels=targets)
            return out.loss

    net.train()
    params = sum(p.numel() for p in net.parameters())  # tied weights counted once
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def seeded_forward(i: int) -> Tensor:
        torch.manual_seed(spec.seed + i)  # the same mask draw on both sides
        return forward(batches[i])

    step = make_step(seeded_forward, optimizer, device, spec.precision)

    # Warm-up: untimed; record each step's masks (selfsup: by wrapping the bert_mask that
    # training_step calls; HF: the ones forward drew) to check that both sides see the same.
    digests: list[str] = []
    original = masking.bert_mask

    def recording(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        inputs, targets = original(*args, **kwargs)
        digests.append(_digest(inputs, targets))
        return inputs, targets

    import selfsup.methods.mlm as mlm_module

    patched = mlm_module if model == "selfsup" else masking
    patched.bert_mask = recording  # type: ignore[attr-defined]
    try:
        losses = [step(i) for i in range(spec.warmup)]
    finally:
        patched.bert_mask = original  # type: ignore[attr-defined]

    timed_losses, times = timed_steps(step, range(spec.warmup, len(batches)), device)
    losses += timed_losses

    # Untimed: how many positions each timed step predicted (the same draws again).
    selected = 0
    for i in range(spec.warmup, len(batches)):
        torch.manual_seed(spec.seed + i)
        _, targets = masking.bert_mask(batches[i], **mask_args)
        selected += int((targets != masking.IGNORE_INDEX).sum())

    timed = batches[spec.warmup :]
    seconds = sum(times)
    result = {
        "model": model,
        "params": params,
        "params_only_here": extra,
        "ms_per_step": 1000 * seconds / len(times),
        "ms_per_step_median": 1000 * statistics.median(times),
        "tokens_per_s": int((timed != PAD_ID).sum()) / seconds,
        "padded_tokens_per_s": timed.numel() / seconds,
        "samples_per_s": timed.shape[0] * timed.shape[1] / seconds,
        "predicted_per_step": selected / len(times),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "warmup_mask_digests": digests,
        **memory_used(device, baseline),
    }
    return result


# --- report --------------------------------------------------------------------------------


def step_gflops(spec: RunSpec, predicted: float, hf: bool) -> tuple[float, float]:
    """Estimated matmul GFLOP of one training step (3 × forward): (encoder, MLM head).

    Encoder, per position and block: 24·D² (q, k, v, out and the 4·D MLP) + 4·L·D
    (scores and weighted sum), over all B·L positions, pads included, on both sides.
    Head: 2·(D² + D·V) per position it runs on: the predicted ones for selfsup, all B·L for HF.
    """
    _, B, L = spec.batches.shape
    D, V = spec.embed_dim, spec.vocab_size
    encoder = spec.depth * B * L * (24 * D * D + 4 * L * D)
    head = (B * L if hf else predicted) * 2 * (D * D + D * V)
    return 3 * encoder / 1e9, 3 * head / 1e9


def summarise_mlm(runs: list[dict[str, Any]], model: Model) -> dict[str, Any]:
    means = ["ms_per_step", "tokens_per_s", "padded_tokens_per_s", "samples_per_s"]
    means += ["peak_rss_mb", "rss_increase_mb", "cuda_peak_mb"]
    out = summarise(runs, model, means, ["params", "params_only_here", "predicted_per_step"])
    mine = [r["tokens_per_s"] for r in runs if r["model"] == model]
    return out | {"tokens_per_s_min": min(mine), "tokens_per_s_max": max(mine)}


def print_table(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], cuda: bool) -> None:
    mem = "CUDA peak MB" if cuda else "peak RSS MB"
    head = (
        f"{'model':<20}{'round':>6}{'ms/step':>10}{'tokens/s':>10}{'padded/s':>10}"
        f"{'samples/s':>10}{mem:>14}{'+RSS MB':>9}{'loss 1st→last':>16}"
    )
    print(head)
    print("-" * len(head))

    def row(name: str, tag: str, r: dict[str, Any]) -> None:
        memory = r["cuda_peak_mb"] if cuda else r["peak_rss_mb"]
        loss = f"{r['first_loss']:.2f}→{r['last_loss']:.2f}" if "first_loss" in r else ""
        print(
            f"{name:<20}{tag:>6}{r['ms_per_step']:>10.1f}{r['tokens_per_s']:>10.0f}"
            f"{r['padded_tokens_per_s']:>10.0f}{r['samples_per_s']:>10.1f}{memory:>14.0f}"
            f"{r['rss_increase_mb']:>9.0f}{loss:>16}"
        )

    for r in runs:
        row(LABELS[r["model"]], str(r["round"]), r)
    print("-" * len(head))
    for model, s in summary.items():
        row(LABELS[model], "mean", s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = run_parser(__doc__, steps=20, warmup=3)
    p.add_argument("--embed-dim", type=int, default=256, help="width D (transformer-tiny: 256)")
    p.add_argument("--depth", type=int, default=4, help="blocks (transformer-tiny: 4)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (transformer-tiny: 4)")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=8000,
        help="WordPiece vocabulary asked of the trainer (a small corpus may give fewer ids)",
    )
    p.add_argument("--max-length", type=int, default=128, help="tokens per row, padded to it")
    p.add_argument("--batch-size", type=int, default=64, help="rows per step (fortunes-mlm: 64)")
    p.add_argument(
        "--corpus",
        choices=["fortunes", "generated"],
        default="fortunes",
        help="fortunes (falls back to generated when not installed) or made-up sentences",
    )
    args = p.parse_args(argv)
    check_run_arguments(args, ("embed_dim", "depth", "heads", "batch_size"))
    if args.embed_dim % args.heads:
        raise SelfsupError(f"--embed-dim {args.embed_dim} is not divisible by --heads {args.heads}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; print the table and notes; return (and with --json write) results."""
    args = parse_args(argv)
    require_transformers()
    texts, source = load_corpus(args.corpus)
    tok = train_tokenizer(texts, "wordpiece", vocab_size=args.vocab_size)
    tokens = encode_batch(tok, texts, args.max_length)  # (N, L)
    count = args.warmup + args.steps
    spec = RunSpec(
        batches=tokens[batch_indices(len(tokens), args.batch_size, count, args.seed)].numpy(),
        tokenizer_json=tok.to_str(),
        vocab_size=tok.get_vocab_size(),
        max_length=args.max_length,
        embed_dim=args.embed_dim,
        depth=args.depth,
        heads=args.heads,
        warmup=args.warmup,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        seed=args.seed,
    )
    timed = spec.batches[args.warmup :]
    fill = float((timed != PAD_ID).mean())
    print(
        f"data: {source}; WordPiece vocabulary {spec.vocab_size} (asked {args.vocab_size}); "
        f"batch {args.batch_size} x {args.max_length}, {100 * fill:.0f}% of positions are tokens"
    )
    print(
        f"size: D {args.embed_dim}, {args.depth} blocks, {args.heads} heads, MLP 4·D, "
        f"dropout 0.1; {args.device}, precision {args.precision}, {args.threads} threads; "
        f"{args.warmup} warm-up + {args.steps} timed steps, {args.rounds} round(s)"
    )
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    print()

    def say(round_: int, model: Model, result: dict[str, Any]) -> str:
        return f"{LABELS[model]:<20} {result['tokens_per_s']:>9.0f} tokens/s"

    runs = alternate(run_model, spec, args.rounds, args.in_process, say)
    print()
    summary: dict[str, dict[str, Any]] = {m: summarise_mlm(runs, m) for m in MODELS}
    print_table(runs, summary, args.device == "cuda")

    # Notes on what differs between the two steps.
    ours, theirs = summary["selfsup"], summary["hf"]
    digests = {m: [r["warmup_mask_digests"] for r in runs if r["model"] == m] for m in summary}
    all_digests = digests["selfsup"] + digests["hf"]
    same_masks = all(d == all_digests[0] for d in all_digests) if args.warmup else None
    predicted = ours["predicted_per_step"]
    enc, head_ours = step_gflops(spec, predicted, hf=False)
    _, head_hf = step_gflops(spec, predicted, hf=True)
    notes = [
        "masks: "
        + {
            True: f"identical on both sides (checked on the {args.warmup} warm-up step(s) of every run)",
            False: "DIFFERENT between the sides: the comparison is not like for like",
            None: "not checked (--warmup 0)",
        }[same_masks],
        f"parameters: selfsup {ours['params']:,}, HF {theirs['params']:,} (output layer tied to "
        f"the token embedding in both). Only in HF: "
        + ", ".join(f"{k} {v:,}" for k, v in theirs["params_only_here"].items())
        + "; only in selfsup: "
        + ", ".join(f"{k} {v:,}" for k, v in ours["params_only_here"].items())
        + ". BertForMaskedLM builds no pooler; each side has one LayerNorm outside the blocks "
        "(HF after the embeddings, post-LN blocks; selfsup a final one, pre-LN blocks).",
        f"work: selfsup's head (dense, GELU, LayerNorm, vocabulary matmul) runs on the "
        f"{predicted:.0f} predicted positions per step (15% of the tokens); HF's runs on all "
        f"{spec.batches.shape[1] * spec.max_length:,} positions, pads included, and its loss "
        f"reads (B, L, V) logits. Estimated matmul GFLOP per step: encoder {enc:.3g} on both "
        f"sides, head {head_ours:.3g} (selfsup) vs {head_hf:.3g} (HF). This is a design "
        "difference and part of what is compared; HF's model is used unmodified.",
        "both timed steps include drawing the masks (bert_mask) and the zero_grad, forward, "
        "backward and AdamW step; selfsup's training_step also returns its accuracy and "
        "the predicted positions' token states, as it does under the engine.",
    ]
    notes.append(memory_note(args.in_process, args.device))
    return finish(
        args,
        runs,
        summary,
        notes,
        "tokens_per_s",
        vocab_size=spec.vocab_size,
        data=source,
        token_fill=fill,
        masks_identical=same_masks,
        gflop_per_step={"encoder": enc, "head_selfsup": head_ours, "head_hf": head_hf},
    )


if __name__ == "__main__":
    main()
