"""VideoMAE's tube masking (Tong et al., NeurIPS 2022, arXiv:2203.12602, section 3.3).

One random spatial mask per clip, exactly round(S·ratio) of the S patch positions, hidden in
every temporal slice alike: a hidden cube's neighbours in time are hidden too, so it cannot
be copied from the next frame and the model must reason about motion. VideoMAE hides 90%.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.views.masking import random_patch_mask

TUBE_RATIO = 0.9
"""VideoMAE's share of hidden tubes."""


def tube_mask(
    batch: int,
    slices: int,
    spatial: int,
    ratio: float = TUBE_RATIO,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, slices·spatial) bool, True = hidden, in the video ViT's time-major token order:
    the same round(spatial·ratio) positions hidden in each of the ``slices`` temporal slices."""
    spatial_mask = random_patch_mask(batch, spatial, ratio, device=device, generator=generator)
    return spatial_mask.repeat(1, slices)  # (B, T'·S): slice t' holds tokens t'·S ... t'·S + S - 1
