"""SimMIM's L1 reconstruction loss on the hidden pixels.

Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu. "SimMIM: A Simple Framework for Masked Image
Modeling." CVPR 2022. arXiv:2111.09886.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.errors import SelfsupError


class SimMIMLoss(nn.Module):
    """Mean absolute error over the pixel values of the hidden patches.

    With the patch mask upsampled to a pixel mask M (B, 1, H, W) (1 where the pixel's patch
    is hidden), prediction ŷ and image x, both (B, C, H, W):

        L = Σ_{b,c,h,w} M_bhw |ŷ_bchw − x_bchw| / (Σ_{b,h,w} M_bhw + 1e-5) / C

    i.e. the mean over the hidden pixel values, as SimMIM's code writes it
    ``(loss_recon * mask).sum() / (mask.sum() + 1e-5) / in_chans``. Visible pixels do not
    count (the paper found predicting only the hidden ones better).

    Shapes: ``pred`` and ``images`` (B, C, H, W); ``mask`` (B, N) bool, True = hidden, over
    the (H/patch)×(W/patch) patch grid in row-major order; ``patch`` the model's patch side
    in pixels -> scalar.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, images: Tensor, mask: Tensor, patch: int) -> Tensor:
        if pred.shape != images.shape or pred.ndim != 4:
            raise SelfsupError(
                f"SimMIMLoss wants pred and images of one (B, C, H, W) shape, got "
                f"{tuple(pred.shape)} and {tuple(images.shape)}"
            )
        B, C, H, W = images.shape
        if patch < 1 or H % patch or W % patch:
            raise SelfsupError(
                f"images of {H}×{W} pixels do not split into {patch}×{patch} patches"
            )
        gh, gw = H // patch, W // patch
        if mask.dtype != torch.bool or tuple(mask.shape) != (B, gh * gw):
            raise SelfsupError(
                f"mask must be a bool (B, N) = ({B}, {gh * gw}) tensor over the {gh}×{gw} patch "
                f"grid, got {mask.dtype} of shape {tuple(mask.shape)}"
            )
        pixels = mask.view(B, 1, gh, gw).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        pixels = pixels.float()  # (B, 1, H, W)
        recon = (pred.float() - images.float()).abs()  # (B, C, H, W)
        return (recon * pixels).sum() / (pixels.sum() + self.eps) / C
