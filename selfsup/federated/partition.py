"""How one training split is divided among the clients of a federation, and a client's share.

When every client holds its own data there is nothing to divide; these partitions are for the
common case of simulating a fleet on one data set (and for a fleet whose devices read one
shared store but may only train on their own samples).

- ``iid``: a random permutation cut into equal shares.
- ``dirichlet``: for each class c, the shares of its samples across the K clients are drawn
  from Dir(alpha·1_K) (Hsu, Qi & Brown 2019, arXiv:1909.06335, the split of most federated
  SSL papers); alpha = 0.1 leaves each client a few classes, alpha = 100 is nearly IID. Only
  the partition reads the labels; pretraining never does.
- ``column``: a text file with one key per training sample (a device id, a site); samples
  with the same key form one client, the distinct keys, sorted, are clients 0..K-1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selfsup.data.subset import IndexSubset as Partition
from selfsup.errors import SelfsupError

__all__ = ["Partition", "partition_indices"]


def partition_indices(
    n: int,
    clients: int,
    scheme: str,
    *,
    labels: Tensor | None = None,
    alpha: float = 1.0,
    column: str | None = None,
    seed: int = 0,
) -> list[Tensor]:
    """The sample indices of each client: ``clients`` int64 tensors that together hold
    every index of ``range(n)`` once."""
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [
            torch.from_numpy(np.sort(part)) for part in np.array_split(rng.permutation(n), clients)
        ]
    if scheme == "dirichlet":
        if labels is None or bool((labels < 0).all()):
            raise SelfsupError(
                "federated.partition=dirichlet splits by class, but the training data has no "
                "labels: use --partition iid or --partition column"
            )
        return _dirichlet(labels.numpy(), clients, alpha, rng)
    if scheme == "column":
        return _by_column(Path(str(column)), n, clients)
    raise SelfsupError(f"unknown partition {scheme!r}; choose iid, dirichlet or column")


def _dirichlet(
    labels: np.ndarray, clients: int, alpha: float, rng: np.random.Generator
) -> list[Tensor]:
    """Per class, cut its shuffled samples at the cumulative Dir(alpha) shares."""
    parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for k, piece in enumerate(np.split(members, cuts)):
            parts[k].append(piece)
    return [torch.from_numpy(np.sort(np.concatenate(p))).long() for p in parts]


def _by_column(path: Path, n: int, clients: int) -> list[Tensor]:
    try:
        keys = [line.strip() for line in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise SelfsupError(f"cannot read federated.partition_column {path}: {error}") from None
    keys = [k for k in keys if k] if len(keys) > n else keys
    if len(keys) != n:
        raise SelfsupError(
            f"federated.partition_column {path} has {len(keys)} lines but the training split "
            f"has {n} samples: give one client key per sample, in order"
        )
    names = sorted(set(keys))
    if len(names) != clients:
        raise SelfsupError(
            f"federated.partition_column {path} names {len(names)} clients but "
            f"federated.clients is {clients}: pass --clients {len(names)}"
        )
    code = {name: k for k, name in enumerate(names)}
    owner = np.array([code[k] for k in keys])
    return [torch.from_numpy(np.flatnonzero(owner == k)).long() for k in range(clients)]
