"""data2vec: a student sees a masked input and regresses the teacher's contextual
representation of the whole input (the average of its top-K block outputs), for images,
text and speech alike.

Baevski et al. "data2vec: A General Framework for Self-supervised Learning in Speech,
Vision and Language." ICML 2022. arXiv:2202.03555.

Per modality, as in the paper: images get block-wise masking of 60% of the patches (BEiT's
masking) under random-resized-crop + flip; text gets BERT's 15% masking (80/10/10); speech
(data2vec-audio) gets wav2vec 2.0's spans (p = 0.065, 10 frames) over the latent frames of
waveforms cropped to the batch's shortest, instance-normalised targets of the top 8 of 12
blocks and an MSE loss scaled by 1/sqrt(D). The
teacher is an EMA of the student whose momentum rises linearly from ``momentum`` to
``momentum_final`` over the first ``momentum_anneal`` of training, then stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.data.tokenizer import special_ids
from selfsup.encoders.wav2vec import pool_frames
from selfsup.engine.teacher import ema_update, linear_warmup, make_teacher
from selfsup.errors import SelfsupError
from selfsup.losses.data2vec import Data2VecLoss, data2vec_targets
from selfsup.methods.wav2vec2 import crop_to_shortest
from selfsup.views import ImageAugment, ImageViews
from selfsup.views.masking import bert_mask, block_mask, check_span, span_mask, span_or_paper


@dataclass
class Data2VecConfig:
    """data2vec's hyperparameters; None picks the paper's value for the data's modality."""

    top_k: int | None = None
    """Teacher blocks averaged into the target; None = the reference's share of the depth:
    6 of 12 for images, 10 of 12 for text, 8 of 12 for speech (so 2, 3 and 3 of a 4-block
    encoder)."""
    target_norm: Literal["instance", "layer", "none"] | None = None
    """Normalisation of each teacher block output before averaging; None = the reference
    code's choice: parameter-free layer norm for text, none for images (which normalise the
    average instead, ``final_norm``), instance norm (over the frames, per channel) for speech;
    ``instance`` is also a sound choice when targets collapse to a constant."""
    final_norm: Literal["instance", "layer", "none"] | None = None
    """Normalisation of the averaged target; None = layer norm for images, none for text and
    speech."""
    beta: float | None = None
    """Smooth-L1 β of the regression loss (0 = MSE); None = the paper's 2 (images), 4 (text),
    0 (speech)."""
    mask_ratio: float = 0.6
    """Images: share of patches hidden by block-wise masking (the paper's 60%)."""
    text_mask_prob: float = 0.15
    """Text: share of tokens selected BERT-style (80% [MASK], 10% random, 10% unchanged)."""
    paper_span: ClassVar[tuple[float, int]] = (0.065, 10)
    """Speech: (start chance, frames) of the paper's spans for 20 ms frames (200 ms spans,
    about half the frames hidden)."""
    span_start_prob: float | None = None
    span_length: int | None = None
    """Speech: chance that a latent frame starts a masked span, and the span's frames; None:
    fitted to the encoder's frame rate (``paper_span`` at 20 ms)."""
    momentum: float | None = None
    """Teacher EMA momentum at the start; None = the paper's 0.999 (text, speech) / 0.9998
    (images).
    Short CPU runs of a few thousand steps want 0.99-0.996, or the teacher barely moves."""
    momentum_final: float = 0.9999
    momentum_anneal: float = 0.3
    """Fraction of training over which the momentum rises linearly to ``momentum_final``."""
    augment: ImageAugment = field(
        default_factory=lambda: ImageAugment(
            paper_crop_scale=(0.35, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0
        )
    )
    """Images: the one view both networks see (the paper: random resized crop + flip)."""

    def validate(self) -> None:
        if not 0 < self.mask_ratio < 1 or not 0 < self.text_mask_prob < 1:
            raise SelfsupError("mask_ratio and text_mask_prob must lie in (0, 1)")
        check_span(self.span_start_prob, self.span_length, "span_start_prob", "span_length")


class Data2Vec(nn.Module):
    def __init__(self, cfg: Data2VecConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        if not hasattr(encoder, "forward_layers") or not hasattr(encoder, "blocks"):
            raise SelfsupError(
                "data2vec needs a transformer encoder with forward_layers (vit-tiny for images, "
                "transformer-tiny for text, wav2vec2-tiny for speech)"
            )
        self.text = info.modality == "text"
        self.speech = info.modality == "audio"
        depth = len(encoder.blocks)
        share = 10 / 12 if self.text else 8 / 12 if self.speech else 6 / 12
        self.top_k = cfg.top_k or max(1, round(depth * share))
        if not 1 <= self.top_k <= depth:
            raise SelfsupError(
                f"top_k must lie between 1 and the encoder depth {depth}, got {cfg.top_k}"
            )
        cfg.validate()
        self.cfg = cfg
        self.momentum = (
            cfg.momentum
            if cfg.momentum is not None
            else (0.999 if self.text or self.speech else 0.9998)
        )
        self.encoder = encoder
        self.teacher = make_teacher(encoder)
        self.head = nn.Linear(encoder.embed_dim, encoder.embed_dim)
        beta = (
            cfg.beta
            if cfg.beta is not None
            else (4.0 if self.text else 0.0 if self.speech else 2.0)
        )
        self.loss = Data2VecLoss(beta=beta, scale=1.0 if self.text else None)
        self.target_norm = cfg.target_norm or (
            "layer" if self.text else "instance" if self.speech else "none"
        )
        self.final_norm = cfg.final_norm or ("layer" if not (self.text or self.speech) else "none")
        if self.speech:
            if not hasattr(encoder, "extract"):
                raise SelfsupError("data2vec on speech needs a wav2vec 2.0 encoder (wav2vec2-tiny)")
        elif self.text:
            ids = special_ids(info.tokenizer)
            self.pad_id, self.mask_id = ids["[PAD]"], ids["[MASK]"]
            self.special = [ids[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")]
            self.vocab_size = info.vocab_size
        else:
            self.views = ImageViews(info.channels, info.image_size, [cfg.augment], 1, False)
            patch = encoder.patch_size
            self.grid = info.image_size // patch
            self.num_masked = round(cfg.mask_ratio * self.grid**2)

    @torch.no_grad()
    def _targets(self, x: Tensor) -> list[Tensor]:
        self.teacher.eval()  # no dropout in the teacher
        return self.teacher.forward_layers(x)[-self.top_k :]  # K × (B, N, D)

    def _average(self, layers: list[Tensor]) -> Tensor:
        return data2vec_targets(
            layers, top_k=self.top_k, norm=self.target_norm, final_norm=self.final_norm
        )  # (B, N, D)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.text:
            return self._text_step(batch["tokens"])
        if self.speech:
            return self._speech_step(batch["audio"])
        return self._image_step(batch["image"])

    def _image_step(self, images: Tensor) -> dict[str, Tensor]:
        (x,) = self.views(images)  # (B, C, S, S)
        B = x.shape[0]
        mask = block_mask(B, self.grid, self.grid, self.num_masked, device=x.device)  # (B, N)
        states = self.encoder.forward_tokens(x, mask, keep_masked=True)[:, 1:]  # (B, N, D)
        with_grad = self.head(states[mask])  # (M, D)
        layers = [layer[:, 1:] for layer in self._targets(x)]  # K × (B, N, D), patches only
        target = self._average(layers)
        loss = self.loss(with_grad, target[mask].detach())
        return {"loss": loss, "features": states.mean(dim=1).detach()}

    def _text_step(self, tokens: Tensor) -> dict[str, Tensor]:
        inputs, picked = bert_mask(
            tokens,
            vocab_size=self.vocab_size,
            mask_id=self.mask_id,
            special_ids=self.special,
            select_prob=self.cfg.text_mask_prob,
        )  # picked: original ids where selected, -100 elsewhere
        selected = picked != -100  # (B, L)
        states = self.encoder.forward_tokens(inputs)  # (B, L, D)
        prediction = self.head(states[selected])  # (M, D)
        target = self._average(self._targets(tokens))
        loss = self.loss(prediction, target[selected].detach())
        return {"loss": loss, "features": states[selected].detach()}  # (M, D) token states

    def _speech_step(self, audio: Tensor) -> dict[str, Tensor]:
        wave = crop_to_shortest(audio)  # (B, T') no padding left
        z, padding = self.encoder.extract(wave)  # (B, N, C), (B, N)
        x = self.encoder.embed(z)  # (B, N, D)
        prob, length = span_or_paper(
            self.cfg.span_start_prob, self.cfg.span_length, self.cfg.paper_span
        )
        mask = span_mask(padding, start_prob=prob, span=length)  # (B, N)
        hidden = torch.where(mask.unsqueeze(-1), self.encoder.mask_embedding.to(x.dtype), x)
        states, _ = self.encoder.contextualise(hidden, padding)  # (B, N, D)
        prediction = self.head(states[mask])  # (M, D)
        target = self._average(self._targets(wave))  # (B, N, D), the unmasked wave
        loss = self.loss(prediction, target[mask].detach())
        return {"loss": loss, "features": pool_frames(states, padding).detach()}

    def on_step_end(self, progress: float) -> None:
        anneal = max(self.cfg.momentum_anneal, math.ulp(1.0))
        m = linear_warmup(self.momentum, self.cfg.momentum_final, progress, anneal)
        ema_update(self.teacher, self.encoder, m)
