"""BEiT: hide blocks of about 40% of the patches behind a mask token and predict the
discrete visual token of each hidden patch, as BERT predicts masked words.

Bao, Dong, Piao, Wei. "BEiT: BERT Pre-Training of Image Transformers." ICLR 2022.
arXiv:2106.08254.

The paper reads its visual tokens from DALL-E's pretrained dVAE. None can be downloaded
here, so the run trains its own tokenizer first (a VQ-VAE, ``selfsup.encoders.vq``) on the
same data, then freezes it:

- phase 1, progress < ``tokenizer_fraction``: each step trains only the tokenizer (pixel
  MSE + commitment, EMA codebook); the ViT and the head get no gradient;
- phase 2: a frozen snapshot of the tokenizer, taken at the switch, gives the codes
  y (B, N) of the unmasked view; the ViT sees the same view with block-masked patches
  swapped for its mask token, a linear head maps each token to K logits, and

      L = −(1/|M|) Σ_{(b,n) ∈ M} log softmax(W h_bn)[y_bn]        M = the hidden patches.

The phase lives in a buffer (``phase``, 1 or 2) and the snapshot in ``frozen_tokenizer``, so
both are checkpointed and a resumed run continues exactly; ``on_step_end`` switches once
progress reaches the fraction, also when progress jumps past it, and never switches back.

The learning-rate schedule is the run's: the tokenizer gets its warm-up, and the ViT starts
at the schedule's rate at ``tokenizer_fraction``. Under DDP, which needs every trainable
parameter in each step's graph, the idle part (the ViT and head in phase 1, the trained
tokenizer in phase 2) is added to the loss times 0.0: its gradient is an exact zero rather
than None, so AdamW counts those steps for the idle ViT (the frozen snapshot is never
touched, so the targets are unaffected).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from selfsup import distributed
from selfsup.contracts import IGNORE_INDEX
from selfsup.data.info import DataInfo
from selfsup.encoders.vq import VQTokenizer
from selfsup.engine.teacher import make_teacher
from selfsup.errors import SelfsupError
from selfsup.losses.mlm import MaskedTokenLoss
from selfsup.views import ImageAugment, ImageViews
from selfsup.views.masking import block_mask

TOKENIZER_PHASE, MIM_PHASE = 1, 2


@dataclass
class BEiTConfig:
    """BEiT's hyperparameters (the paper's ViT-B settings) and those of its own tokenizer."""

    mask_ratio: float = 0.4
    """Share of patches hidden by block-wise masking: the paper's 75 of 196 (about 40%);
    it finds 40% better than 10-60% of random patches."""
    min_block: int | None = None
    """Smallest block, in patches; None = the paper's 16 of 196 scaled to the grid (4 on
    7×7). Lower it to 2 for grids of 4×4 or less."""
    tokenizer_fraction: float = 0.2
    """Share of training spent on the tokenizer alone, before BEiT's masked prediction.
    Raise it (0.3-0.4) if the tokenizer's recon_loss is still falling at the switch; the
    tokenizer trains fast (a few thousand steps suffice on 28 px data)."""
    num_codes: int = 512
    """Visual vocabulary size K. The paper's DALL-E tokenizer has 8192 codes for ImageNet;
    256-1024 suit 28-32 px data; watch codebook_usage (share of codes used in a batch)."""
    code_dim: int = 64
    """Width of a code vector."""
    tokenizer_width: int = 64
    """Channels of the tokenizer's conv encoder and decoder."""
    commitment: float = 0.25
    """VQ-VAE's commitment cost β (the paper's 0.25)."""
    codebook_decay: float = 0.99
    """EMA decay of the codebook (VQ-VAE's 0.99); 0.9-0.95 if the tokenizer phase is only a
    few hundred steps."""
    dead_after: int = 20
    """A code no patch picked for this many tokenizer steps is re-seeded from the data."""
    augment: ImageAugment = field(
        default_factory=lambda: ImageAugment(
            paper_crop_scale=(0.08, 1.0),
            jitter_p=1.0,
            brightness=0.4,
            contrast=0.4,
            saturation=0.4,
            hue=0.0,
            grayscale_p=0.0,
            blur_p=0.0,
        )
    )
    """The paper's: random resized crop (scale 0.08-1), flip, colour jitter 0.4. The same
    view goes to the tokenizer and the ViT. For ≤ 32 px images a crop scale of 0.2-1 keeps
    more of the object."""

    def validate(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise SelfsupError(
                f"mask_ratio must lie in (0, 1) (the paper's 0.4), got {self.mask_ratio}"
            )
        if not 0 < self.tokenizer_fraction < 1:
            raise SelfsupError(
                f"tokenizer_fraction must lie in (0, 1) (0.2 works), got {self.tokenizer_fraction}"
            )
        if self.num_codes < 2:
            raise SelfsupError(f"num_codes must be at least 2 (512 works), got {self.num_codes}")
        if self.min_block is not None and self.min_block < 1:
            raise SelfsupError(f"min_block must be at least 1 patch, got {self.min_block}")


class BEiT(nn.Module):
    phase: Tensor

    def __init__(self, cfg: BEiTConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        if not hasattr(encoder, "patch_size") or not hasattr(encoder, "forward_tokens"):
            raise SelfsupError("beit needs a ViT encoder (e.g. --encoder vit-tiny)")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.patch = int(encoder.patch_size)  # type: ignore[arg-type]
        self.grid = info.image_size // self.patch
        if self.grid < 2:
            raise SelfsupError(
                f"block masking needs a patch grid of at least 2×2, and {info.image_size} px "
                f"images with patch {self.patch} give {self.grid}×{self.grid}: use a smaller patch_size"
            )
        self.num_masked = max(1, round(cfg.mask_ratio * self.grid * self.grid))
        self.channels = info.channels
        self.tokenizer = VQTokenizer(
            info.channels,
            self.patch,
            cfg.num_codes,
            cfg.code_dim,
            cfg.tokenizer_width,
            commitment=cfg.commitment,
            decay=cfg.codebook_decay,
            dead_after=cfg.dead_after,
        )
        self.frozen_tokenizer = make_teacher(self.tokenizer)  # filled in at the switch
        self.head = nn.Linear(int(encoder.embed_dim), cfg.num_codes)  # type: ignore[arg-type]
        nn.init.trunc_normal_(self.head.weight, std=0.02, a=-0.04, b=0.04)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("phase", torch.tensor(TOKENIZER_PHASE))
        self.views = ImageViews(info.channels, info.image_size, [cfg.augment], 1, False)
        self.loss = MaskedTokenLoss()

    def target_tokenizer(self) -> VQTokenizer:
        """The tokenizer whose codes BEiT predicts: the frozen snapshot once it exists (phase
        2), else the one in training."""
        if int(self.phase) == MIM_PHASE:
            return self.frozen_tokenizer.eval()  # type: ignore[return-value]
        return self.tokenizer

    def sample_mask(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        """BEiT's block-wise mask (B, N), True = hidden, about ``num_masked`` per image."""
        mask = block_mask(
            batch,
            self.grid,
            self.grid,
            self.num_masked,
            min_block=self.cfg.min_block,
            generator=generator,
        )
        return mask.to(device)

    def logits(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Code logits (B, N, K) of prepared images x (B, C, H, W) whose ``mask`` (B, N)
        patches are swapped for the mask token, and the encoder's tokens (B, 1 + N, D)."""
        tokens = self.encoder.forward_tokens(x, mask, keep_masked=True)  # (B, 1 + N, D)
        return self.head(tokens[:, 1:]), tokens

    @torch.no_grad()
    def reconstruct(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) decoded by the tokenizer from the true codes of the visible
        patches and the predicted (argmax) codes of the hidden ones, and the tokens."""
        tokenizer = self.target_tokenizer()
        codes = tokenizer.encode(x)  # (B, N)
        logits, tokens = self.logits(x, mask)
        codes = torch.where(mask, logits.argmax(dim=-1), codes)
        return tokenizer.decode(codes, self.grid), tokens

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.views(batch["image"])  # (B, C, S, S)
        mask = self.sample_mask(x.shape[0], x.device)  # (B, N), True = hidden
        if int(self.phase) == TOKENIZER_PHASE:
            return self._tokenizer_step(x, mask)
        return self._mim_step(x, mask)

    def _tokenizer_step(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        out = self.tokenizer(x)
        loss = out["loss"]
        if distributed.is_distributed():  # DDP wants every parameter in the graph; an exact 0
            loss = loss + 0.0 * _total(self.encoder, self.head)
        with torch.no_grad():  # the ViT is idle; its masked pass feeds the collapse monitor
            cls = self.encoder.forward_tokens(x, mask, keep_masked=True)[:, 0]
        return {
            "loss": loss,
            "features": cls.detach(),
            "phase": self.phase.float(),
            "codebook_usage": out["usage"],
            "perplexity": out["perplexity"],
            "recon_loss": out["recon_loss"],
        }

    def _mim_step(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            codes = self.target_tokenizer().encode(x)  # (B, N) visual tokens of the whole view
        logits, tokens = self.logits(x, mask)  # (B, N, K)
        targets = codes.masked_fill(~mask, IGNORE_INDEX)  # predict the hidden patches only
        loss = self.loss(logits, targets)
        if distributed.is_distributed():
            loss = loss + 0.0 * _total(self.tokenizer)
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == codes) & mask
            accuracy = correct.sum() / mask.sum().clamp(min=1)
            counts = torch.bincount(codes.flatten(), minlength=self.cfg.num_codes).float()
            p = counts / counts.sum()
            perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
        return {
            "loss": loss,
            "features": tokens[:, 0].detach(),  # CLS of the masked pass
            "phase": self.phase.float(),
            "mim_accuracy": accuracy,
            "codebook_usage": (counts > 0).float().mean(),
            "perplexity": perplexity,
        }

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        """Freeze the tokenizer once ``progress`` reaches ``tokenizer_fraction``: snapshot
        its weights and codebook into ``frozen_tokenizer`` and enter phase 2 for good."""
        if int(self.phase) == TOKENIZER_PHASE and progress >= self.cfg.tokenizer_fraction:
            self.frozen_tokenizer.load_state_dict(self.tokenizer.state_dict())
            self.frozen_tokenizer.eval()
            self.phase.fill_(MIM_PHASE)


def _total(*modules: nn.Module) -> Tensor:
    """Σ of every trainable parameter of ``modules``: times 0.0 it puts them in the graph
    with an exact-zero gradient."""
    return sum(p.sum() for m in modules for p in m.parameters() if p.requires_grad)  # type: ignore[return-value]
