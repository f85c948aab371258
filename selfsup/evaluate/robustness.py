"""Robustness to distribution shift: a linear probe fitted on clean features, scored on the
test set under each corruption and severity (ImageNet-C's protocol, Hendrycks & Dietterich
2019, arXiv:1903.12261, with a frozen encoder and a probe in place of a trained network).

The corruptions are the modality's (``Modality.corruptions`` and ``Modality.corrupted``:
images get noise, blur, contrast, ...; text gets character noise, word dropout, casing), so
the protocol is the same for every kind of data. The mean corruption accuracy averages every
corruption at severities 1-5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rich.table import Table
from torch import Tensor

from selfsup.evaluate.linear import (
    fit_linear_classifier,
    linear_accuracy,
    linear_probe,
    standardize,
)

SEVERITIES = (1, 2, 3, 4, 5)

Features = Callable[[Any], Tensor]
"""A labelled data set -> its (N, D) features under one encoder (or the raw input)."""


def fit_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int
) -> tuple[Callable[[Tensor], float], float]:
    """The linear probe of the label-efficiency protocol at 100% of the labels (weight decay
    picked on held-out training labels), fitted once: returns a function scoring any test
    features with it, and its clean test accuracy."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    chosen = linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes, seed=seed)
    train_std = standardize(train_x)[0]
    weight, bias = fit_linear_classifier(
        train_std, train_y.long(), num_classes, chosen["weight_decay"]
    )

    def score(x: Tensor) -> float:
        return linear_accuracy(standardize(train_x, x)[1], test_y.long(), weight, bias)

    return score, score(test_x)


def robustness_rows(
    probes: dict[str, tuple[Features, Callable[[Tensor], float], float]],
    corrupted: Callable[[str, int], Any],
    corruptions: tuple[str, ...],
    *,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows ``protocol: robustness``: per corruption, severity and encoder, the accuracy of
    the encoder's clean linear probe on the corrupted test set; then per encoder one row with
    ``corruption: "mean"``, the mean over every corruption and severity, beside the clean
    accuracy.

    Args:
        probes: encoder name -> (data set -> features, features -> accuracy of the clean
            probe on the test labels, clean accuracy), e.g. from `fit_probe`.
        corrupted: (kind, severity) -> the test set under that corruption (same order and
            labels); each is made once and shared by every encoder.
        corruptions: the kinds, in order.
    """
    rows = []
    per_encoder: dict[str, list[float]] = {name: [] for name in probes}
    for kind in corruptions:
        for severity in SEVERITIES:
            if progress is not None:
                progress(f"{kind} {severity}")
            shifted = corrupted(kind, severity)
            for name, (extract, score, clean) in probes.items():
                accuracy = score(extract(shifted))
                per_encoder[name].append(accuracy)
                rows.append(
                    {
                        "encoder": name,
                        "protocol": "robustness",
                        "corruption": kind,
                        "severity": severity,
                        "accuracy": accuracy,
                        "clean_accuracy": clean,
                    }
                )
    for name, (_, _, clean) in probes.items():
        rows.append(
            {
                "encoder": name,
                "protocol": "robustness",
                "corruption": "mean",
                "accuracy": float(np.mean(per_encoder[name])),
                "clean_accuracy": clean,
                "corruptions": len(corruptions),
            }
        )
    return rows


def robustness_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of the ``robustness`` rows: one line per encoder, its clean accuracy, the
    mean corruption accuracy, and the mean over severities of each corruption (percent)."""
    shifted = [r for r in rows if r.get("protocol") == "robustness"]
    kinds = list(dict.fromkeys(r["corruption"] for r in shifted if r["corruption"] != "mean"))
    table = Table(title="robustness: clean linear probe on corrupted test sets (accuracy, %)")
    for column in ("encoder", "clean", "mean", *kinds):
        table.add_column(column, justify="left" if column == "encoder" else "right")
    for mean in (r for r in shifted if r["corruption"] == "mean"):
        name = mean["encoder"]
        by_kind = [
            np.mean(
                [r["accuracy"] for r in shifted if r["encoder"] == name and r["corruption"] == k]
            )
            for k in kinds
        ]
        table.add_row(
            str(name),
            f"{100 * mean['clean_accuracy']:.1f}",
            f"{100 * mean['accuracy']:.1f}",
            *(f"{100 * a:.1f}" for a in by_kind),
        )
    return table


def robustness_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Accuracy (%) against severity (0 = clean), one panel per corruption, one line per
    encoder; None without robustness rows."""
    shifted = [r for r in rows if r.get("protocol") == "robustness" and r["corruption"] != "mean"]
    if not shifted:
        return None
    encoders = list(dict.fromkeys(r["encoder"] for r in shifted))
    kinds = list(dict.fromkeys(r["corruption"] for r in shifted))
    columns = min(3, len(kinds))
    grid_rows = -(-len(kinds) // columns)
    fig = Figure(figsize=(3.4 * columns, 2.6 * grid_rows), layout="constrained")
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(grid_rows, columns, i + 1)
        for j, name in enumerate(encoders):
            xs, ys = severity_curve(shifted, name, kind)
            ax.plot(xs, ys, marker="o", markersize=3, color=f"C{j % 10}", label=str(name))
        ax.set_title(kind, fontsize="medium")
        ax.set_xlabel("severity")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    return fig


def severity_curve(
    rows: list[dict[str, Any]], encoder: str, corruption: str | None = None
) -> tuple[list[int], list[float]]:
    """Severities 0-5 and the accuracy (%) of ``encoder``'s clean probe at each: severity 0
    is the clean test set, the others the ``corruption``, or the mean over every corruption
    when it is None. Severities without a row are left out."""
    shifted = [
        r
        for r in rows
        if r.get("protocol") == "robustness"
        and r["encoder"] == encoder
        and r["corruption"] != "mean"
        and corruption in (None, r["corruption"])
    ]
    if not shifted:
        return [], []
    by_severity: dict[int, list[float]] = {}
    for r in shifted:
        by_severity.setdefault(int(r["severity"]), []).append(100 * float(r["accuracy"]))
    severities = sorted(by_severity)
    return [0, *severities], [
        100 * float(shifted[0]["clean_accuracy"]),
        *(float(np.mean(by_severity[s])) for s in severities),
    ]
