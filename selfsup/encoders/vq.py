"""A small visual tokenizer trained in selfsup: a VQ-VAE with an EMA codebook.

van den Oord, Vinyals, Kavukcuoglu. "Neural Discrete Representation Learning." NeurIPS 2017.
arXiv:1711.00937 (the EMA codebook is its appendix A.1); Razavi, van den Oord, Vinyals.
"Generating Diverse High-Fidelity Images with VQ-VAE-2." NeurIPS 2019. arXiv:1906.00446.

BEiT needs a tokenizer that turns each ViT patch into one discrete code. Nothing pretrained
can be downloaded here, so the user's own data trains it: a conv encoder downsamples by the
ViT's patch size (one code per patch: a 28 px image with patch 4 gives 7×7 codes), each
latent vector snaps to its nearest codebook entry, and a conv decoder rebuilds the pixels.

    z_e = E(x)             (B, D, H/p, W/p), D = code_dim
    k   = argmin_j ‖z_e − e_j‖²                      one code per position
    z_q = z_e + sg(e_k − z_e)                        straight-through: ∂z_q/∂z_e = I
    L   = ‖x − G(z_q)‖² / (C·H·W) + β ‖z_e − sg(e_k)‖² / D,      β = 0.25

The codebook is not trained by gradient but by exponential moving averages of the vectors
assigned to each code, with the paper's Laplace smoothing of the counts (see
``VectorQuantizerEMA``). Codes that no vector picked for ``dead_after`` steps in a row are
re-seeded from current encoder outputs (Jukebox's random restarts, Dhariwal et al. 2020), so
the codebook stays in use; usage and perplexity are reported at every step.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.errors import SelfsupError


class VectorQuantizerEMA(nn.Module):
    """Nearest-code quantisation with an exponential-moving-average codebook.

    For a batch of latent vectors z_i (M, D) with nearest codes k_i, per code j:

        n_j = #{i : k_i = j},     s_j = Σ_{i : k_i = j} z_i              (summed over processes)
        N_j ← γ N_j + (1 − γ) n_j,     m_j ← γ m_j + (1 − γ) s_j          γ = ``decay``
        Ñ_j = (N_j + ε) / (Σ_l N_l + K ε) · Σ_l N_l                     Laplace smoothing
        e_j = m_j / Ñ_j

    The commitment loss β‖z − sg(e_k)‖² (mean over the M·D values) is the only gradient term;
    the output z + sg(e_k − z) passes the decoder's gradient straight to the encoder.

    Dead codes: ``idle`` counts the steps since each code was last picked; a code idle for
    ``dead_after`` steps is re-seeded with a random latent vector of the current batch
    (e_j = m_j = z, N_j = 1). ``idle`` starts at ``dead_after``, so the first training step
    seeds every code that the random initial codebook did not attract from the data.

    Buffers (checkpointed, restored on resume): ``codebook`` (K, D), ``ema_count`` (K,),
    ``ema_sum`` (K, D), ``idle`` (K,). Under DDP the counts and sums are summed over
    processes and re-seeding vectors come from rank 0, so every process holds the same
    codebook.
    """

    codebook: Tensor
    ema_count: Tensor
    ema_sum: Tensor
    idle: Tensor

    def __init__(
        self,
        num_codes: int = 512,
        code_dim: int = 64,
        *,
        commitment: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_after: int = 20,
    ) -> None:
        super().__init__()
        if num_codes < 2 or code_dim < 1:
            raise SelfsupError(
                f"need num_codes >= 2 and code_dim >= 1, got {num_codes} and {code_dim}"
            )
        if not 0.0 <= decay < 1.0:
            raise SelfsupError(f"codebook decay must lie in [0, 1) (0.99 works well), got {decay}")
        if commitment < 0:
            raise SelfsupError(
                f"commitment cost must be 0 or more (the paper's 0.25), got {commitment}"
            )
        if dead_after < 1:
            raise SelfsupError(f"dead_after must be a positive number of steps, got {dead_after}")
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.commitment = commitment
        self.decay = decay
        self.eps = eps
        self.dead_after = dead_after
        bound = 1.0 / math.sqrt(code_dim)
        codebook = torch.empty(num_codes, code_dim).uniform_(-bound, bound)
        self.register_buffer("codebook", codebook)
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", codebook.clone())
        self.register_buffer("idle", torch.full((num_codes,), dead_after, dtype=torch.long))

    def nearest(self, z: Tensor) -> Tensor:
        """(M, D) -> (M,) int64: argmin_j ‖z_i − e_j‖², computed in float32 as
        ‖z‖² − 2 z·e + ‖e‖² (the ‖z‖² term does not change the argmin and is dropped)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            e = self.codebook.float()
            scores = e.pow(2).sum(dim=1) - 2.0 * z.float() @ e.t()  # (M, K)
        return scores.argmin(dim=1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """z (M, D) -> (z_q (M, D) straight-through, codes (M,), commitment loss, stats).

        In training mode the codebook takes one EMA step (and re-seeds its dead codes)
        after the assignment; ``stats`` holds ``usage`` (share of the K codes picked in this
        batch, all processes) and ``perplexity`` exp(−Σ p_j log p_j) of the batch's codes."""
        codes = self.nearest(z)  # (M,)
        e = self.codebook[codes].to(z.dtype)  # (M, D), the codebook before this step's update
        loss = self.commitment * F.mse_loss(z.float(), e.detach().float())
        counts = self._counts(codes)  # (K,)
        if self.training:
            self.ema_step(z.detach(), codes, counts)
        p = counts / counts.sum().clamp(min=1.0)
        stats = {
            "usage": (counts > 0).float().mean(),
            "perplexity": torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()),
        }
        return z + (e - z).detach(), codes, loss, stats

    def _counts(self, codes: Tensor) -> Tensor:
        """(M,) -> (K,) float32 number of vectors per code, summed over processes."""
        counts = torch.bincount(codes, minlength=self.num_codes).float()
        if distributed.is_distributed():
            dist.all_reduce(counts)
        return counts

    @torch.no_grad()
    def ema_step(self, z: Tensor, codes: Tensor, counts: Tensor | None = None) -> None:
        """One EMA update of the codebook from latents z (M, D) assigned to codes (M,),
        then the dead-code restarts (see the class docstring)."""
        z = z.float()
        if counts is None:
            counts = self._counts(codes)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, z)  # (K, D)
        if distributed.is_distributed():
            dist.all_reduce(sums)
        self.ema_count.lerp_(counts, 1.0 - self.decay)  # γ N + (1 − γ) n
        self.ema_sum.lerp_(sums, 1.0 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.idle.copy_(torch.where(counts > 0, torch.zeros_like(self.idle), self.idle + 1))
        self._restart(z, self.idle >= self.dead_after)

    def _restart(self, z: Tensor, dead: Tensor) -> None:
        """Re-seed the ``dead`` codes (K,) bool with random rows of z (M, D) (rank 0's)."""
        n = int(dead.sum())
        if n == 0:
            return
        picks = z[torch.randint(z.shape[0], (n,), device=z.device)]  # (n, D)
        if distributed.is_distributed():
            dist.broadcast(picks, src=0)
        self.codebook[dead] = picks
        self.ema_sum[dead] = picks
        self.ema_count[dead] = 1.0
        self.idle[dead] = 0


class _Residual(nn.Module):
    """x + conv1×1(relu(conv3×3(relu(x)))): the VQ-VAE paper's residual block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _encoder(channels: int, patch: int, width: int, code_dim: int) -> nn.Sequential:
    """(B, C, H, W) -> (B, code_dim, H/patch, W/patch). A power-of-2 patch: log2(patch)
    4×4 stride-2 convolutions (the paper's encoder); any other patch: one patch×patch
    convolution of stride patch (a ViT-like stem) and a 3×3 convolution."""
    layers: list[nn.Module]
    if patch & (patch - 1) == 0:
        steps = patch.bit_length() - 1
        layers = [nn.Conv2d(channels, width, 3, padding=1)] if steps == 0 else []
        for i in range(steps):
            layers += [nn.Conv2d(channels if i == 0 else width, width, 4, 2, 1), nn.ReLU()]
        if steps:
            layers.pop()  # the residual blocks start with their own ReLU
    else:
        layers = [nn.Conv2d(channels, width, patch, stride=patch), nn.ReLU()]
        layers.append(nn.Conv2d(width, width, 3, padding=1))
    layers += [_Residual(width), _Residual(width), nn.ReLU(), nn.Conv2d(width, code_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(channels: int, patch: int, width: int, code_dim: int) -> nn.Sequential:
    """(B, code_dim, h, w) -> (B, C, h·patch, w·patch), the mirror of ``_encoder``."""
    layers: list[nn.Module] = [
        nn.Conv2d(code_dim, width, 3, padding=1),
        _Residual(width),
        _Residual(width),
        nn.ReLU(),
    ]
    if patch & (patch - 1) == 0:
        steps = patch.bit_length() - 1
        for i in range(steps):
            last = i == steps - 1
            layers.append(nn.ConvTranspose2d(width, channels if last else width, 4, 2, 1))
            if not last:
                layers.append(nn.ReLU())
        if steps == 0:
            layers.append(nn.Conv2d(width, channels, 3, padding=1))
    else:
        layers += [nn.ConvTranspose2d(width, channels, patch, stride=patch)]
    return nn.Sequential(*layers)


class VQTokenizer(nn.Module):
    """A VQ-VAE over prepared (normalised) images: one discrete code per patch×patch patch.

    Args:
        channels: image channels C.
        patch_size: the ViT's patch size p; the code grid is (H/p, W/p), row-major like the
            ViT's patches. Powers of 2 use the paper's stride-2 convolutions; other sizes a
            p×p stride-p stem.
        num_codes: codebook size K (BEiT's DALL-E tokenizer has 8192; 512 suits 28 px data).
        code_dim: width of a code vector D (64 is plenty; the paper uses 64 too).
        width: channels of the conv encoder and decoder (the paper uses 256 on ImageNet).
        commitment: β of the commitment loss (the paper's 0.25; 0.1-2 all train).
        decay: EMA decay γ of the codebook (0.99; lower it to 0.9 for runs of a few hundred
            steps so the codebook keeps up with the encoder).
        dead_after: steps without a pick before a code is re-seeded from the data.

    ``forward(x)`` trains it (loss = pixel MSE + commitment); ``encode(x)`` gives the codes,
    ``decode(codes, grid)`` the images they stand for.
    """

    def __init__(
        self,
        channels: int,
        patch_size: int,
        num_codes: int = 512,
        code_dim: int = 64,
        width: int = 64,
        *,
        commitment: float = 0.25,
        decay: float = 0.99,
        dead_after: int = 20,
    ) -> None:
        super().__init__()
        if channels < 1 or patch_size < 1 or width < 1:
            raise SelfsupError(
                f"need channels, patch_size and width >= 1, got {channels}, {patch_size}, {width}"
            )
        self.channels = channels
        self.patch_size = patch_size
        self.encoder = _encoder(channels, patch_size, width, code_dim)
        self.quantizer = VectorQuantizerEMA(
            num_codes, code_dim, commitment=commitment, decay=decay, dead_after=dead_after
        )
        self.decoder = _decoder(channels, patch_size, width, code_dim)

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def _latents(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D, H/p, W/p)."""
        p = self.patch_size
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2] % p or x.shape[3] % p:
            raise SelfsupError(
                f"the tokenizer takes (B, {self.channels}, H, W) images with H and W multiples "
                f"of {p}, got {tuple(x.shape)}"
            )
        return self.encoder(x)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Prepared images (B, C, H, W) -> codes (B, N) int64, N = (H/p)·(W/p), row-major."""
        z = self._latents(x)  # (B, D, h, w)
        return self.quantizer.nearest(z.flatten(2).transpose(1, 2).flatten(0, 1)).view(
            z.shape[0], -1
        )

    def decode(self, codes: Tensor, grid: int | tuple[int, int]) -> Tensor:
        """Codes (B, N) with N = grid_h·grid_w -> images (B, C, grid_h·p, grid_w·p), in the
        normalised space the tokenizer was trained on."""
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        if codes.ndim != 2 or codes.shape[1] != gh * gw:
            raise SelfsupError(f"codes of shape {tuple(codes.shape)} do not fill a {gh}×{gw} grid")
        e = self.quantizer.codebook[codes]  # (B, N, D)
        z = e.transpose(1, 2).reshape(codes.shape[0], -1, gh, gw)  # (B, D, gh, gw)
        return self.decoder(z)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Prepared images x (B, C, H, W) -> {"loss", "recon" (B, C, H, W), "codes" (B, N),
        "recon_loss", "commitment", "usage", "perplexity"}; in training mode the codebook
        takes its EMA step."""
        z = self._latents(x)  # (B, D, h, w)
        B, D, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # (B·h·w, D), row-major per image
        zq, codes, commitment, stats = self.quantizer(flat)
        zq = zq.view(B, h, w, D).permute(0, 3, 1, 2)  # (B, D, h, w)
        recon = self.decoder(zq)  # (B, C, H, W)
        recon_loss = F.mse_loss(recon.float(), x.float())
        return {
            "loss": recon_loss + commitment,
            "recon": recon,
            "codes": codes.view(B, h * w),
            "recon_loss": recon_loss.detach(),
            "commitment": commitment.detach(),
            **stats,
        }
