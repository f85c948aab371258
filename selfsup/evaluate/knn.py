"""Weighted k-nearest-neighbour classification on frozen features.

The protocol of InstDisc (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination") as used by DINO (Caron et al. 2021): features
are L2-normalised, each query takes its k most cosine-similar bank entries, and every
neighbour i votes for its own class with weight exp(s_i / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import SelfsupError


def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 2048,
) -> Tensor:
    """Predict a class for each query from its k nearest bank entries.

    With q and b_j L2-normalised, s_j = q · b_j (cosine similarity), N_k(q) the indices of
    the k largest s_j, the score of class c is

        score_c(q) = sum_{j in N_k(q)} exp(s_j / T) * [y_j == c]

    and the prediction is argmax_c score_c(q) (ties go to the lowest class index).

    Args:
        query: (Q, D) features to classify.
        bank: (M, D) labelled features.
        bank_labels: (M,) integer labels in [0, num_classes).
        num_classes: K, the number of classes.
        k: neighbours per query; clamped to M. 20 is the DINO/InstDisc value; 10-200
            change accuracy by about a point.
        temperature: T. 0.07 sharpens the vote toward the closest neighbours; 1.0 gives
            almost an unweighted majority vote.
        chunk_size: queries per block; memory is about chunk_size × M floats, so
            10,000 queries against a 60,000-entry bank stay under 0.5 GB.

    Returns:
        (Q,) int64 predicted labels.
    """
    _check_knn_inputs(query, bank, bank_labels, num_classes, k, temperature, chunk_size)
    k = min(k, bank.shape[0])
    bank_n = F.normalize(bank.float(), dim=1)  # (M, D)
    labels = bank_labels.long()  # (M,)
    predictions = []
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[start : start + chunk_size].float(), dim=1)  # (C, D)
        sim = q @ bank_n.T  # (C, M)
        top_sim, top_idx = sim.topk(k, dim=1)  # (C, k), (C, k)
        weights = (top_sim / temperature).exp()  # (C, k)
        votes = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype)  # (C, K)
        votes.scatter_add_(1, labels[top_idx], weights)
        predictions.append(votes.argmax(dim=1))
    if not predictions:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(predictions)


def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Fraction in [0, 1] of test samples whose kNN prediction (bank = train) is right.

    Args:
        train_x: (M, D) bank features; train_y: (M,) their labels.
        test_x: (Q, D) query features; test_y: (Q,) their labels.
        k, temperature: as in `knn_predict`.
    """
    if test_x.shape[0] != test_y.shape[0] or train_x.shape[0] != train_y.shape[0]:
        raise SelfsupError(
            f"kNN got {train_x.shape[0]} train features for {train_y.shape[0]} labels and "
            f"{test_x.shape[0]} test features for {test_y.shape[0]} labels; pass one label "
            "per feature row"
        )
    if test_x.shape[0] == 0:
        raise SelfsupError("kNN got an empty test set; pass at least one test sample")
    if train_y.numel() and (train_y.min() < 0 or test_y.min() < 0):
        raise SelfsupError("kNN labels must be non-negative class indices 0..K-1")
    num_classes = int(max(train_y.max(), test_y.max())) + 1 if train_y.numel() else 1
    pred = knn_predict(test_x, train_x, train_y, num_classes, k=k, temperature=temperature)
    return float((pred == test_y.long()).float().mean())


def _check_knn_inputs(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk_size: int,
) -> None:
    """Raise SelfsupError with a fix for every malformed argument of `knn_predict`."""
    if query.ndim != 2 or bank.ndim != 2:
        raise SelfsupError(
            f"kNN expects 2-D (N, D) features, got query {tuple(query.shape)} and bank "
            f"{tuple(bank.shape)}; pool or flatten the encoder output first"
        )
    if query.shape[1] != bank.shape[1]:
        raise SelfsupError(
            f"kNN query width {query.shape[1]} differs from bank width {bank.shape[1]}; "
            "embed both with the same encoder"
        )
    if bank.shape[0] == 0:
        raise SelfsupError("kNN bank is empty; pass at least one labelled training sample")
    if bank_labels.shape != (bank.shape[0],):
        raise SelfsupError(
            f"kNN bank has {bank.shape[0]} rows but labels of shape "
            f"{tuple(bank_labels.shape)}; pass one label per bank row"
        )
    if bank_labels.min() < 0 or bank_labels.max() >= num_classes:
        raise SelfsupError(
            f"kNN labels must lie in [0, {num_classes}); got {int(bank_labels.min())}.."
            f"{int(bank_labels.max())}; raise num_classes or remap the labels"
        )
    if k < 1:
        raise SelfsupError(f"kNN k must be at least 1, got {k}; 20 is the usual value")
    if temperature <= 0:
        raise SelfsupError(
            f"kNN temperature must be positive, got {temperature}; 0.07 is the usual value"
        )
    if chunk_size < 1:
        raise SelfsupError(f"kNN chunk_size must be at least 1, got {chunk_size}")
