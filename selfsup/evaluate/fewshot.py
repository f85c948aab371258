"""Few-shot episodes on frozen features: N-way K-shot with a prototype classifier.

An episode draws N classes, K labelled "support" samples of each from the training split and
Q "query" samples of each from the test split; each query is given the class whose prototype
(the mean of its support features) is nearest (Snell et al. 2017, arXiv:1703.05175, on
frozen features as in SimpleShot, Wang et al. 2019, arXiv:1911.04623: features are
L2-normalised first, which is what makes a nearest mean work on features of any scale). The
accuracy is averaged over many episodes (600, as in the few-shot literature) and reported
with its 95% confidence interval, 1.96 × std / sqrt(episodes).

Episodes depend only on the labels and the seed, so every encoder of one evaluation is
scored on the same episodes (a paired comparison).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.table import Table
from torch import Tensor

from selfsup.errors import SelfsupError

CONFIDENCE_Z = 1.96
"""The normal quantile of a two-sided 95% confidence interval."""


@dataclass(frozen=True)
class Episodes:
    """Indices of E episodes: support (E, N, K) into the training split, query (E, N, Q)
    into the test split; ``classes`` (E, N) are the labels of the N ways, in order."""

    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray


def sample_episodes(
    train_y: np.ndarray,
    test_y: np.ndarray,
    *,
    n_way: int = 5,
    k_shot: int = 1,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> Episodes:
    """Draw ``episodes`` class-balanced N-way K-shot episodes.

    Each episode picks ``n_way`` distinct classes among those with at least ``k_shot``
    training and ``queries`` test samples, then, per class, ``k_shot`` training indices and
    ``queries`` test indices without replacement. The same arguments give the same episodes.

    Args:
        train_y: (N_train,) integer labels of the split the support comes from.
        test_y: (N_test,) integer labels of the split the queries come from.

    Returns:
        `Episodes` with support (E, N, K), query (E, N, Q) and classes (E, N), int64.
    """
    for name, value in [("n_way", n_way), ("k_shot", k_shot), ("queries", queries)]:
        if value < 1:
            raise SelfsupError(f"few-shot {name} must be at least 1, got {value}")
    if episodes < 1:
        raise SelfsupError(f"few-shot episodes must be at least 1, got {episodes}; 600 is usual")
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    by_class_train = {c: np.flatnonzero(train_y == c) for c in np.unique(train_y)}
    by_class_test = {c: np.flatnonzero(test_y == c) for c in np.unique(test_y)}
    usable = [
        c
        for c, idx in by_class_train.items()
        if idx.size >= k_shot and by_class_test.get(c, np.empty(0)).size >= queries
    ]
    if len(usable) < n_way:
        raise SelfsupError(
            f"a {n_way}-way {k_shot}-shot episode needs {n_way} classes with at least {k_shot} "
            f"training and {queries} test samples; the data has {len(usable)}: lower n_way"
        )
    rng = np.random.default_rng(seed)
    support = np.empty((episodes, n_way, k_shot), dtype=np.int64)
    query = np.empty((episodes, n_way, queries), dtype=np.int64)
    classes = np.empty((episodes, n_way), dtype=np.int64)
    for e in range(episodes):
        chosen = rng.choice(np.asarray(usable), size=n_way, replace=False)
        classes[e] = chosen
        for n, c in enumerate(chosen):
            support[e, n] = rng.choice(by_class_train[c], size=k_shot, replace=False)
            query[e, n] = rng.choice(by_class_test[c], size=queries, replace=False)
    return Episodes(support, query, classes)


def prototype_accuracies(
    train_x: Tensor, test_x: Tensor, episodes: Episodes, chunk: int = 100
) -> Tensor:
    """Accuracy of the nearest-prototype classifier in every episode.

    With f̂ = f / ||f|| the L2-normalised features, the prototype of way n is
    p_n = mean_k f̂(support_n,k), and a query q is assigned argmin_n ||f̂(q) - p_n||².

    Args:
        train_x: (N_train, D) features the support indices point into.
        test_x: (N_test, D) features the query indices point into.
        episodes: from `sample_episodes`.
        chunk: episodes scored at once (bounds memory at chunk × N × (K + Q) × D floats).

    Returns:
        (E,) float64 share of each episode's N × Q queries classified correctly.
    """
    train_x = F.normalize(train_x.float(), dim=1)
    test_x = F.normalize(test_x.float(), dim=1)
    out = []
    for start in range(0, len(episodes.support), chunk):
        support = torch.as_tensor(episodes.support[start : start + chunk])  # (E, N, K)
        query = torch.as_tensor(episodes.query[start : start + chunk])  # (E, N, Q)
        E, N, Q = query.shape
        prototypes = train_x[support].mean(dim=2)  # (E, N, D)
        q = test_x[query].reshape(E, N * Q, -1)  # (E, N·Q, D)
        distances = torch.cdist(q, prototypes)  # (E, N·Q, N)
        predicted = distances.argmin(dim=2)  # (E, N·Q)
        truth = torch.arange(N).repeat_interleave(Q).expand(E, -1)  # (E, N·Q)
        out.append((predicted == truth).double().mean(dim=1))  # (E,)
    return torch.cat(out)


def fewshot_rows(
    sets: dict[str, tuple[Tensor, Tensor]],
    train_y: Tensor,
    test_y: Tensor,
    *,
    n_way: int = 5,
    shots: Sequence[int] = (1, 5),
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``protocol: fewshot`` rows: for each encoder and each K in ``shots``, the mean
    accuracy over the same ``episodes`` N-way K-shot episodes and its 95% interval.

    Args:
        sets: encoder name -> (train features (N_train, D), test features (N_test, D)).
        train_y, test_y: the labels of the two splits.

    Returns:
        Rows {"encoder", "protocol": "fewshot", "n_way", "k_shot", "queries", "episodes",
        "accuracy" (mean, in [0, 1]), "ci95" (half-width), "std" (over episodes), "seed"}.
    """
    rows = []
    for k_shot in shots:
        drawn = sample_episodes(
            train_y.numpy(),
            test_y.numpy(),
            n_way=n_way,
            k_shot=k_shot,
            queries=queries,
            episodes=episodes,
            seed=seed,
        )
        for name, (train_x, test_x) in sets.items():
            accuracies = prototype_accuracies(train_x, test_x, drawn)  # (E,)
            std = float(accuracies.std()) if len(accuracies) > 1 else 0.0
            rows.append(
                {
                    "encoder": name,
                    "protocol": "fewshot",
                    "n_way": n_way,
                    "k_shot": k_shot,
                    "queries": queries,
                    "episodes": episodes,
                    "accuracy": float(accuracies.mean()),
                    "ci95": CONFIDENCE_Z * std / math.sqrt(len(accuracies)),
                    "std": std,
                    "seed": seed,
                }
            )
    return rows


def format_fewshot(row: dict[str, Any]) -> str:
    """A row's accuracy as "72.4 ± 0.8" (percent, ± the 95% interval)."""
    return f"{100 * row['accuracy']:.1f} ± {100 * row['ci95']:.1f}"


def fewshot_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of the ``fewshot`` rows: one line per encoder, one column per
    N-way K-shot setting, cells "72.4 ± 0.8" (mean ± 95% interval, percent)."""
    shots = [r for r in rows if r.get("protocol") == "fewshot"]
    settings = list(dict.fromkeys(f"{r['n_way']}-way {r['k_shot']}-shot" for r in shots))
    cells: dict[str, dict[str, str]] = {}
    for r in shots:
        cells.setdefault(str(r["encoder"]), {})[f"{r['n_way']}-way {r['k_shot']}-shot"] = (
            format_fewshot(r)
        )
    episodes = shots[0]["episodes"] if shots else 0
    table = Table(title=f"few-shot: prototype classifier, {episodes} episodes (mean ± 95% CI, %)")
    table.add_column("encoder")
    for setting in settings:
        table.add_column(setting, justify="right")
    for encoder, line in cells.items():
        table.add_row(encoder, *(line.get(s, "—") for s in settings))
    return table
