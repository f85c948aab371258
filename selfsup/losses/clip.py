"""The softmax losses of image–text pairs: CLIP's symmetric InfoNCE and ALIGN's
label-smoothed normalised softmax.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021
(CLIP, arXiv:2103.00020); Jia et al., "Scaling Up Visual and Vision-Language Representation
Learning With Noisy Text Supervision", 2021 (ALIGN, arXiv:2102.05918).

For B pairs with L2-normalised image embeddings x_i and text embeddings y_i (B, D) and a
scale s (CLIP: s = exp(t), the learnable logit scale; ALIGN: s = 1/τ, the learnable
temperature), the logits are s·x_i·y_j and

    ℓ = ½ [ CE_ε(rows of s·X Yᵀ, i) + CE_ε(rows of s·Y Xᵀ, i) ]

where CE_ε is the mean cross-entropy of each row against its own pair with label smoothing ε
(CLIP: ε = 0; ALIGN: ε = 0.1, spread over all B columns, as ``F.cross_entropy`` does).

Distributed: the other processes' embeddings are gathered with gradient, and each process
scores only its own rows against every column (images against all texts, texts against all
images). The mean of the processes' losses is then the loss of one process holding the whole
batch, and DDP's averaged gradients are its gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.precision import float32_forward

LOGIT_SCALE_MAX = 100.0
"""CLIP clips the learned logit scale at 100 "to prevent scaling the logits by more than
100, which we found necessary to prevent training instability"."""


def check_pairs(x: Tensor, y: Tensor) -> None:
    """Raise ValueError unless ``x`` and ``y`` are (B, D) embeddings of B pairs."""
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(
            f"expected (B, D) image and text embeddings of equal shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )


def pair_softmax_loss(
    x: Tensor, y: Tensor, scale: Tensor, label_smoothing: float = 0.0, gather: bool = True
) -> Tensor:
    """½ (CE(image rows) + CE(text rows)) of normalised ``x``, ``y`` (B, D) at logit ``scale``
    (a scalar tensor), each process scoring its own rows against every process's columns."""
    check_pairs(x, y)
    x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    all_x = distributed.gather_with_grad(x) if gather else x  # (P·B, D)
    all_y = distributed.gather_with_grad(y) if gather else y
    offset = distributed.rank() * x.shape[0] if gather else 0
    target = torch.arange(x.shape[0], device=x.device) + offset  # (B,): own pair's column
    image_rows = scale * x @ all_y.T  # (B, P·B)
    text_rows = scale * y @ all_x.T  # (B, P·B)
    return 0.5 * (
        F.cross_entropy(image_rows, target, label_smoothing=label_smoothing)
        + F.cross_entropy(text_rows, target, label_smoothing=label_smoothing)
    )


class CLIPLoss(nn.Module):
    """``CLIPLoss()(x, y)`` with image and text embeddings (B, D) -> scalar.

    Holds the learnable logit scale t (``log_scale``, initialised at log(1/0.07) as in the
    paper); the logits are scaled by exp(t) clamped at 100.
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        max_scale: float = LOGIT_SCALE_MAX,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < init_temperature:
            raise ValueError(f"init_temperature must be positive, got {init_temperature}")
        if 1 / init_temperature > max_scale:
            raise ValueError(f"1/init_temperature exceeds the clamp {max_scale}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_scale = max_scale
        self.gather = gather

    def scale(self) -> Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale)

    @float32_forward
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return pair_softmax_loss(x, y, self.scale(), gather=self.gather)


class ALIGNLoss(nn.Module):
    """``ALIGNLoss()(x, y)`` with image and text embeddings (B, D) -> scalar.

    The normalised softmax of ALIGN: logits x·y/τ with a learnable temperature τ initialised
    at 1.0 (kept positive as exp of ``log_temperature``) and label smoothing 0.1, which the
    paper adds for its noisy alt-text captions.
    """

    def __init__(
        self, init_temperature: float = 1.0, label_smoothing: float = 0.1, gather: bool = True
    ) -> None:
        super().__init__()
        if not 0 < init_temperature:
            raise ValueError(f"init_temperature must be positive, got {init_temperature}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.label_smoothing = label_smoothing
        self.gather = gather

    def scale(self) -> Tensor:
        return (-self.log_temperature).exp()

    @float32_forward
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return pair_softmax_loss(x, y, self.scale(), self.label_smoothing, self.gather)
