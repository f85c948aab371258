"""wav2vec 2.0: mask spans of latent speech frames and pick, among distractors, the quantized
version of each masked frame from its context.

Baevski, Zhou, Mohamed, Auli. "wav2vec 2.0: A Framework for Self-Supervised Learning of
Speech Representations." NeurIPS 2020. arXiv:2006.11477.

One step, for waveforms (B, T) cropped to the batch's shortest utterance (fairseq's
pretraining batches; a random window of each longer one). The engine's sampler groups
recordings of similar length into a batch (``AudioDataset.sample_lengths``), as fairseq does,
so the crop keeps most of the audio:

    z = feature encoder(wave)                 (B, N, C) latent frames, gradient scaled by 0.1
    mask = span_mask(p = 0.065, 10 frames)    (B, N) about half the frames hidden
    c = Transformer(mask embedding at hidden frames of LayerNorm+Linear(z))    (B, N, D)
    q = Linear(GumbelQuantizer(LayerNorm(z))) at the hidden frames (G = 2 codebooks of V)
    loss = contrastive(Linear(c), q, K = 100 distractors of the same utterance, κ = 0.1)
         + α · diversity (α = 0.1) + 10 · mean(z²)    (fairseq's base-config weights)

The Gumbel temperature falls geometrically from 2 to 0.5 over the first 70% of training
(fairseq: ×0.999995 per update from 2, floored at 0.5, which reaches it at 69% of 400k
updates). The quantized targets are returned as the monitored ``embedding``: a codebook that
collapses drives their effective rank down and raises the collapse warning; the code
perplexity, temperature and masked share are logged each step.

Under DDP the diversity term uses the code probabilities averaged over every process's
frames (fairseq averages them per GPU), so 2 processes train as 1 with the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.distributed import mean_with_grad
from selfsup.encoders.quantizer import GumbelQuantizer
from selfsup.encoders.wav2vec import pool_frames
from selfsup.errors import SelfsupError
from selfsup.losses.wav2vec2 import (
    Wav2Vec2ContrastiveLoss,
    diversity_loss,
    sample_distractors,
)
from selfsup.views.masking import check_span, span_mask, span_or_paper


@dataclass
class Wav2Vec2Config:
    """wav2vec 2.0's hyperparameters: the paper's BASE values (Table 9 / fairseq's config)."""

    paper_span: ClassVar[tuple[float, int]] = (0.065, 10)
    """(start chance, frames) of the paper's spans, for its 20 ms frames: 200 ms spans, about
    49% of the frames hidden."""
    mask_prob: float | None = None
    """Chance that a frame starts a masked span (fairseq's ``mask_prob`` 0.65 / span length);
    None: fitted with ``mask_length`` to the encoder's frame rate (``paper_span`` at 20 ms)."""
    mask_length: int | None = None
    """Frames per masked span; None: the paper's 200 ms in the encoder's frames."""
    num_negatives: int = 100
    """Distractors K per masked frame, from the other masked frames of the same utterance."""
    kappa: float = 0.1
    """Temperature κ of the cosine logits."""
    codebooks: int = 2
    """G codebooks of the product quantizer."""
    codebook_entries: int = 320
    """V entries per codebook (320² ≈ 100k possible codes in the paper)."""
    codevector_dim: int = 256
    """Width F of the quantized targets and of the projected context vectors."""
    diversity_weight: float = 0.1
    """α of the codebook diversity loss; raise it (0.2-0.5) if the code perplexity collapses."""
    feature_penalty: float = 10.0
    """Weight of the L2 penalty on the feature encoder's output."""
    feature_grad_scale: float = 0.1
    """Gradient into the conv feature encoder is scaled by this (the paper's stabiliser)."""
    temperature_start: float = 2.0
    temperature_end: float = 0.5
    temperature_anneal: float = 0.7
    """Share of training over which the Gumbel temperature falls from start to end."""

    def validate(self) -> None:
        check_span(self.mask_prob, self.mask_length, "mask_prob", "mask_length")
        if self.num_negatives < 1 or not self.kappa > 0:
            raise SelfsupError("num_negatives must be at least 1 and kappa positive")
        if not 0 < self.temperature_end <= self.temperature_start:
            raise SelfsupError("the Gumbel temperature must fall: 0 < end <= start")
        if self.codevector_dim % self.codebooks:
            raise SelfsupError(
                f"codevector_dim {self.codevector_dim} must be divisible by codebooks {self.codebooks}"
            )


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """x in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    return x * scale + x.detach() * (1.0 - scale)


def crop_to_shortest(wave: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, T) waveforms with NaN tails -> (B, T') windows of the shortest utterance's length
    T', each at a uniformly random offset inside its own utterance: fairseq's pretraining
    batches (no padding, so every row is masked at the paper's rate)."""
    lengths = (~wave.isnan()).sum(dim=1)  # (B,)
    shortest = max(1, int(lengths.min()))
    room = (lengths - shortest + 1).float()
    starts = (torch.rand(wave.shape[0], device=wave.device, generator=generator) * room).long()
    index = starts[:, None] + torch.arange(shortest, device=wave.device)  # (B, T')
    return wave.gather(1, index)


def gumbel_temperature(cfg: Wav2Vec2Config, progress: float) -> float:
    """Geometric fall from ``temperature_start`` to ``temperature_end`` over the first
    ``temperature_anneal`` of training, then constant."""
    share = min(1.0, max(0.0, progress) / max(cfg.temperature_anneal, 1e-9))
    return cfg.temperature_start * (cfg.temperature_end / cfg.temperature_start) ** share


class Wav2Vec2(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        del info
        for needed in ("extract", "embed", "contextualise", "mask_embedding"):
            if not hasattr(encoder, needed):
                raise SelfsupError("wav2vec2 needs a wav2vec 2.0 encoder (--encoder wav2vec2-tiny)")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.quantizer = GumbelQuantizer(
            encoder.conv_dim, cfg.codebooks, cfg.codebook_entries, cfg.codevector_dim
        )
        self.project_q = nn.Linear(cfg.codevector_dim, cfg.codevector_dim)
        self.final_proj = nn.Linear(encoder.embed_dim, cfg.codevector_dim)
        self.loss = Wav2Vec2ContrastiveLoss(cfg.kappa)
        # a buffer, so a resumed run continues at the checkpoint's temperature
        self.register_buffer("tau", torch.tensor(cfg.temperature_start))

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        wave = crop_to_shortest(batch["audio"])  # (B, T') no padding left
        z, padding = self.encoder.extract(wave)  # (B, N, C), (B, N)
        z = scale_grad(z, self.cfg.feature_grad_scale)
        penalty = z.float().pow(2).mean()  # after the scaling, as fairseq
        latent = self.encoder.feature_norm(z)  # (B, N, C): the quantizer's input
        x = self.encoder.project(latent)  # (B, N, D)
        prob, length = span_or_paper(self.cfg.mask_prob, self.cfg.mask_length, self.cfg.paper_span)
        mask = span_mask(padding, start_prob=prob, span=length)
        B, M = mask.shape[0], int(mask[0].sum())
        if M < 2:
            raise SelfsupError(
                f"only {M} frame masked per utterance: wav2vec2 needs longer audio "
                "(raise data.max_seconds)"
            )
        x = torch.where(mask.unsqueeze(-1), self.encoder.mask_embedding.to(x.dtype), x)
        context, _ = self.encoder.contextualise(x, padding)  # (B, N, D)
        c = self.final_proj(context[mask]).view(B, M, -1)  # (B, M, F), rows in order
        q, mean_probs, codes = self.quantizer(latent[mask], float(self.tau))  # (B·M, F)
        q = self.project_q(q).view(B, M, -1)  # (B, M, F)
        distractors = sample_distractors(B, M, self.cfg.num_negatives, device=q.device)
        contrastive = self.loss(c, q, distractors)
        # the codes' average over the whole batch (every process holds B·M frames), so 2
        # processes compute the diversity of 1 with the whole batch
        diversity = diversity_loss(mean_with_grad(mean_probs))
        loss = (
            contrastive + self.cfg.diversity_weight * diversity + self.cfg.feature_penalty * penalty
        )
        return {
            "loss": loss,
            "contrastive": contrastive.detach(),
            "diversity": diversity.detach(),
            "code_perplexity": self.quantizer.code_perplexity(codes),
            "gumbel_temperature": self.tau.clone(),
            "masked_share": (mask.sum() / (~padding).sum()).detach(),
            "features": pool_frames(context, padding).detach(),  # (B, D)
            "embedding": q.flatten(0, 1).detach(),  # (B·M, F): collapses with the codebook
        }

    def on_step_end(self, progress: float) -> None:
        self.tau.fill_(gumbel_temperature(self.cfg, progress))
