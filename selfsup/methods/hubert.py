"""HuBERT: predict the hidden unit (a k-means cluster) of every masked speech frame.

Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov, Mohamed. "HuBERT: Self-Supervised Speech
Representation Learning by Masked Prediction of Hidden Units." TASLP 2021. arXiv:2106.07447.

One step, for waveforms (B, T) cropped to the batch's shortest utterance (as wav2vec2):

    z = feature encoder(wave)                 (B, N, C) latent frames, gradient scaled by 0.1
    u = k-means unit of each frame's MFCC+Δ+ΔΔ (39 dims over the same 25 ms window)   (B, N)
    mask = span_mask(p = 0.08, 10 frames)     (B, N) about half the frames hidden
    c = Transformer(mask embedding at hidden frames of LayerNorm+Linear(z))    (B, N, D)
    loss = CE over units of cos(Linear(c_t), e_k) / 0.1 at the hidden frames t
         + 10 · mean(z²)                      (fairseq's base-config weights)

The paper's first iteration: units from MFCCs, 100 clusters, masked frames only (α = 1). The
k-means is fitted online during the first ``kmeans_fraction`` of training (``MiniBatchKMeans``
in ``losses/hubert``), then frozen; fairseq fits it offline before pretraining. A second
iteration (clustering the model's own layer-6 features) is not implemented yet.

The MFCC frame t starts at sample t · hop, as the feature encoder's frame t does, so units and
latent frames line up; the last frame of the longer of the two is dropped (fairseq trims the
same way). The units' share of use is logged as ``unit_perplexity`` and the masked frames'
accuracy as ``unit_accuracy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.encoders.wav2vec import pool_frames
from selfsup.errors import SelfsupError
from selfsup.losses.hubert import MiniBatchKMeans, hubert_logits
from selfsup.methods.wav2vec2 import crop_to_shortest, scale_grad
from selfsup.views.masking import check_span, span_mask, span_or_paper
from selfsup.views.spectrogram import mfcc_deltas

N_MFCC = 13
"""MFCCs per frame before the deltas (the paper's 13, so 39 clustering features)."""


@dataclass
class HuBERTConfig:
    """HuBERT's hyperparameters: the paper's BASE values (fairseq's hubert_base_librispeech)."""

    clusters: int = 100
    """Hidden units K of the first iteration's k-means on MFCCs."""
    kmeans_fraction: float = 0.1
    """Share of training during which the k-means centres still move; frozen after it."""
    paper_span: ClassVar[tuple[float, int]] = (0.08, 10)
    """(start chance, frames) of fairseq's base config for 20 ms frames: 200 ms spans."""
    mask_prob: float | None = None
    """Chance that a frame starts a masked span (fairseq's ``mask_prob`` 0.8 / span length);
    None: fitted with ``mask_length`` to the encoder's frame rate (``paper_span`` at 20 ms)."""
    mask_length: int | None = None
    """Frames per masked span; None: the paper's 200 ms in the encoder's frames."""
    temperature: float = 0.1
    """τ of the cosine logits (fairseq's ``logit_temp``)."""
    final_dim: int = 256
    """Width of the projected context vectors and of the unit embeddings."""
    feature_penalty: float = 10.0
    feature_grad_scale: float = 0.1

    def validate(self) -> None:
        if self.clusters < 2:
            raise SelfsupError("clusters must be at least 2")
        if not 0 <= self.kmeans_fraction <= 1:
            raise SelfsupError("kmeans_fraction must lie in [0, 1]")
        check_span(self.mask_prob, self.mask_length, "mask_prob", "mask_length")
        if not self.temperature > 0 or self.final_dim < 1:
            raise SelfsupError("temperature must be positive and final_dim at least 1")


class HuBERT(nn.Module):
    def __init__(self, cfg: HuBERTConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        for needed in ("extract", "contextualise", "mask_embedding", "hop"):
            if not hasattr(encoder, needed):
                raise SelfsupError("hubert needs a wav2vec 2.0 encoder (--encoder wav2vec2-tiny)")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.sample_rate = info.sample_rate or encoder.sample_rate
        self.kmeans = MiniBatchKMeans(cfg.clusters, 3 * N_MFCC)  # MFCC + Δ + ΔΔ
        self.register_buffer("fitting", torch.tensor(cfg.kmeans_fraction > 0))
        self.final_proj = nn.Linear(encoder.embed_dim, cfg.final_dim)
        self.unit_embeddings = nn.Parameter(torch.empty(cfg.clusters, cfg.final_dim).uniform_())

    @torch.no_grad()
    def units(self, wave: Tensor, frames: int) -> Tensor:
        """(B, T) cropped waveforms -> (B, N') k-means units of their MFCC frames, N' ≤ frames;
        moves the centres first while the method is still fitting them."""
        feats = mfcc_deltas(wave, self.sample_rate, self.encoder.hop, N_MFCC)[
            :, :frames
        ]  # (B, N', 39)
        flat = feats.flatten(0, 1)
        if bool(self.fitting) or not bool(self.kmeans.seeded):
            self.kmeans.update(flat)
        return self.kmeans.assign(flat).view(feats.shape[:2])

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        wave = crop_to_shortest(batch["audio"])  # (B, T') no padding left
        z, padding = self.encoder.extract(wave)  # (B, N, C)
        units = self.units(wave, z.shape[1])  # (B, N')
        N = units.shape[1]
        z, padding = z[:, :N], padding[:, :N]
        z = scale_grad(z, self.cfg.feature_grad_scale)
        penalty = z.float().pow(2).mean()
        x = self.encoder.embed(z)  # (B, N, D)
        prob, length = span_or_paper(self.cfg.mask_prob, self.cfg.mask_length, self.cfg.paper_span)
        mask = span_mask(padding, start_prob=prob, span=length)
        mask &= ~padding
        if not bool(mask.any()):
            raise SelfsupError(
                "no frame was masked: hubert needs longer audio (raise data.max_seconds)"
            )
        x = torch.where(mask.unsqueeze(-1), self.encoder.mask_embedding.to(x.dtype), x)
        context, _ = self.encoder.contextualise(x, padding)  # (B, N, D)
        projected = self.final_proj(context[mask])  # (M, F)
        logits = hubert_logits(projected, self.unit_embeddings, self.cfg.temperature)  # (M, K)
        targets = units[mask]  # (M,)
        prediction = nn.functional.cross_entropy(logits, targets)
        loss = prediction + self.cfg.feature_penalty * penalty
        used = torch.bincount(units.flatten(), minlength=self.cfg.clusters).float()
        share = used / used.sum()
        perplexity = torch.exp(-(share * share.clamp(min=1e-12).log()).sum())
        return {
            "loss": loss,
            "prediction": prediction.detach(),
            "unit_accuracy": (logits.argmax(dim=-1) == targets).float().mean().detach(),
            "unit_perplexity": perplexity,
            "masked_share": (mask.sum() / (~padding).sum()).detach(),
            "features": pool_frames(context, padding).detach(),  # (B, D)
            "embedding": projected.detach(),  # (M, F)
        }

    def on_step_end(self, progress: float) -> None:
        if bool(self.fitting) and progress >= self.cfg.kmeans_fraction:
            self.fitting.fill_(False)
