"""Collapse indicators: numbers that fall when an encoder maps everything to one point.

Both are cheap enough to log during training and need no labels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import SelfsupError


def effective_rank(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023, "RankMe: Assessing the Downstream Performance of
    Pretrained Self-Supervised Representations by Their Rank").

    With s the singular values of z (min(N, D) of them),

        p_k  = s_k / sum_j s_j + eps
        rank = exp(-sum_k p_k log p_k)

    which lies in [1, min(N, D)]: ≈ D for well-spread embeddings, ≈ 1 for a rank-1
    (collapsed) set. An all-zero z gives ≈ 1. Use N ≥ D samples for a meaningful value.

    Args:
        z: (N, D) embeddings (not normalised: RankMe uses them as they are).
        eps: the paper's smoothing constant.
    """
    _check_embeddings(z)
    s = torch.linalg.svdvals(z.detach().float()).double()  # (min(N, D),)
    p = s / s.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return math.exp(float(-(p * p.log()).sum()))


def embedding_std(z: Tensor) -> float:
    """Mean per-dimension standard deviation of L2-normalised embeddings (SimSiam,
    Chen & He 2021, Sec. 4.1).

        u_n = z_n / ||z_n||,   std = (1/D) sum_d sqrt(mean_n (u_nd - mean_n u_nd)^2)

    ≈ 1/sqrt(D) when the embeddings spread like an isotropic gaussian, 0 when they
    collapse to one direction. The population std (no Bessel correction) is used, so
    N = 1 gives 0 rather than NaN.

    Args:
        z: (N, D) embeddings.
    """
    _check_embeddings(z)
    u = F.normalize(z.detach().float(), dim=1)  # (N, D)
    return float(u.std(dim=0, correction=0).mean())


def _check_embeddings(z: Tensor) -> None:
    """Raise SelfsupError unless z is a non-empty, finite (N, D) tensor."""
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise SelfsupError(
            f"collapse metrics expect non-empty (N, D) embeddings, got shape "
            f"{tuple(z.shape)}; pool or flatten the encoder output first"
        )
    if not torch.isfinite(z).all():
        raise SelfsupError(
            "embeddings contain NaN or Inf; the encoder has diverged — lower the learning "
            "rate or enable gradient clipping"
        )
