"""1-NN DTW (full window) on the shipped UCR/UEA sets, each with its own train/test split.

    taskset -c 1 python benchmarks/ucr_dtw.py --out dtw.json            # every shipped set
    taskset -c 1 python benchmarks/ucr_dtw.py GunPoint ArrowHead

The raw-series baseline column of docs/benchmarks.md: the same ``nn_dtw_rows`` that
``selfsup evaluate`` runs as the series modality's raw baseline (protocol ``1nn-dtw``), here
without pretraining anything. Prints one line per set (accuracy, seconds) and writes the
rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from selfsup.data.series import load_series, shipped_sets
from selfsup.evaluate.dtw import nn_dtw_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help="archive sets (default: every shipped one)")
    parser.add_argument("--out", help="write the rows here as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: pin a core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.sets or shipped_sets():
        train, test = load_series(f"ucr:{name}", "train"), load_series(f"ucr:{name}", "test")
        started = time.perf_counter()
        (row,) = nn_dtw_rows(
            (train.as_tensor(), train.labels()), (test.as_tensor(), test.labels()), [1.0], [0]
        )
        row.update(data=f"ucr:{name}", seconds=round(time.perf_counter() - started, 1))
        rows.append(row)
        print(
            f"{name:20s} 1-NN DTW {100 * row['accuracy']:5.1f}%  {row['seconds']:7.1f} s",
            flush=True,
        )
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
