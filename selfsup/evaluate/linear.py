"""Linear probe: multinomial logistic regression on cached, frozen features.

The representation is judged by the best linear classifier on top of it, so the fit is
exact (full-batch L-BFGS to convergence on a convex objective) rather than a few epochs
of SGD, and its one hyperparameter, the L2 weight decay, is chosen on a held-out part of
the *training* labels. The test labels are read once, to score the final fit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import SelfsupError

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)

# Below this many multiply-adds per logits matmul (N·D·K) a fit runs on one thread: the
# ~200 small matmuls of an L-BFGS run are dominated by thread start-up and, on a busy
# 2-core machine, a 2000×512 fit drops from ~2 s to ~0.1 s.
SINGLE_THREAD_BELOW = 2**25


def standardize(train_x: Tensor, *others: Tensor) -> list[Tensor]:
    """Centre and scale every set with the per-dimension statistics of train_x.

        x' = (x - mean_train) / std_train   (dimensions with std_train < 1e-6 are only
        centred)

    Args:
        train_x: (N, D) training features; others: (N_i, D) features to transform alike.

    Returns:
        float32 [train_x', *others'] with the same shapes.
    """
    train = train_x.float()
    mean = train.mean(dim=0)  # (D,)
    std = train.std(dim=0, correction=0)  # (D,)
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return [(x.float() - mean) / std for x in (train_x, *others)]


def fit_linear_classifier(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    """Minimise the L2-regularised multinomial cross-entropy with full-batch L-BFGS.

        L(W, b) = (1/N) sum_n -log softmax(x_n W + b)_{y_n} + (weight_decay / 2) ||W||_F^2

    The bias is not penalised. L is convex, so starting from zero and running L-BFGS
    (strong-Wolfe line search) to its tolerance gives the unique optimum for
    weight_decay > 0, deterministically. sklearn's LogisticRegression(C) solves the same
    problem with weight_decay = 1 / (C N).

    Args:
        x: (N, D) float features (standardise them first for fast convergence).
        y: (N,) int64 labels in [0, K).
        num_classes: K.
        weight_decay: λ ≥ 0; 0 can run to max_iter on separable data.
        max_iter: L-BFGS iterations; 100 is ample on standardised features (a
            60,000×512, 10-class fit has converged by 50).

    Returns:
        W (D, K) and b (K,), detached.
    """
    x = x.float().contiguous()
    y = y.long()
    threads = 1 if x.numel() * num_classes < SINGLE_THREAD_BELOW else torch.get_num_threads()
    with _torch_threads(threads):
        return _lbfgs_fit(x, y, num_classes, weight_decay, max_iter)


def _lbfgs_fit(
    x: Tensor, y: Tensor, num_classes: int, weight_decay: float, max_iter: int
) -> tuple[Tensor, Tensor]:
    """The L-BFGS run of `fit_linear_classifier` on prepared float32 x (N, D), int64 y (N,)."""
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)  # (D, K)
    bias = torch.zeros(num_classes, requires_grad=True)  # (K,)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = torch.addmm(bias, x, weight)  # (N, K)
        loss = F.cross_entropy(logits, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to n, then restore it."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def linear_accuracy(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor) -> float:
    """Fraction of rows with argmax_k (x W + b)_k == y; x (N, D), y (N,), W (D, K), b (K,)."""
    if x.shape[0] == 0:
        return float("nan")
    pred = torch.addmm(bias, x.float(), weight).argmax(dim=1)  # (N,)
    return float((pred == y.long()).float().mean())


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Split indices into (fit, val), holding out round(val_fraction × n_c) of each class.

    Every class keeps at least one sample on each side, so a class with n_c samples puts
    min(max(1, round(val_fraction × n_c)), n_c - 1) into val.

    Args:
        labels: (N,) integer labels.
        val_fraction: share of each class held out, in (0, 1).
        seed: seeds the shuffle within each class.

    Returns:
        sorted index arrays (fit, val), or None when some class has fewer than 2 samples
        and so cannot be on both sides.
    """
    rng = np.random.default_rng(seed)
    fit_parts, val_parts = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size < 2:
            return None
        idx = rng.permutation(idx)
        n_val = min(max(1, int(np.floor(val_fraction * idx.size + 0.5))), idx.size - 1)
        val_parts.append(idx[:n_val])
        fit_parts.append(idx[n_val:])
    return np.sort(np.concatenate(fit_parts)), np.sort(np.concatenate(val_parts))


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 100,
) -> dict[str, Any]:
    """Linear-probe accuracy of frozen features, weight decay chosen without test labels.

    1. Standardise all features with the training mean and std.
    2. Split the training set (stratified, `val_fraction` per class, `seed`), fit one
       classifier per weight decay on the rest, keep the one with the best validation
       accuracy (ties go to the larger weight decay).
    3. Refit on all training samples with that weight decay and score on test.

    When a class has a single training sample no validation split exists; the middle of
    the sorted weight decays is used and the result says so.

    Args:
        train_x: (N, D) training features; train_y: (N,) labels.
        test_x: (Q, D) test features; test_y: (Q,) labels.
        num_classes: K; default max label + 1 over train and test.
        weight_decays: candidate λ of `fit_linear_classifier`.
        val_fraction: share of each training class held out for the choice.
        seed: seeds the split; the fit itself is deterministic.
        max_iter: L-BFGS iterations per fit.

    Returns:
        {"accuracy": float in [0, 1], "weight_decay": float (chosen),
         "val_accuracy": float | None (None without a split),
         "wd_selection": "validation" | "only-candidate" | "fallback-middle",
         "note": str ("" unless a fallback was taken)}.
    """
    _check_probe_inputs(train_x, train_y, test_x, test_y, weight_decays, val_fraction)
    labels = torch.cat([train_y, test_y]).long()
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= k:
        raise SelfsupError(
            f"linear probe labels must lie in [0, {k}); got {int(labels.min())}.."
            f"{int(labels.max())}; raise num_classes or remap the labels"
        )
    train_s, test_s = standardize(train_x, test_x)
    y_train = train_y.long()
    choice = _choose_weight_decay(
        train_s, y_train, k, sorted(weight_decays), val_fraction, seed, max_iter
    )
    weight, bias = fit_linear_classifier(train_s, y_train, k, choice["weight_decay"], max_iter)
    return {"accuracy": linear_accuracy(test_s, test_y, weight, bias), **choice}


def _choose_weight_decay(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decays: list[float],
    val_fraction: float,
    seed: int,
    max_iter: int,
) -> dict[str, Any]:
    """Pick λ by validation accuracy on a stratified split of the training set only."""
    if len(weight_decays) == 1:
        return {
            "weight_decay": float(weight_decays[0]),
            "val_accuracy": None,
            "wd_selection": "only-candidate",
            "note": "",
        }
    split = stratified_split(y.numpy(), val_fraction, seed)
    if split is None:
        middle = float(weight_decays[len(weight_decays) // 2])
        return {
            "weight_decay": middle,
            "val_accuracy": None,
            "wd_selection": "fallback-middle",
            "note": (
                "a class has a single training label, so no validation split exists; "
                f"used the middle weight decay {middle:g}"
            ),
        }
    fit_idx, val_idx = (torch.from_numpy(i) for i in split)
    best_wd, best_acc = weight_decays[0], -1.0
    for wd in weight_decays:
        weight, bias = fit_linear_classifier(x[fit_idx], y[fit_idx], num_classes, wd, max_iter)
        acc = linear_accuracy(x[val_idx], y[val_idx], weight, bias)
        if acc >= best_acc:
            best_wd, best_acc = wd, acc
    return {
        "weight_decay": float(best_wd),
        "val_accuracy": best_acc,
        "wd_selection": "validation",
        "note": "",
    }


def _check_probe_inputs(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    weight_decays: Sequence[float],
    val_fraction: float,
) -> None:
    """Raise SelfsupError with a fix for every malformed argument of `linear_probe`."""
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise SelfsupError(
            f"linear probe expects (N, D) train and test features of one width, got "
            f"{tuple(train_x.shape)} and {tuple(test_x.shape)}; embed both with one encoder"
        )
    if train_y.shape != (train_x.shape[0],) or test_y.shape != (test_x.shape[0],):
        raise SelfsupError(
            f"linear probe got labels {tuple(train_y.shape)} for {train_x.shape[0]} train "
            f"rows and {tuple(test_y.shape)} for {test_x.shape[0]} test rows; pass one "
            "label per row"
        )
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise SelfsupError("linear probe needs at least one train and one test sample")
    if not (torch.isfinite(train_x).all() and torch.isfinite(test_x).all()):
        raise SelfsupError(
            "features contain NaN or Inf; the encoder has diverged — lower the learning "
            "rate or enable gradient clipping"
        )
    if not weight_decays or min(weight_decays) < 0:
        raise SelfsupError(
            f"weight_decays must be a non-empty list of values ≥ 0, got {list(weight_decays)}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise SelfsupError(f"val_fraction must lie in (0, 1), got {val_fraction}; 0.2 works")
