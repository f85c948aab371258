"""Jigsaw puzzles made on whole batches: cut each image into a G×G grid of tiles, crop each
tile at a random offset inside its cell, and shuffle the tiles by one permutation of a fixed
set chosen for maximal Hamming distance.

Noroozi & Favaro. "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles." ECCV 2016. arXiv:1603.09246.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import tempfile

import numpy as np
import torch
from torch import Tensor, nn

from selfsup.cache import cache_dir

POOL_SIZE = 100_000
"""Candidates for grids of more than 9 tiles, whose N! permutations cannot be listed:
this many distinct random permutations (seeded) stand in for all of them."""


def _candidates(num_tiles: int, seed: int) -> np.ndarray:
    """Every permutation of ``num_tiles`` (lexicographic), or a seeded random pool: (M, N) int8."""
    if num_tiles <= 9:
        return np.array(list(itertools.permutations(range(num_tiles))), dtype=np.int8)
    rng = np.random.default_rng(seed)
    pool = np.argsort(rng.random((POOL_SIZE, num_tiles)), axis=1).astype(np.int8)
    return np.unique(pool, axis=0)


def _greedy_hamming(num_tiles: int, count: int, seed: int) -> np.ndarray:
    """Noroozi & Favaro's algorithm 1: start from a random permutation, then repeatedly add the
    candidate farthest from those chosen. "Farthest" is the largest *minimum* Hamming distance
    to the chosen set, ties broken by the largest total distance (the paper's criterion) and
    then by the lowest index. The paper ranks by the total alone, which lets near-duplicates
    in; ranking by the minimum first keeps every pair of permutations far apart."""
    candidates = _candidates(num_tiles, seed)
    if count > len(candidates):
        raise ValueError(
            f"a puzzle of {num_tiles} tiles has only {len(candidates)} permutations; "
            f"ask for at most that many, not {count}"
        )
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(candidates)))]
    nearest = (candidates != candidates[chosen[0]]).sum(axis=1).astype(np.int64)  # (M,)
    total = nearest.copy()
    tie = num_tiles * count + 1  # total < tie, so min distance dominates the score
    for _ in range(count - 1):
        j = int(np.argmax(nearest * tie + total))  # chosen ones have nearest = 0
        chosen.append(j)
        distance = (candidates != candidates[j]).sum(axis=1)
        np.minimum(nearest, distance, out=nearest)
        total += distance
    return candidates[chosen].astype(np.int64)


@functools.lru_cache(maxsize=8)
def maximal_hamming_permutations(num_tiles: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct permutations of ``num_tiles`` tiles, (count, num_tiles) int64, far
    apart in Hamming distance; deterministic for a seed and cached on disk (a few seconds for 100
    permutations of 9 tiles, up to half a minute for 1000 on 2 cores; then free)."""
    if num_tiles < 2 or count < 2:
        raise ValueError(f"need at least 2 tiles and 2 permutations, got {num_tiles} and {count}")
    if num_tiles <= 9 and count > math.factorial(num_tiles):
        raise ValueError(
            f"a puzzle of {num_tiles} tiles has only {math.factorial(num_tiles)} permutations; "
            f"ask for at most that many, not {count}"
        )
    path = cache_dir("jigsaw") / f"hamming-{num_tiles}tiles-{count}-seed{seed}.npy"
    if path.is_file():
        try:
            perms = np.load(path)
            if perms.shape == (count, num_tiles):
                return perms
        except (OSError, ValueError):
            pass  # a damaged cache file: make it again
    perms = _greedy_hamming(num_tiles, count, seed)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, perms)
    os.replace(tmp, path)
    return perms


def hamming_distances(perms: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances (K, K) of permutations (K, N)."""
    return (perms[:, None, :] != perms[None, :, :]).sum(axis=2)


class JigsawTiles(nn.Module):
    """``tiles(images) -> (tiles (B, N, C, T, T), labels (B,))`` for float images (B, C, S, S)
    with S = grid · cell: tile n of the output is the tile that sat at position
    ``permutations[label][n]``; every tile is a random T×T crop of its cell, so the network
    cannot solve the puzzle by continuing lines across tile borders."""

    def __init__(self, grid: int, cell: int, tile: int, permutations: np.ndarray) -> None:
        super().__init__()
        if not 1 <= tile <= cell:
            raise ValueError(f"tile side must lie in 1..{cell} (the cell side), got {tile}")
        self.grid, self.cell, self.tile = grid, cell, tile
        self.register_buffer("permutations", torch.tensor(permutations), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c = x.shape[:2]
        g, s, t = self.grid, self.cell, self.tile
        n = g * g
        cells = x[:, :, : g * s, : g * s].reshape(b, c, g, s, g, s)
        cells = cells.permute(0, 2, 4, 3, 5, 1).reshape(b, n, s, s, c)  # (B, N, s, s, C)
        offset = torch.randint(0, s - t + 1, (2, b, n, 1), device=x.device)
        span = torch.arange(t, device=x.device)
        rows, cols = offset[0] + span, offset[1] + span  # (B, N, T) each
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ni = torch.arange(n, device=x.device)[None, :, None, None]
        tiles = cells[bi, ni, rows[..., :, None], cols[..., None, :]]  # (B, N, T, T, C)
        labels = torch.randint(0, len(self.permutations), (b,), device=x.device)
        order = self.permutations[labels]  # (B, N): position n shows tile order[n]
        tiles = tiles[torch.arange(b, device=x.device)[:, None], order]  # (B, N, T, T, C)
        return tiles.permute(0, 1, 4, 2, 3), labels  # (B, N, C, T, T), (B,)
