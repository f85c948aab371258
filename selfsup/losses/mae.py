"""MAE's pixel reconstruction loss, and the patch <-> image reshapes it needs.

He, Chen, Xie, Li, Dollár, Girshick. "Masked Autoencoders Are Scalable Vision Learners."
CVPR 2022. arXiv:2111.06377.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from selfsup.errors import SelfsupError


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, N, patch·patch·C), N = (H/patch)·(W/patch).

    Patches run row-major over the grid, the order of a ViT's
    ``Conv2d(C, D, patch, stride=patch)(x).flatten(2).transpose(1, 2)``; inside a patch the
    values run over (row, column, channel), channel fastest, as in MAE's code.
    """
    if images.ndim != 4 or patch < 1 or images.shape[2] % patch or images.shape[3] % patch:
        raise SelfsupError(
            f"cannot cut images of shape {tuple(images.shape)} into {patch}×{patch} patches: "
            f"give (B, C, H, W) with H and W multiples of {patch}"
        )
    B, C, H, W = images.shape
    gh, gw = H // patch, W // patch
    x = images.reshape(B, C, gh, patch, gw, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(B, gh * gw, patch * patch * C)


def cubify(clips: Tensor, tubelet: int, patch: int) -> Tensor:
    """(B, T, C, H, W) clips -> (B, N, tubelet·patch·patch·C) cubes, N = (T/tubelet)·(H/patch)·(W/patch).

    Cubes run time-major, then row-major over the grid (the video ViT's token order: it
    embeds these cubes); inside a cube the values run over (frame, row, column, channel),
    channel fastest.
    """
    if (
        clips.ndim != 5
        or clips.shape[1] % tubelet
        or clips.shape[3] % patch
        or clips.shape[4] % patch
    ):
        raise SelfsupError(
            f"cannot cut clips of shape {tuple(clips.shape)} into {tubelet}×{patch}×{patch} "
            "cubes: give (B, T, C, H, W) with T a multiple of the tubelet, H, W of the patch"
        )
    B, T, C, H, W = clips.shape
    x = clips.reshape(B, T // tubelet, tubelet, C, H // patch, patch, W // patch, patch)
    x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)  # (B, T', gh, gw, tubelet, p, p, C)
    return x.reshape(B, (T // tubelet) * (H // patch) * (W // patch), -1)


def unpatchify(
    patches: Tensor,
    patch: int,
    channels: int | None = None,
    *,
    grid: tuple[int, int] | None = None,
) -> Tensor:
    """(B, N, patch·patch·C) -> (B, C, grid_h·patch, grid_w·patch), the inverse of ``patchify``.

    ``channels`` defaults to P / patch²; ``grid`` (grid_h, grid_w) defaults to a square grid.
    """
    if patches.ndim != 3 or patch < 1 or patches.shape[2] % (patch * patch):
        raise SelfsupError(
            f"patches of shape {tuple(patches.shape)} are not (B, N, {patch}·{patch}·C)"
        )
    B, N, P = patches.shape
    C = P // (patch * patch)
    if channels is not None and channels != C:
        raise SelfsupError(
            f"patches of width {P} hold {C} channels of {patch}×{patch} pixels, not {channels}"
        )
    if grid is None:
        side = math.isqrt(N)
        if side * side != N:
            raise SelfsupError(f"{N} patches do not make a square grid: pass grid=(grid_h, grid_w)")
        grid = (side, side)
    gh, gw = grid
    if gh * gw != N:
        raise SelfsupError(f"a {gh}×{gw} grid holds {gh * gw} patches, not {N}")
    x = patches.reshape(B, gh, gw, patch, patch, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
    return x.reshape(B, C, gh * patch, gw * patch)


class MAELoss(nn.Module):
    """Mean squared error on the hidden patches, with per-patch normalised targets.

    For patch n of image b with pixels x_bn (P = patch²·C values), prediction ŷ_bn and
    mask m_bn (1 = hidden):

        t_bn  = (x_bn − mean(x_bn)) / sqrt(var(x_bn) + 1e-6)     if norm_pix (else x_bn)
        ℓ_bn  = (1/P) Σ_j (ŷ_bnj − t_bnj)²
        L     = Σ_bn m_bn ℓ_bn / Σ_bn m_bn

    var is the unbiased variance over the patch's P values, as MAE's ``norm_pix_loss``
    (which the paper reports as the better target). Visible patches do not count. With no
    hidden patch at all the loss is 0.

    Shapes: ``pred`` (B, N, P); ``target`` the images (B, C, H, W) (then ``patch`` is
    required) or their patches (B, N, P); ``mask`` (B, N) bool, True = hidden -> scalar.
    """

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix = norm_pix
        self.eps = eps

    def forward(
        self, pred: Tensor, target: Tensor, mask: Tensor, patch: int | None = None
    ) -> Tensor:
        if target.ndim == 4:
            if patch is None:
                raise SelfsupError("MAELoss got images (B, C, H, W): pass the patch size too")
            target = patchify(target, patch)  # (B, N, P)
        if pred.shape != target.shape or mask.shape != pred.shape[:2] or mask.dtype != torch.bool:
            raise SelfsupError(
                f"MAELoss wants pred and target patches of one shape (B, N, P) and a bool "
                f"(B, N) mask, got {tuple(pred.shape)}, {tuple(target.shape)} and "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        target = target.float()
        if self.norm_pix:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + self.eps).sqrt()
        per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # (B, N)
        hidden = mask.float()
        return (per_patch * hidden).sum() / hidden.sum().clamp(min=1.0)
