"""1-NN with dynamic time warping: the raw-series baseline of the UCR/UEA literature.

Every test series takes the label of the training series nearest under DTW (Sakoe & Chiba
1978; the archive's standard "DTW_A" baseline with a full warping window, as in Bagnall et al.
2017 and the tables of TS2Vec and T-Loss). The local cost is the squared Euclidean distance
between time steps (over every channel at once: dependent DTW for multivariate series), the
alignment may warp without limit, and D(i, j) = cost(i, j) + min(D(i-1, j-1), D(i-1, j),
D(i, j-1)). Series of different lengths are compared over their own lengths (the NaN padding
past a series' end is not part of it); a missing value inside a series counts as 0.

The recurrence runs on whole anti-diagonals (every cell with i + j = k depends only on the
diagonals k-1 and k-2) for a batch of pairs at once: O(T·S) work per pair, T + S vectorised
steps per batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

DTYPE = torch.float32
"""Float32 ran 3.6× faster than float64 here (ACSF1-sized series, one core); its sums stay
within a relative 1e-5 of float64's, far below the gaps between neighbours that decide a 1-NN
label."""
BANK_BLOCK = 64
"""Bank series swept together (after sorting by length): small enough that a block's lengths
are close, large enough that each vectorised step holds many pairs."""
PAIRS_PER_BATCH = 2_000_000
"""Pairs × steps of the longer series swept together: it bounds memory (4 bytes × (3 + 2C)
each: three diagonals and both series) while keeping each vectorised step large."""


CELLS_IN_EVALUATION = 1e11
"""The most DTW cells (the sum over test × training pairs of length × length) the raw
baseline of an evaluation computes: ACSF1 (100 × 100 series of 1,460 steps, 2.1e10 cells)
takes ~6-12 minutes on one core here, PLAID (537 × 537 of 100-1,344 steps) 3.1e10; a set
past the cap would take hours, and is left to ``benchmarks/ucr_dtw.py``."""


def dtw_cells(queries: Tensor, bank: Tensor) -> float:
    """About the cells of the DTW matrices ``dtw_distances`` sweeps for these NaN-padded
    series: every pair's length × length (the blocks by length add a little)."""
    return float(series_lengths(queries).double().sum() * series_lengths(bank).double().sum())


def series_lengths(x: Tensor) -> Tensor:
    """(N, T, C) NaN-padded -> (N,) int64: one past each series' last observed step (at least 1)."""
    observed = ~torch.isnan(x).all(dim=-1)  # (N, T)
    steps = torch.arange(1, x.shape[1] + 1, device=x.device)
    return (observed * steps).amax(dim=1).clamp(min=1)


def dtw_pairs(a: Tensor, b: Tensor, len_a: Tensor, len_b: Tensor) -> Tensor:
    """DTW distance of each pair: a (P, T, C), b (P, S, C) with their lengths (P,) -> (P,).

    Cells past a series' length are computed on its zero padding and ignored: pair p's
    distance is D(len_a[p], len_b[p]), read when the sweep reaches its diagonal. The
    diagonals are stored by the row i of D (0..T); D(0, 0) = 0 and the rest of row 0 and
    column 0 is infinite. With b reversed in time, the cells of one diagonal read contiguous
    slices of a, b and the two diagonals before it.
    """
    P, T, _ = a.shape
    S = b.shape[1]
    a = torch.nan_to_num(a.to(DTYPE), nan=0.0)
    b_reversed = torch.nan_to_num(b.to(DTYPE), nan=0.0).flip(1)  # b[j - 1] = b_reversed[S - j]
    buffers = [torch.full((P, T + 1), math.inf, dtype=DTYPE) for _ in range(3)]
    buffers[0][:, 0] = 0.0
    before, last, spare = buffers  # the diagonals k - 2, k - 1, and the one for k
    out = torch.full((P,), math.inf, dtype=DTYPE)
    ends = len_a + len_b  # (P,) the diagonal of each pair's last cell
    for k in range(2, T + S + 1):
        lo, hi = max(1, k - S), min(T, k - 1)  # rows i on diagonal k; columns j = k - i
        cost = (a[:, lo - 1 : hi] - b_reversed[:, S - k + lo : S - k + hi + 1]).square_()
        step = torch.minimum(before[:, lo - 1 : hi], last[:, lo - 1 : hi])
        current = spare
        current[:, 0] = math.inf  # row 0 (the buffer may hold diagonal 0's D(0, 0))
        torch.add(
            cost.sum(dim=-1) if cost.shape[-1] > 1 else cost[..., 0],
            torch.minimum(step, last[:, lo : hi + 1]),
            out=current[:, lo : hi + 1],
        )
        done = (ends == k).nonzero().flatten()
        if len(done):
            out[done] = current[done, len_a[done]]
        before, last, spare = last, current, before
    return out


def dtw_distances(queries: Tensor, bank: Tensor) -> Tensor:
    """(Q, T, C) and (N, S, C) NaN-padded series -> (Q, N) full-window DTW distances.

    Both sides are sorted by length and swept in blocks (``BANK_BLOCK`` bank series against as
    many queries as ``PAIRS_PER_BATCH`` allows), each block cut to its own longest series, so
    a set of mostly short series with a few long ones (PLAID: median 300 steps, longest 1,344)
    costs about the sum of its pairs' cells rather than every pair at the longest length."""
    len_q, len_n = series_lengths(queries), series_lengths(bank)
    q_order, n_order = len_q.argsort(stable=True), len_n.argsort(stable=True)
    out = torch.empty(len(queries), len(bank), dtype=DTYPE)
    for n_block in n_order.split(BANK_BLOCK):
        S = int(len_n[n_block].max())
        start = 0
        while start < len(q_order):
            longest = max(int(len_q[q_order[start]]), S)
            end = min(len(q_order), start + max(1, PAIRS_PER_BATCH // (len(n_block) * longest)))
            while (
                end - start > 1
                and (end - start) * len(n_block) * max(int(len_q[q_order[end - 1]]), S)
                > PAIRS_PER_BATCH
            ):
                end = start + (end - start) // 2  # a long query at the block's end: fewer
            q_block = q_order[start:end]
            T = int(len_q[q_block].max())
            qi = q_block.repeat_interleave(len(n_block))  # (P,) every bank series per query
            ni = n_block.repeat(len(q_block))
            distances = dtw_pairs(queries[qi, :T], bank[ni, :S], len_q[qi], len_n[ni])
            out[q_block[:, None], n_block[None, :]] = distances.view(len(q_block), len(n_block))
            start = end
    return out


def nn_dtw_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> float:
    """Test accuracy (a fraction) of 1-NN under full-window DTW; ties go to the first
    training series."""
    nearest = dtw_distances(test_x, train_x).argmin(dim=1)  # (Q,)
    return float((train_y[nearest] == test_y).double().mean())


def nn_dtw_rows(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    fractions: Sequence[float],
    seeds: Sequence[int],
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """``eval.json`` rows of 1-NN DTW on the raw series (encoder ``raw``, protocol
    ``1nn-dtw``), at the label fractions and seeds the probes use: the test × train distances
    are computed once, and each seed's class-balanced subset of the training series is the
    bank its nearest neighbour is taken from. (series (N, T, C), labels (N,)) per split."""
    from selfsup.evaluate.protocol import class_balanced_subset, result_row

    (train_x, train_y), (test_x, test_y) = train, test
    if progress is not None:
        progress(f"raw · 1-NN DTW · {len(test_x)} × {len(train_x)} series")
    started = time.perf_counter()
    distances = dtw_distances(test_x, train_x)  # (Q, N)
    seconds = round(time.perf_counter() - started, 1)
    rows = []
    for fraction in fractions:
        run_seeds = list(seeds) if fraction < 1.0 else list(seeds)[:1]
        accuracies = []
        for seed in run_seeds:
            bank = torch.from_numpy(class_balanced_subset(train_y.numpy(), fraction, seed))
            nearest = bank[distances[:, bank].argmin(dim=1)]  # (Q,) index into the train split
            accuracies.append(float((train_y[nearest] == test_y).double().mean()))
        rows.append(
            result_row(
                "raw",
                "1nn-dtw",
                fraction,
                accuracies,
                num_train=len(bank),
                num_test=len(test_y),
                dtw_seconds=seconds,
            )
        )
    return rows
