"""The method table of docs/benchmarks.md, from run folders.

    /usr/bin/time -v selfsup pretrain --config fashion-mnist-byol --out runs/fm-byol \\
        > runs/fm-byol.log 2>&1
    python benchmarks/table.py runs/fm-simclr runs/fm-byol ...

For each run: linear probe and kNN accuracy at 100% labels, linear at 1% (mean ± std over
the seeds), the final effective rank of the encoder features (RankMe, from metrics.csv),
steps and epochs trained; pretraining seconds, wall time (pretraining + evaluation) and peak
memory come from `RUN.log` beside the folder (selfsup's output with GNU time's `-v` report).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import yaml


def _row(rows: list[dict], method: str, protocol: str, fraction: float) -> dict | None:
    for r in rows:
        if r["encoder"] == method and r["protocol"] == protocol and r["label_fraction"] == fraction:
            return r
    return None


def _pct(r: dict | None, with_std: bool = False) -> str:
    if r is None:
        return "–"
    text = f"{100 * r['accuracy']:.1f}"
    return f"{text} ± {100 * r['std']:.1f}" if with_std else text


def _last(metrics: Path, key: str) -> float | None:
    value = None
    with metrics.open() as f:
        for r in csv.DictReader(f):
            if r.get(key):
                value = float(r[key])
    return value


def _time_report(log: Path) -> tuple[str, str, str]:
    """Pretraining seconds (from selfsup's last line), wall time and peak memory (from GNU
    time's report)."""
    if not log.is_file():
        return "–", "–", "–"
    text = log.read_text(errors="replace")
    trained = re.search(r"stopped by \w+, (\d+) s,", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall_s = wall.group(1).split(".")[0] if wall else "–"
    rss_s = f"{int(rss.group(1)) / 1024**2:.1f} GB" if rss else "–"
    return (trained.group(1) if trained else "–"), wall_s, rss_s


def describe(run: Path, train_size: int) -> str:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    method = cfg["method"]
    rows = json.loads((run / "eval.json").read_text())
    metrics = run / "metrics.csv"
    rank = _last(metrics, "rankme")
    steps = _last(metrics, "step")
    epochs = (steps or 0) * cfg["train"]["batch_size"] / train_size
    trained, wall, rss = _time_report(run.parent / f"{run.name}.log")
    return (
        f"| `{method}` | {_pct(_row(rows, method, 'linear', 1.0))} "
        f"| {_pct(_row(rows, method, 'knn', 1.0))} "
        f"| {_pct(_row(rows, method, 'linear', 0.01), with_std=True)} "
        f"| {rank:.1f} | {int(steps or 0):,} ({epochs:.1f}) | {trained} | {wall} | {rss} "
        f"| `selfsup pretrain --config fashion-mnist-{method}` |"
        if rank is not None
        else f"| `{method}` | incomplete run |"
    )


def describe_masked(run: Path, train_size: int) -> str:
    """One row of the masked / next-token table: the method, random init and raw input (pixels
    or TF-IDF) under the linear probe and fine-tuning, plus perplexity for a causal LM."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    method = cfg["method"]
    rows = json.loads((run / "eval.json").read_text())
    steps = _last(run / "metrics.csv", "step") or 0
    epochs = steps * cfg["train"]["batch_size"] / train_size
    trained, wall, rss = _time_report(run.parent / f"{run.name}.log")
    cells = [
        _pct(_row(rows, method, "linear", 1.0)),
        _pct(_row(rows, method, "knn", 1.0)),
        _pct(_row(rows, method, "linear", 0.01), with_std=True),
        _pct(_row(rows, method, "finetune", 1.0)),
        _pct(_row(rows, "random-init", "linear", 1.0)),
        _pct(_row(rows, "random-init", "finetune", 1.0)),
        _pct(_row(rows, "raw", "linear", 1.0)),
    ]
    lm = run / "perplexity.json"
    perplexity = "–"
    if lm.is_file():
        by_encoder = {r["encoder"]: r["perplexity"] for r in json.loads(lm.read_text())}
        perplexity = f"{by_encoder.get(method, float('nan')):.0f} (random init {by_encoder.get('random-init', float('nan')):.0f})"
    return (
        f"| `{method}` | {' | '.join(cells)} | {perplexity} | {int(steps):,} ({epochs:.1f}) "
        f"| {trained} | {wall} | {rss} | `selfsup pretrain --config {run.name}` |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument(
        "--train-size", type=int, default=60000, help="training images, for the epoch count"
    )
    parser.add_argument(
        "--masked",
        action="store_true",
        help="the masked / next-token table: adds fine-tuning, random-init and raw columns "
        "and perplexity; run folders named after their preset",
    )
    args = parser.parse_args()
    if args.masked:
        print(
            "| method | linear | kNN | linear, 1% labels | fine-tune | random-init linear "
            "| random-init fine-tune | raw linear | perplexity | steps (epochs) "
            "| pretraining s | wall | peak memory | command |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for run in args.runs:
            print(describe_masked(run, args.train_size))
        return
    print(
        "| method | linear | kNN | linear, 1% labels | effective rank | steps (epochs) "
        "| pretraining s | wall | peak memory | command |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        print(describe(run, args.train_size))


if __name__ == "__main__":
    main()
