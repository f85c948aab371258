"""Experience replay for a stream of data sets: a reservoir sample of the earlier tasks'
training samples, mixed into every batch of the new task at a fixed share.

The buffer is Vitter's algorithm R (1985) run over the earlier tasks' samples in stream order
(task by task, index order within a task): every sample seen so far has the same chance,
size / seen, of being in it, whatever the number and lengths of the tasks. It is a pure
function of (the tasks' lengths, its size, the seed), so a resumed run, or a later task of
the same stream, rebuilds the same buffer without storing it. Its samples are read from the
earlier tasks' sources; a stream whose old data is gone would store the samples instead.

``ReplayMix`` is the data set the engine trains on: the new task's samples followed by the
buffer's, and an ``epoch_order`` that puts exactly ``replay`` buffer samples and
``batch - replay`` new ones in every process's batch (experience replay as in Chaudhry et
al. 2019, "On Tiny Episodic Memories in Continual Learning", arXiv:1902.10486, with the
replayed share of the batch as an option). An epoch is one pass over the new samples in a
fresh order; the buffer is cycled through in fresh orders as often as the epoch needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selfsup.errors import SelfsupError


def reservoir_sample(n: int, size: int, seed: int) -> np.ndarray:
    """Algorithm R over a stream of ``n`` items (positions 0..n-1): the position held by each
    of the buffer's ``min(size, n)`` slots once the whole stream has passed, int64.

    The first ``size`` items fill the slots; item i >= size draws j uniformly from 0..i and,
    if j < size, replaces slot j. The draws are one numpy call (the same numbers as one call
    per item), the replacements a loop over the accepted items only (about size·ln(n/size)).
    """
    if n <= size:
        return np.arange(n, dtype=np.int64)
    slots = np.arange(size, dtype=np.int64)
    if size == 0:
        return slots
    rng = np.random.default_rng(seed)
    later = np.arange(size, n, dtype=np.int64)  # the items that compete for a slot
    draws = rng.integers(0, later + 1)  # j_i ~ U{0..i}
    for k in np.flatnonzero(draws < size):  # in stream order: a later item overwrites
        slots[draws[k]] = later[k]
    return slots


def replay_share(ratio: float, batch_size: int) -> int:
    """Buffer samples in each process's batch of ``batch_size``."""
    return int(round(ratio * batch_size))


class ReplayMix:
    """The new task's data set, followed by the buffer: indices ``0..N-1`` are the new samples,
    ``N..N+M-1`` the buffer's (sample ``buffer[m]`` of the earlier source ``sources[k]``
    where ``(k, i) = buffer[m]``). ``__len__`` is what one epoch hands out (``K`` global
    batches), so the engine's sampler counts steps right; every other attribute is the new
    data set's (its name, input key, collate, tokenizer).
    """

    def __init__(
        self,
        new: Any,
        sources: Sequence[Any],
        buffer: np.ndarray,
        replay: int,
        batch_size: int,
        world: int = 1,
    ) -> None:
        if not 0 < replay < batch_size:
            raise SelfsupError(f"a batch of {batch_size} cannot hold {replay} replayed samples")
        if len(buffer) == 0:
            raise SelfsupError("the replay buffer is empty: the earlier tasks have no samples")
        self.new, self.sources, self.buffer = new, list(sources), np.asarray(buffer)  # (M, 2)
        self.replay, self.batch_size, self.world = replay, batch_size, world
        self.fresh = batch_size - replay  # new samples per process's batch
        self.batches = len(new) // (world * self.fresh)  # global batches per epoch
        if self.batches == 0:
            raise SelfsupError(
                f"the new data has {len(new)} samples, fewer than one batch's {self.fresh} new "
                f"samples per process: lower --batch-size or continual.replay_ratio"
            )
        self._inputs: Tensor | None = None

    def __len__(self) -> int:
        return self.batches * self.world * self.batch_size

    def __getitem__(self, index: int) -> Any:
        if index < len(self.new):
            return self.new[index]
        k, i = self.buffer[index - len(self.new)]
        return self.sources[int(k)][int(i)]

    @property
    def in_memory(self) -> bool:
        """Whether every source is a tensor in memory with samples of one shape."""
        parts = [self.new, *self.sources]
        if not all(getattr(p, "in_memory", False) for p in parts):
            return False
        return len({tuple(p.as_tensor().shape[1:]) for p in parts}) == 1

    def as_tensor(self) -> Tensor:
        if self._inputs is None:
            replayed = [self.sources[int(k)].as_tensor()[int(i)] for k, i in self.buffer]
            self._inputs = torch.cat([self.new.as_tensor(), torch.stack(replayed)])
        return self._inputs

    def labels(self) -> Tensor:
        """The new samples' labels, then the buffer's (-1 where a source has none)."""

        def of(source: Any) -> Tensor:
            if getattr(source, "has_labels", False):
                return torch.as_tensor(source.labels()).long().reshape(-1)
            return torch.full((len(source),), -1, dtype=torch.long)

        old = [of(s) for s in self.sources]
        replayed = torch.stack([old[int(k)][int(i)] for k, i in self.buffer])
        return torch.cat([of(self.new), replayed])

    def epoch_order(self, seed: int, epoch: int) -> Iterator[np.ndarray]:
        """One epoch's indices for the engine's sampler, which gives global position p to
        process ``p % world`` as its ``p // world``-th index: laid out as (batch, slot,
        process), slots ``0..replay-1`` of every process's batch are buffer samples, the rest
        new ones."""
        rng = np.random.default_rng([seed, epoch])
        K, B, W, R = self.batches, self.batch_size, self.world, self.replay
        new = rng.permutation(len(self.new))[: K * W * self.fresh]
        needed = K * W * R
        cycles = -(-needed // len(self.buffer))
        old = np.concatenate([rng.permutation(len(self.buffer)) for _ in range(cycles)])
        order = np.empty((K, B, W), dtype=np.int64)
        order[:, :R, :] = old[:needed].reshape(K, R, W) + len(self.new)
        order[:, R:, :] = new.reshape(K, self.fresh, W)
        yield order.reshape(-1)

    def __getattr__(self, name: str) -> Any:
        if name in ("new", "sources", "buffer", "_inputs"):
            raise AttributeError(name)
        return getattr(self.new, name)
