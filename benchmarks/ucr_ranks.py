"""Accuracy per UCR set and the average rank of each column, for docs/benchmarks.md.

    python benchmarks/ucr_ranks.py --runs runs/ts2vec-* runs/mp-* --dtw dtw.json \\
        --value ts2vec:GunPoint=0.987 ...

Columns: each run folder's method under TS2Vec's SVM protocol (``svm.json``), 1-NN DTW (the
``raw · 1nn-dtw`` row of a run's ``eval.json``, or ``benchmarks/ucr_dtw.py``'s JSON), the
published T-Loss (Franceschi et al. 2019, the K = 10 column of its ``results_ucr.csv``) and
the supervised HC2 and InceptionTime (resample 0 of the example results aeon ships,
``aeon/testing/example_results_files/classification/accuracy/``). ``--value`` adds a number
from a run whose folder is gone. Ranks are computed over the sets where every column has a
number (1 = best, ties share their mean rank), then averaged per column.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

PUBLISHED = {
    "T-Loss": {
        "GunPoint": 0.980,
        "ArrowHead": 0.766,
        "ItalyPowerDemand": 0.954,
        "OSULeaf": 0.760,
        "ACSF1": 0.900,
    },
    "HC2": {
        "GunPoint": 1.0,
        "ArrowHead": 0.8686,
        "ItalyPowerDemand": 0.970,
        "OSULeaf": 0.9669,
        "ACSF1": 0.91,
    },
    "InceptionTime": {
        "GunPoint": 1.0,
        "ArrowHead": 0.8629,
        "ItalyPowerDemand": 0.966,
        "OSULeaf": 0.9215,
        "ACSF1": 0.91,
    },
}


def run_columns(folder: Path) -> dict[str, dict[str, float]]:
    """{column: {set: accuracy}} of one run folder: its method's SVM and the 1-NN DTW row."""
    name = json.loads((folder / "svm.json").read_text())[0]["data"].partition(":")[2]
    columns: dict[str, dict[str, float]] = {}
    for row in json.loads((folder / "svm.json").read_text()):
        if row["encoder"] not in ("raw", "random-init"):
            columns.setdefault(row["encoder"], {})[name] = row["svm_accuracy"]
    for row in json.loads((folder / "eval.json").read_text()):
        if row["protocol"] == "1nn-dtw" and row["label_fraction"] == 1.0:
            columns.setdefault("1-NN DTW", {})[name] = row["accuracy"]
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], help="run folders (svm.json, eval.json)")
    parser.add_argument("--dtw", help="the JSON of benchmarks/ucr_dtw.py")
    parser.add_argument("--value", action="append", default=[], help="COLUMN:SET=ACCURACY")
    args = parser.parse_args()
    table: dict[str, dict[str, float]] = {k: dict(v) for k, v in PUBLISHED.items()}
    for folder in args.runs:
        for column, values in run_columns(Path(folder)).items():
            table.setdefault(column, {}).update(values)
    if args.dtw:
        for row in json.loads(Path(args.dtw).read_text()):
            table.setdefault("1-NN DTW", {})[row["data"].partition(":")[2]] = row["accuracy"]
    for item in args.value:
        column, _, rest = item.partition(":")
        name, _, value = rest.partition("=")
        table.setdefault(column, {})[name] = float(value)
    order = ["ts2vec", "masked-patches", "1-NN DTW", "T-Loss", "HC2", "InceptionTime"]
    columns = sorted(table, key=lambda c: (order.index(c) if c in order else len(order), c))
    sets = sorted({s for values in table.values() for s in values})
    complete = [s for s in sets if all(s in table[c] for c in columns)]
    print("| set | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for s in sets:
        cells = [f"{100 * table[c][s]:.1f}" if s in table[c] else "–" for c in columns]
        print(f"| {s} | " + " | ".join(cells) + " |")
    if complete:
        ranks = np.array(
            [rankdata([-table[c][s] for c in columns]) for s in complete]
        )  # (sets, columns)
        cells = [f"{r:.2f}" for r in ranks.mean(axis=0)]
        print(f"| average rank ({len(complete)} sets) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
