"""A sampler whose order is a pure function of (seed, epoch), so a run resumes mid-epoch exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

EpochOrder = Callable[[int, int], Iterable[Sequence[int] | np.ndarray]]
"""``order(seed, epoch)`` -> the epoch's sample indices, a permutation of ``range(num_samples)``
handed out in chunks (e.g. one per shuffle window of a sharded data set), so the sampler
never needs the whole permutation in memory."""


class ResumableSampler(Sampler[int]):
    """Shuffles ``num_samples`` indices with a generator seeded by (seed, epoch), keeps this
    process's share (every ``world``-th index from ``rank``, equal shares, no duplicates
    within an epoch), and can start ``skip_batches`` batches into the epoch.

    ``order`` replaces the uniform shuffle with the data set's own order, e.g. the windowed
    shuffle of ``ShardDataset.epoch_order``; it must also be a pure function of (seed, epoch).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        order: EpochOrder | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.order = order
        self.epoch = 0
        self.skip_batches = 0

    @property
    def batches_per_epoch(self) -> int:
        return (self.num_samples // self.world) // self.batch_size

    def set_position(self, epoch: int, batch_in_epoch: int) -> None:
        self.epoch = epoch
        self.skip_batches = batch_in_epoch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        start = self.skip_batches * self.batch_size
        stop = self.batches_per_epoch * self.batch_size
        if self.order is not None:
            return self._from_order(start, stop)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=g)
        per_rank = self.num_samples // self.world
        mine = order[self.rank : per_rank * self.world : self.world]
        return iter(mine[start:stop].tolist())

    def _from_order(self, start: int, stop: int) -> Iterator[int]:
        """This rank's positions ``start:stop`` of ``order``'s epoch, one chunk at a time.

        Global position p of the epoch belongs to rank ``p % world`` (as in the uniform
        shuffle), so this rank's k-th index sits at global position ``k * world + rank``.
        """
        assert self.order is not None
        first = start * self.world + self.rank  # global position of this rank's index `start`
        end = stop * self.world  # global positions at or past this are not used
        offset = 0  # global position of the chunk's first index
        for chunk in self.order(self.seed, self.epoch):
            if offset >= end:
                return
            indices = np.asarray(chunk)
            upto = offset + len(indices)
            if upto > first:
                # the first position >= max(first, offset) that is this rank's
                begin = first if first >= offset else offset + (self.rank - offset) % self.world
                mine = indices[begin - offset : min(end, upto) - offset : self.world]
                for piece in range(0, len(mine), 4096):  # no list of a whole window at once
                    yield from mine[piece : piece + 4096].tolist()
            offset = upto
