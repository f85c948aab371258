"""BGRL's bootstrap loss: the online predictions of one view against the target
representations of the other, by cosine similarity.

Thakoor et al., "Large-Scale Representation Learning on Graphs via Bootstrapping", ICLR 2022,
arXiv:2102.06514 (section 3, "the loss").

For online predictions q1, q2 (N, D) of the nodes in views 1 and 2 and target embeddings
y1, y2 (N, D), made without gradient by the EMA target encoder,

    ℓ = 2 − mean_i cos(q1_i, y2_i) − mean_i cos(q2_i, y1_i)

in [0, 4]: 0 when every prediction points at its target. It is half of
BYOL's symmetrised loss (``BYOLLoss``), per node instead of per image, and has no negatives, so
nothing is gathered across processes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.precision import float32_forward


class BGRLLoss(nn.Module):
    """``BGRLLoss()(q1, q2, y1, y2)``, each (N, D) -> scalar in [0, 4]."""

    @float32_forward
    def forward(self, q1: Tensor, q2: Tensor, y1: Tensor, y2: Tensor) -> Tensor:
        if not q1.shape == q2.shape == y1.shape == y2.shape or q1.ndim != 2:
            raise ValueError(
                "expected four (N, D) tensors of equal shape, got "
                + ", ".join(str(tuple(t.shape)) for t in (q1, q2, y1, y2))
            )
        return (  # means over every process's nodes under DDP
            2
            - distributed.global_mean(F.cosine_similarity(q1, y2, dim=1))
            - distributed.global_mean(F.cosine_similarity(q2, y1, dim=1))
        )
