"""The label-efficiency protocol: probe frozen features with 1%, 10% and 100% of labels.

For every encoder, every probe ("linear", "knn") and every label fraction, a
class-balanced subset of the training labels is drawn per seed, the probe is fitted on
it and scored on the full test set; a result row holds the mean and std over seeds.
Rows are plain dicts so they go to `eval.json` and back unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.table import Table
from torch import Tensor

from selfsup.errors import SelfsupError
from selfsup.evaluate.knn import knn_accuracy
from selfsup.evaluate.linear import linear_probe

ProbeName = Literal["linear", "knn"]
PROBES: tuple[ProbeName, ...] = ("linear", "knn")


@dataclass
class FeatureSet:
    """Frozen features of one encoder: train_x (N, D), train_y (N,), test_x (Q, D), test_y (Q,)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def class_balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a class-balanced share of the labelled set.

    Each class c with n_c samples contributes max(1, round(fraction × n_c)) of them
    (round half up), drawn without replacement by a generator seeded with `seed`;
    fraction 1.0 returns every index.

    Args:
        labels: (N,) integer labels.
        fraction: share of each class to keep, in (0, 1].
        seed: the same seed gives the same subset.

    Returns:
        (n,) sorted int64 indices into labels.
    """
    if not 0.0 < fraction <= 1.0:
        raise SelfsupError(
            f"label fraction must lie in (0, 1], got {fraction}; use e.g. 0.01 for 1% of labels"
        )
    labels = np.asarray(labels)
    if fraction == 1.0:
        return np.arange(labels.shape[0], dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(np.floor(fraction * idx.size + 0.5)))
        parts.append(rng.choice(idx, size=n, replace=False))
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def probe_raw(
    raw: FeatureSet, ev: Any, probes: Sequence[str], progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The rows of a modality's raw-input baseline (encoder ``raw``): the probes of the eval
    config ``ev`` (an ``EvalConfig``) on features that are the inputs themselves."""
    return evaluate_features(
        {"raw": raw},
        fractions=ev.label_fractions,
        seeds=ev.seeds,
        protocols=probes,  # type: ignore[arg-type]
        k=ev.knn_k,
        temperature=ev.knn_temperature,
        progress=progress,
    )


def evaluate_features(
    sets: dict[str, FeatureSet],
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    protocols: Sequence[ProbeName] = PROBES,
    k: int = 20,
    temperature: float = 0.07,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every probe at every label fraction on every encoder's features.

    At a fraction below 1 each seed draws its own `class_balanced_subset` (for the linear
    probe it also seeds the validation split); at fraction 1.0 the subset is the whole
    training set, so one seed suffices and std is 0. For kNN the bank is the labelled
    subset.

    Args:
        sets: encoder name (e.g. "simclr", "random-init", "raw") -> its features.
        fractions: label fractions in (0, 1].
        seeds: one run per seed at fractions below 1.
        protocols: probes to run, from "linear" and "knn".
        k, temperature: kNN settings (see `knn_predict`).
        progress: called as progress(description) before each fit.

    Returns:
        One row per (encoder, protocol, fraction), in that nesting order:
        {"encoder": str, "protocol": str, "label_fraction": float,
         "accuracy": float (mean over seeds, in [0, 1]), "std": float (sample std,
         ddof=1; 0 for one seed), "seeds": int, "num_train": int, "num_test": int}
        plus "weight_decays": list[float] (chosen per seed) for "linear" and
        "k": int, "temperature": float for "knn".
    """
    _check_protocol_args(sets, fractions, seeds, protocols)
    rows = []
    for name, fs in sets.items():
        _check_feature_set(name, fs)
        train_y = fs.train_y.long()
        for protocol in protocols:
            for fraction in fractions:
                run_seeds = list(seeds) if fraction < 1.0 else list(seeds)[:1]
                accuracies, extras = [], []
                for seed in run_seeds:
                    idx = class_balanced_subset(train_y.numpy(), fraction, seed)
                    if progress is not None:
                        progress(
                            f"{name} · {protocol} · {format_fraction(fraction)} labels · seed {seed}"
                        )
                    acc, extra = _run_probe(protocol, fs, idx, seed, k, temperature)
                    accuracies.append(acc)
                    extras.append(extra)
                rows.append(
                    result_row(
                        name,
                        protocol,
                        fraction,
                        accuracies,
                        num_train=int(idx.size),
                        num_test=int(fs.test_y.shape[0]),
                        **_merge_extras(protocol, extras),
                    )
                )
    return rows


def _run_probe(
    protocol: ProbeName,
    fs: FeatureSet,
    idx: np.ndarray,
    seed: int,
    k: int,
    temperature: float,
) -> tuple[float, dict[str, Any]]:
    """Fit one probe on the training rows idx and score it on the full test set."""
    train_x, train_y = fs.train_x[idx], fs.train_y[idx].long()
    test_y = fs.test_y.long()
    if protocol == "knn":
        acc = knn_accuracy(train_x, train_y, fs.test_x, test_y, k=k, temperature=temperature)
        return acc, {"k": min(k, int(idx.size)), "temperature": float(temperature)}
    num_classes = int(max(fs.train_y.max(), fs.test_y.max())) + 1
    result = linear_probe(train_x, train_y, fs.test_x, test_y, num_classes=num_classes, seed=seed)
    return result["accuracy"], {"weight_decay": result["weight_decay"]}


def result_row(
    encoder: str,
    protocol: str,
    fraction: float,
    accuracies: Sequence[float],
    *,
    num_train: int,
    num_test: int,
    **extra: Any,
) -> dict[str, Any]:
    """One ``eval.json`` row: the mean accuracy over seeds and its sample std (0 for one)."""
    return {
        "encoder": encoder,
        "protocol": protocol,
        "label_fraction": float(fraction),
        "accuracy": float(np.mean(accuracies)),
        "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
        "seeds": len(accuracies),
        "num_train": num_train,
        "num_test": num_test,
        **extra,
    }


def _merge_extras(protocol: ProbeName, extras: list[dict[str, Any]]) -> dict[str, Any]:
    """Collapse per-seed probe details into the extra keys of one row."""
    if protocol == "knn":
        return {"k": extras[0]["k"], "temperature": extras[0]["temperature"]}
    return {"weight_decays": [e["weight_decay"] for e in extras]}


def write_eval_json(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as a JSON list (indent 2) to path, creating its folder; returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, default=_json_scalar) + "\n")
    return path


def read_eval_json(path: str | Path) -> list[dict[str, Any]]:
    """Read the rows written by `write_eval_json`."""
    path = Path(path)
    if not path.is_file():
        raise SelfsupError(f"no evaluation results at {path}; run `selfsup evaluate` first")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SelfsupError(f"{path} is not valid JSON ({err}); delete it and re-run") from err
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SelfsupError(f"{path} should hold a JSON list of result rows; re-run evaluation")
    return rows


def format_fraction(fraction: float) -> str:
    """0.01 -> "1%", 0.005 -> "0.5%", 1.0 -> "100%"."""
    return f"{100 * fraction:g}%"


def accuracy_grid(
    rows: list[dict[str, Any]],
) -> tuple[list[float], dict[tuple[str, str], dict[float, str]]]:
    """Arrange rows for display: the sorted label fractions, and for each (encoder,
    protocol) in first-seen order the cell text "88.1 ± 0.3" per fraction present. Rows
    without a label fraction (few-shot episodes) are left out."""
    rows = label_efficiency_rows(rows)
    fractions = sorted({float(r["label_fraction"]) for r in rows})
    cells: dict[tuple[str, str], dict[float, str]] = {}
    for r in rows:
        line = cells.setdefault((str(r["encoder"]), str(r["protocol"])), {})
        line[float(r["label_fraction"])] = format_accuracy(r["accuracy"], r["std"])
    return fractions, cells


def label_efficiency_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that have a label fraction (probes and fine-tuning, not few-shot episodes)."""
    return [r for r in rows if "label_fraction" in r]


def rows_table(rows: list[dict[str, Any]], title: str = "Label efficiency") -> Table:
    """A rich table: one line per (encoder, protocol), one column per label fraction,
    cells "88.1 ± 0.3" (accuracy ± std in percent; "—" where no row exists)."""
    fractions, cells = accuracy_grid(rows)
    table = Table(title=title)
    table.add_column("encoder")
    table.add_column("protocol")
    for f in fractions:
        table.add_column(f"{format_fraction(f)} labels", justify="right")
    for (encoder, protocol), line in cells.items():
        table.add_row(encoder, protocol, *(line.get(f, "—") for f in fractions))
    return table


def format_accuracy(accuracy: float, std: float) -> str:
    """Accuracy and std as fractions -> "88.1 ± 0.3" in percent."""
    if accuracy is None or (isinstance(accuracy, float) and math.isnan(accuracy)):
        return "—"
    return f"{100 * accuracy:.1f} ± {100 * (std or 0.0):.1f}"


def _json_scalar(value: Any) -> Any:
    """Make numpy and torch scalars JSON-serialisable."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _check_protocol_args(
    sets: dict[str, FeatureSet],
    fractions: Sequence[float],
    seeds: Sequence[int],
    protocols: Sequence[str],
) -> None:
    """Raise SelfsupError with a fix for every malformed argument of `evaluate_features`."""
    if not sets:
        raise SelfsupError("no feature sets to evaluate; pass at least one encoder's features")
    unknown = [p for p in protocols if p not in PROBES]
    if unknown or not protocols:
        raise SelfsupError(
            f"unknown evaluation protocol(s) {unknown or list(protocols)}; choose from "
            f"{', '.join(PROBES)}"
        )
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad or not fractions:
        raise SelfsupError(
            f"label fractions must lie in (0, 1], got {list(fractions)}; e.g. 0.01 0.1 1.0"
        )
    if not seeds:
        raise SelfsupError("pass at least one seed, e.g. seeds=(0, 1, 2)")


def _check_feature_set(name: str, fs: FeatureSet) -> None:
    """Raise SelfsupError unless fs holds matching (N, D)/(N,) and (Q, D)/(Q,) tensors."""
    if (
        fs.train_x.ndim != 2
        or fs.test_x.ndim != 2
        or fs.train_x.shape[1] != fs.test_x.shape[1]
        or fs.train_y.shape != (fs.train_x.shape[0],)
        or fs.test_y.shape != (fs.test_x.shape[0],)
    ):
        raise SelfsupError(
            f"features of {name!r} have mismatched shapes: train {tuple(fs.train_x.shape)} / "
            f"{tuple(fs.train_y.shape)}, test {tuple(fs.test_x.shape)} / "
            f"{tuple(fs.test_y.shape)}; expected (N, D)/(N,) and (Q, D)/(Q,)"
        )
    if fs.train_x.shape[0] == 0 or fs.test_x.shape[0] == 0:
        raise SelfsupError(f"features of {name!r} have an empty train or test set")
    if fs.train_y.min() < 0 or fs.test_y.min() < 0:
        raise SelfsupError(f"labels of {name!r} must be non-negative class indices 0..K-1")
