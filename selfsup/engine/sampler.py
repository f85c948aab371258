"""A sampler whose order is a pure function of (seed, epoch), so a run resumes mid-epoch exactly."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Shuffles ``num_samples`` indices with a generator seeded by (seed, epoch), keeps this
    process's share (every ``world``-th index from ``rank``, equal shares, no duplicates
    within an epoch), and can start ``skip_batches`` batches into the epoch."""

    def __init__(
        self, num_samples: int, batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
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
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=g)
        per_rank = self.num_samples // self.world
        mine = order[self.rank : per_rank * self.world : self.world]
        start = self.skip_batches * self.batch_size
        stop = self.batches_per_epoch * self.batch_size
        return iter(mine[start:stop].tolist())
