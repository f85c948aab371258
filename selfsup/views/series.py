"""TS2Vec's two views of a batch of series: random overlapping crops and timestamp masks.

Yue et al., AAAI 2022 (arXiv:2106.10466), section 3.2 and its code: one crop length per batch,
two segments [a1, b1] and [a2, b2] with a1 <= a2 <= b1 <= b2 that share [a2, b1], shifted by
an offset drawn per series; the loss compares the shared steps only, so each step's feature
must agree under two different contexts. Then each view's projected steps are hidden with
probability 0.5 (``timestamp_mask``), inside the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from selfsup.errors import SelfsupError


@dataclass(frozen=True)
class Crops:
    """Two overlapping views and where their shared steps lie: ``first`` (B, b1 - a1, C) ends
    with the overlap, ``second`` (B, b2 - a2, C) starts with it; the overlap is ``overlap``
    steps long."""

    first: Tensor
    second: Tensor
    overlap: int
    starts: Tensor
    """(B,) index in the original series of each row's first shared step."""


def _randint(low: int, high: int, generator: torch.Generator | None, size: tuple = ()) -> Tensor:
    """Uniform integers in [low, high] (both included)."""
    return torch.randint(low, high + 1, size, generator=generator)


def overlapping_crops(
    x: Tensor, temporal_unit: int = 0, generator: torch.Generator | None = None
) -> Crops:
    """TS2Vec's random cropping of a batch x (B, T, C).

    The overlap length l is uniform in [2**(temporal_unit + 1), T]; the overlap [a2, b1) with
    b1 = a2 + l is placed uniformly; a1 is uniform in [0, a2] and b2 in [b1, T]; each row is
    then shifted by its own offset, uniform over the shifts that keep [a1, b2) inside the
    series. Draws use ``generator`` (CPU) or the global generator.
    """
    B, T = x.shape[:2]
    shortest = 2 ** (temporal_unit + 1)
    if T < shortest:
        raise SelfsupError(
            f"series of {T} steps are too short to crop for temporal_unit {temporal_unit}: "
            f"they need at least {shortest}"
        )
    overlap = int(_randint(shortest, T, generator))
    a2 = int(_randint(0, T - overlap, generator))
    b1 = a2 + overlap
    a1 = int(_randint(0, a2, generator))
    b2 = int(_randint(b1, T, generator))
    offset = _randint(-a1, T - b2, generator, (B,)).to(x.device)  # (B,)
    rows = torch.arange(B, device=x.device)[:, None]  # (B, 1)
    first = x[rows, offset[:, None] + torch.arange(a1, b1, device=x.device)]  # (B, b1 - a1, C)
    second = x[rows, offset[:, None] + torch.arange(a2, b2, device=x.device)]  # (B, b2 - a2, C)
    return Crops(first, second, overlap, offset + a2)


def timestamp_mask(
    batch: int, steps: int, p: float = 0.5, device: torch.device | str | None = None
) -> Tensor:
    """(B, T) bool, True = the step's projected input is hidden, each with probability ``p``
    independently (TS2Vec's binomial mask, p = 0.5)."""
    if not 0 <= p < 1:
        raise SelfsupError(f"the timestamp mask probability must lie in [0, 1), got {p}")
    return torch.rand(batch, steps, device=device) < p


def patch_mask(
    batch: int,
    patches: int,
    ratio: float = 0.4,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, N) bool, True = hidden: in every row exactly N - int(N · (1 - ratio)) patches,
    chosen uniformly (PatchTST's ``random_masking``: the patches with the largest of N uniform
    draws are hidden; the paper hides 40%). Draws use ``generator`` or the global one."""
    if not 0 < ratio < 1:
        raise SelfsupError(f"the patch mask ratio must lie in (0, 1), got {ratio}")
    keep = int(patches * (1 - ratio))
    noise = torch.rand(batch, patches, generator=generator).to(device)  # (B, N)
    order = noise.argsort(dim=1)  # ascending: the first ``keep`` stay visible
    mask = torch.ones(batch, patches, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :keep], False)
    return mask
