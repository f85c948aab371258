"""selfsup's word2vec beside gensim's ``Word2Vec``, same settings, same corpus, one run.

    python benchmarks/word2vec.py --data gcide --epochs 1 --out runs/w2v-bench

selfsup trains through ``selfsup pretrain --config fortunes-word2vec`` (the engine, the word
tokenizer, the ``word2vec`` method); gensim then trains on exactly the token rows selfsup
trained on (the same words, the same vocabulary, the same sentence boundaries), with
word2vec.c's settings on both sides: skip-gram (or CBOW), 100 dimensions, window 5,
5 negatives from unigram^0.75, subsampling 1e-3, lr 0.025 (CBOW 0.05) falling linearly to
1e-4 of it. gensim trains ``--gensim-seeds`` times, so the spread of its scores tells
what "within noise" means. Both are scored by ``selfsup.evaluate.words`` on the
WordSim-353, SimLex-999 and Google analogy files inside the gensim wheel. Words/s counts
the corpus's words before subsampling, over the training time alone (no tokenizer, no
vocabulary building); the thread counts are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from selfsup.api import pretrain
from selfsup.config import make_config
from selfsup.data.tokenizer import FIRST_WORD_ID
from selfsup.evaluate.words import word_benchmarks, word_vectors
from selfsup.pretraining import training_data

PRESET = Path(__file__).resolve().parents[1] / "selfsup" / "configs" / "fortunes-word2vec.yaml"
SCORES = (("wordsim353", "spearman"), ("simlex999", "spearman"), ("google_analogy", "accuracy"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="gcide", help="any text spec: gcide, fortunes, text:PATH")
    p.add_argument("--mode", choices=["skipgram", "cbow"], default="skipgram")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64, help="selfsup's rows per SGD step")
    p.add_argument("--threads", type=int, default=1, help="torch threads for selfsup")
    p.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    p.add_argument("--gensim-seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/word2vec-bench")
    return p.parse_args()


def selfsup_run(args: argparse.Namespace, lr: float) -> dict:
    torch.set_num_threads(args.threads)
    overrides = [
        f"data.name={args.data}",
        f"method_args.mode={args.mode}",
        f"train.max_epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={lr}",
        f"train.seed={args.seed}",
        "train.precision=32-true",
    ]
    run_dir = Path(args.out) / f"selfsup-{args.mode}"
    started = time.perf_counter()
    run = pretrain(str(PRESET), evaluate=False, out=str(run_dir), overrides=overrides)
    wall = time.perf_counter() - started
    cfg = make_config(run_dir / "config.yaml")
    dataset, info = training_data(cfg, run_dir, world=1)
    rows = dataset.as_tensor()
    seen = run.train.steps * args.batch_size / len(rows)  # epochs' worth of rows trained on
    words = int((rows >= FIRST_WORD_ID).sum()) * seen
    scores = word_benchmarks(*word_vectors(run_dir))
    return {
        "name": "selfsup",
        "seconds": run.train.seconds,
        "wall": wall,
        "words_per_s": words / run.train.seconds,
        "threads": args.threads,
        "scores": scores,
        "rows": rows,
        "tokenizer": info.tokenizer,
        "vocab": int((info.token_counts[FIRST_WORD_ID:] > 0).sum()),
    }


def gensim_runs(args: argparse.Namespace, rows: torch.Tensor, tokenizer, lr: float) -> list[dict]:
    from gensim.models import Word2Vec

    by_id = {i: w for w, i in tokenizer.get_vocab().items()}
    sentences = [[by_id[i] for i in row.tolist() if i >= FIRST_WORD_ID] for row in rows]
    words = sum(map(len, sentences))
    out = []
    for seed in range(args.gensim_seeds):
        model = Word2Vec(
            vector_size=100,
            window=5,
            min_count=1,  # the rows hold only the tokenizer's words (seen >= 5 times)
            sample=1e-3,
            negative=5,
            ns_exponent=0.75,
            hs=0,
            sg=int(args.mode == "skipgram"),
            cbow_mean=1,
            alpha=lr,
            min_alpha=lr * 1e-4,
            workers=args.workers,
            seed=args.seed + seed,
        )
        model.build_vocab(sentences)
        started = time.perf_counter()
        model.train(sentences, total_examples=len(sentences), epochs=args.epochs)
        seconds = time.perf_counter() - started
        wv = model.wv
        scores = word_benchmarks(list(wv.index_to_key), torch.from_numpy(wv.vectors))
        out.append(
            {
                "name": f"gensim {seed}",
                "seconds": seconds,
                "words_per_s": words * args.epochs / seconds,
                "threads": args.workers,
                "scores": scores,
            }
        )
    return out


def main() -> None:
    args = parse_args()
    lr = 0.025 if args.mode == "skipgram" else 0.05
    ours = selfsup_run(args, lr)
    theirs = gensim_runs(args, ours.pop("rows"), ours.pop("tokenizer"), lr)
    print(f"{args.data}, {args.mode}, {args.epochs} epoch(s), vocabulary {ours['vocab']}")
    header = f"{'':12} {'words/s':>9} {'train s':>8} {'threads':>7}"
    header += "".join(f" {n:>15}" for n, _ in SCORES)
    print(header)
    for r in [ours, *theirs]:
        cells = "".join(f" {r['scores'][n][k]:>15.3f}" for n, k in SCORES)
        print(
            f"{r['name']:12} {r['words_per_s']:>9,.0f} {r['seconds']:>8.1f} {r['threads']:>7}{cells}"
        )
    for n, k in SCORES:
        values = [r["scores"][n][k] for r in theirs]
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        print(
            f"{n}: selfsup {ours['scores'][n][k]:.3f}, gensim {statistics.mean(values):.3f} "
            f"± {spread:.3f} (coverage {ours['scores'][n]['coverage']:.2f})"
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "selfsup": ours, "gensim": theirs, "cpu_count": os.cpu_count()}
    (Path(args.out) / "word2vec.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
