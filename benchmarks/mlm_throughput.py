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
import importlib.util
import json
import multiprocessing
import os
import random
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from selfsup.data.tokenizer import PAD_ID, encode_batch, train_tokenizer
from selfsup.errors import SelfsupError

Model = Literal["selfsup", "hf"]
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


def make_batches(tokens: Tensor, batch_size: int, count: int, seed: int) -> np.ndarray:
    """``count`` batches of ``batch_size`` rows of ``tokens`` (N, L), in a seeded shuffled
    order, cycling through the rows when there are too few -> (count, B, L) int64."""
    g = torch.Generator().manual_seed(seed)
    need = batch_size * count
    order = torch.cat(
        [torch.randperm(len(tokens), generator=g) for _ in range(-(-need // len(tokens)))]
    )
    return tokens[order[:need]].reshape(count, batch_size, -1).numpy()


# --- the child process: one model, warm-up, timed steps ------------------------------------


def _autocast(device: str, precision: str) -> AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return nullcontext()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _digest(inputs: Tensor, targets: Tensor) -> str:
    """A short hash of one step's masked inputs and targets."""
    h = hashlib.sha1(inputs.cpu().numpy().tobytes())
    h.update(targets.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    baseline_rss = _rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline_cuda = torch.cuda.memory_allocated() / 2**20

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

    def step(i: int) -> float:
        torch.manual_seed(spec.seed + i)  # the same mask draw on both sides
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, spec.precision):
            loss = forward(batches[i])
        loss.backward()
        optimizer.step()
        return float(loss.detach())

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

    # Timed steps.
    times = []
    _sync(device)
    for i in range(spec.warmup, len(batches)):
        start = time.perf_counter()
        losses.append(step(i))  # float(loss) waits for the step's forward on a GPU
        _sync(device)
        times.append(time.perf_counter() - start)

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
        "peak_rss_mb": _rss_mb(),
        "rss_increase_mb": _rss_mb() - baseline_rss,
        "warmup_mask_digests": digests,
    }
    if device == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_increase_mb"] = result["cuda_peak_mb"] - baseline_cuda
    return result


def run_isolated(model: Model, spec: RunSpec) -> dict[str, Any]:
    """``run_model`` in a fresh spawned process (its own memory peak and thread pool)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_model, model, spec).result()


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


def summarise(runs: list[dict[str, Any]], model: Model) -> dict[str, Any]:
    mine = [r for r in runs if r["model"] == model]
    keys = ["ms_per_step", "tokens_per_s", "padded_tokens_per_s", "samples_per_s", "peak_rss_mb"]
    keys += ["rss_increase_mb"] + (["cuda_peak_mb"] if "cuda_peak_mb" in mine[0] else [])
    out: dict[str, Any] = {k: statistics.mean(r[k] for r in mine) for k in keys}
    out["tokens_per_s_min"] = min(r["tokens_per_s"] for r in mine)
    out["tokens_per_s_max"] = max(r["tokens_per_s"] for r in mine)
    out["params"] = mine[0]["params"]
    out["params_only_here"] = mine[0]["params_only_here"]
    out["predicted_per_step"] = mine[0]["predicted_per_step"]
    return out


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
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    p.add_argument("--steps", type=int, default=20, help="timed steps per model and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    p.add_argument("--rounds", type=int, default=2, help="selfsup/HF pairs, run alternately")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads in each model's process (default: all cores)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--precision",
        choices=["32", "bf16"],
        default="32",
        help="32: float32; bf16: bf16 autocast (worth it on CPUs with AVX512-BF16/AMX, and GPUs)",
    )
    p.add_argument(
        "--corpus",
        choices=["fortunes", "generated"],
        default="fortunes",
        help="fortunes (falls back to generated when not installed) or made-up sentences",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run both models in this process: starts quicker (for smoke tests), but peak "
        "memory is then the whole process's, not each model's",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every number to this file")
    args = p.parse_args(argv)
    for name in ("embed_dim", "depth", "heads", "batch_size", "steps", "rounds", "threads"):
        if getattr(args, name) < 1:
            raise SelfsupError(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        raise SelfsupError("--warmup must be 0 or more (2-3 steps let the allocator settle)")
    if args.embed_dim % args.heads:
        raise SelfsupError(f"--embed-dim {args.embed_dim} is not divisible by --heads {args.heads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SelfsupError("--device cuda but torch sees no GPU: use --device cpu")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; print the table and notes; return (and with --json write) results."""
    args = parse_args(argv)
    if importlib.util.find_spec("transformers") is None:
        raise SelfsupError(
            "this benchmark needs Hugging Face transformers: pip install 'selfsup[bench]'"
        )
    texts, source = load_corpus(args.corpus)
    tok = train_tokenizer(texts, "wordpiece", vocab_size=args.vocab_size)
    tokens = encode_batch(tok, texts, args.max_length)  # (N, L)
    spec = RunSpec(
        batches=make_batches(tokens, args.batch_size, args.warmup + args.steps, args.seed),
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

    threads = torch.get_num_threads()
    runs = []
    for round_ in range(1, args.rounds + 1):
        for model in ("selfsup", "hf"):
            result = run_model(model, spec) if args.in_process else run_isolated(model, spec)
            result["round"] = round_
            runs.append(result)
            print(
                f"  round {round_}: {LABELS[model]:<20} {result['tokens_per_s']:>9.0f} tokens/s",
                flush=True,
            )
    torch.set_num_threads(threads)  # run_model set them (in this process with --in-process)
    print()
    summary: dict[str, dict[str, Any]] = {m: summarise(runs, m) for m in ("selfsup", "hf")}
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
    if args.in_process:
        notes.append(
            "memory: --in-process ran both models in one process, so peak memory and its "
            "rise are the process's so far, not each model's: run without it to compare memory."
        )
    elif args.device == "cpu":
        notes.append(
            "memory: ru_maxrss of each model's own process; +RSS is its rise above that "
            "process's peak once torch, the library and the batches were loaded."
        )
    else:
        notes.append(
            "memory: torch.cuda.max_memory_allocated in each model's own process (the table); "
            "+RSS is host memory."
        )
    print()
    for note in notes:
        print(f"- {note}")
    ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
    per_round = [
        a["tokens_per_s"] / b["tokens_per_s"]
        for a, b in zip(runs[0::2], runs[1::2])  # (selfsup, HF) pairs of each round
    ]
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in per_round)}")
    print(f"selfsup / HF tokens/s ratio: {ratio:.2f}")

    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "vocab_size": spec.vocab_size,
        "data": source,
        "token_fill": fill,
        "torch": torch.__version__,
        "runs": runs,
        "summary": summary,
        "masks_identical": same_masks,
        "gflop_per_step": {"encoder": enc, "head_selfsup": head_ours, "head_hf": head_hf},
        "notes": notes,
        "ratio_tokens_per_s": ratio,
        "ratio_per_round": per_round,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
