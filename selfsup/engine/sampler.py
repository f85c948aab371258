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

    ``lengths`` (one number per sample, e.g. a recording's samples) groups samples of similar
    length into the same batch, as fairseq does for speech: the shuffled epoch is cut into
    windows of ``LENGTH_WINDOW`` global batches, each window sorted by length (ties in shuffled
    order), cut into global batches (``batch_size`` x ``world`` consecutive positions, so every
    process's share of a step is alike too), and its batches shuffled. A method that crops a
    batch to its shortest member then keeps most of the audio (98% on the Asterisk prompts
    against 35% for uniform batches of 16).
    """

    LENGTH_WINDOW = 32
    """Global batches per window sorted by length: enough that neighbours in length fill a
    batch, few enough that batches are composed anew every epoch."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        order: EpochOrder | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"{len(lengths)} lengths for {num_samples} samples")
        if lengths is not None and order is not None:
            raise ValueError("a data set's own order and length grouping do not combine")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.order = order
        self.lengths = None if lengths is None else np.asarray(lengths)
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
        if self.lengths is not None:
            order = self._grouped_by_length(order, g)
        per_rank = self.num_samples // self.world
        mine = order[self.rank : per_rank * self.world : self.world]
        return iter(mine[start:stop].tolist())

    def _grouped_by_length(self, order: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``order`` (a shuffle of every sample) regrouped so each global batch holds
        samples of similar length (see the class docstring)."""
        assert self.lengths is not None
        group = self.batch_size * self.world
        window = group * self.LENGTH_WINDOW
        pieces = []
        for begin in range(0, self.num_samples, window):
            part = order[begin : begin + window]
            part = part[torch.from_numpy(np.argsort(self.lengths[part.numpy()], kind="stable"))]
            whole = len(part) // group  # a partial batch stays last: the epoch drops it
            batches = part[: whole * group].view(whole, group)
            pieces += [batches[torch.randperm(whole, generator=g)].flatten(), part[whole * group :]]
        return torch.cat(pieces)

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
