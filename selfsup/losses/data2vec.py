"""data2vec's targets (averaged, normalised teacher layers) and its regression loss.

Baevski, Hsu, Xu, Babu, Gu, Auli. "data2vec: A General Framework for Self-supervised
Learning in Speech, Vision and Language." ICML 2022. arXiv:2202.03555.

The student sees the masked input and regresses, at the masked positions, a target made from
the EMA teacher's view of the whole input: the average of its top K block outputs, each
normalised (§3.3), with a Smooth L1 loss (§3.4).

Settings per modality (of a 12-block Base model), as the authors' released fairseq configs
give them (``examples/data2vec/config/{audio,text,vision}/pretraining/``: base_librispeech,
base, base_imagenet_d2v1); the masks are the paper's:

| modality | top_k (of 12) | β (0 = MSE) | per-layer norm (`norm`) | after averaging (`final_norm`) | mask |
|---|---|---|---|---|---|
| speech | 8 | 0 | instance | none | spans: p = 0.065, length 10 |
| vision | 6 | 2 | none | layer | BEiT blocks, 60% of patches |
| text | 10 | 4 | layer | none | BERT 15%, 80/10/10 |

Normalisation. §3.3 normalises each block's output before averaging: instance norm (over the
time steps, per channel, no parameters) for speech, whose neighbouring frames are highly
correlated, and parameter-free layer norm (over the channels of one token) for NLP and
vision. The released configs agree for speech (``instance_norm_target_layer``) and text
(``layer_norm_target_layer``); for vision the data2vec 1 config
(``base_imagenet_d2v1.yaml``) applies no per-layer norm and one parameter-free layer norm to
the average (``layer_norm_targets``). Both are available here; the table follows the
released code. The Smooth L1 scale s of ``Data2VecLoss`` is 1/sqrt(D) in the speech and vision
configs and 1 in the text config. The paper takes each block's output of
the feed-forward network before the last residual connection (text, speech); the vision code
takes the block outputs. Which tensors to pass is the caller's choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import SelfsupError

Norm = Literal["instance", "layer", "none"]


def _normalise(x: Tensor, norm: Norm, eps: float) -> Tensor:
    """(B, N, D) float -> (B, N, D): instance norm over N per (b, d), or layer norm over D."""
    if norm == "instance":
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, D)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return (x - mean) / (var + eps).sqrt()
    if norm == "layer":
        return F.layer_norm(x, x.shape[-1:], eps=eps)
    return x


def data2vec_targets(
    layer_outputs: Sequence[Tensor],
    top_k: int,
    norm: Norm = "layer",
    final_norm: Norm = "none",
    eps: float = 1e-5,
) -> Tensor:
    """Average of the last ``top_k`` teacher layers, each normalised -> (B, N, D) float32.

        y = final_norm( (1/K) Σ_{l = L−K+1}^{L} norm(a^l) )

    ``norm`` / ``final_norm``: "instance" normalises each channel over the N tokens of a
    sample (mean 0, biased variance 1, as ``F.instance_norm``), "layer" each token over its D
    channels (``F.layer_norm`` without weights), "none" leaves it. eps 1e-5 as in PyTorch's
    (and fairseq's) norms. See the module docstring for each modality's setting.

    Shapes: ``layer_outputs`` L tensors of (B, N, D), first block first (the teacher's
    outputs, normally computed without gradient) -> (B, N, D).
    """
    if not 1 <= top_k <= len(layer_outputs):
        raise SelfsupError(
            f"top_k must lie between 1 and the {len(layer_outputs)} layer outputs given, got {top_k}"
        )
    for name, value in [("norm", norm), ("final_norm", final_norm)]:
        if value not in ("instance", "layer", "none"):
            raise SelfsupError(f"{name} must be 'instance', 'layer' or 'none', got {value!r}")
    top = list(layer_outputs)[-top_k:]
    shape = top[0].shape
    if len(shape) != 3 or any(t.shape != shape for t in top):
        raise SelfsupError(
            f"layer outputs must all be (B, N, D) of one shape, got {[tuple(t.shape) for t in top]}"
        )
    y = sum(_normalise(t.float(), norm, eps) for t in top) / top_k  # (B, N, D)
    assert isinstance(y, Tensor)
    return _normalise(y, final_norm, eps)


class Data2VecLoss(nn.Module):
    """Smooth L1 regression of the teacher targets at the masked positions.

    Per masked position i with prediction f_i and target y_i (D values each):

        ℓ(e) = ½ e² / β          if |e| ≤ β
               |e| − ½ β         otherwise                 (β = 0: ℓ(e) = e², MSE)
        L    = (1/|M|) Σ_{i ∈ M} s · Σ_{d=1}^{D} ℓ(f_id − y_id)

    i.e. summed over the D channels, scaled by s, averaged over the masked positions, as the
    authors' code does (``loss.sum(dim=-1)`` times the scale, divided by the number of masked
    positions). ``scale=None`` gives s = 1/sqrt(D), the vision and speech code's default; the
    text config sets s = 1. With no masked position the loss is 0.

    Shapes: ``pred`` and ``target`` (B, N, D) with ``mask`` (B, N) bool, True = masked, or
    already gathered (M, D) with ``mask=None`` -> scalar. ``target`` should carry no gradient.
    """

    def __init__(self, beta: float = 2.0, scale: float | None = None) -> None:
        super().__init__()
        if beta < 0:
            raise SelfsupError(f"beta must be 0 (MSE) or positive, got {beta}")
        self.beta = beta
        self.scale = scale

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if pred.shape != target.shape:
            raise SelfsupError(
                f"pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if mask is not None:
            if mask.dtype != torch.bool or pred.ndim != 3 or mask.shape != pred.shape[:2]:
                raise SelfsupError(
                    f"with a mask, pred and target are (B, N, D) and mask (B, N) bool; got "
                    f"{tuple(pred.shape)} and {mask.dtype} {tuple(mask.shape)}"
                )
            pred, target = pred[mask], target[mask]  # (M, D)
        if pred.ndim != 2:
            raise SelfsupError(
                f"without a mask, pred and target are (M, D), got {tuple(pred.shape)}"
            )
        pred, target = pred.float(), target.float()
        if self.beta == 0:
            per_value = F.mse_loss(pred, target, reduction="none")
        else:
            per_value = F.smooth_l1_loss(pred, target, reduction="none", beta=self.beta)
        scale = self.scale if self.scale is not None else 1 / math.sqrt(pred.shape[-1])
        per_position = per_value.sum(dim=-1) * scale  # (M,)
        return per_position.sum() / max(per_position.shape[0], 1)
