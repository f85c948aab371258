"""BERT-style masked language modelling: hide 15% of the tokens, predict them from context.

Devlin et al. "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding." NAACL 2019. arXiv:1810.04805. (Without next-sentence prediction, as RoBERTa
showed it does not help: Liu et al. 2019, arXiv:1907.11692; masks are drawn afresh every step,
RoBERTa's dynamic masking.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.data.tokenizer import special_ids, word_start_table
from selfsup.encoders.transformer import check_token_encoder
from selfsup.errors import SelfsupError
from selfsup.losses.mlm import MaskedTokenLoss
from selfsup.views.masking import bert_mask


@dataclass
class MLMConfig:
    """BERT's masking rule and head; the defaults are the paper's."""

    select_prob: float = 0.15
    """Share of (non-special) tokens the model must predict."""
    mask_prob: float = 0.8
    """Of the selected tokens, the share replaced by [MASK] ..."""
    random_prob: float = 0.1
    """... the share replaced by a random token; the rest (10%) stay unchanged."""
    whole_word: bool = False
    """Select whole words (all their sub-word tokens together) rather than single tokens:
    harder, and better for downstream tasks with WordPiece vocabularies (BERT's WWM models)."""

    def validate(self) -> None:
        if not 0 < self.select_prob < 1:
            raise SelfsupError(f"select_prob must lie in (0, 1), got {self.select_prob}")
        if not (
            self.mask_prob >= 0 and self.random_prob >= 0 and self.mask_prob + self.random_prob <= 1
        ):
            raise SelfsupError(
                "mask_prob and random_prob must be >= 0 and sum to at most 1 (BERT: 0.8 and "
                f"0.1), got {self.mask_prob} and {self.random_prob}"
            )


class MLM(nn.Module):
    """Encoder + BERT's prediction head (dense, GELU, LayerNorm, then the token embedding
    matrix transposed as the output layer, plus a bias); cross-entropy on selected tokens."""

    def __init__(self, cfg: MLMConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        check_token_encoder(encoder, "mlm")
        if info.modality != "text":
            raise SelfsupError("mlm needs text data (--data fortunes, gcide or text:PATH)")
        if getattr(encoder, "causal", False):
            raise SelfsupError(
                "mlm needs a bidirectional encoder, got a causal one: use --encoder "
                "transformer-tiny (or clm for causal models)"
            )
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.embed_dim
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.output_bias = nn.Parameter(torch.zeros(info.vocab_size))
        self.vocab_size = info.vocab_size
        ids = special_ids(info.tokenizer)
        self.pad_id, self.mask_id = ids["[PAD]"], ids["[MASK]"]
        self.special = [ids[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")]
        starts = word_start_table(info.tokenizer) if cfg.whole_word else None
        self.register_buffer("word_starts", starts, persistent=False)
        self.loss = MaskedTokenLoss()

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = batch["tokens"]  # (B, L)
        inputs, targets = bert_mask(
            tokens,
            vocab_size=self.vocab_size,
            mask_id=self.mask_id,
            special_ids=self.special,
            select_prob=self.cfg.select_prob,
            mask_prob=self.cfg.mask_prob,
            random_prob=self.cfg.random_prob,
            word_starts=self.word_starts,
        )  # (B, L) each; targets -100 where nothing is predicted
        states = self.encoder.forward_tokens(inputs)  # (B, L, D)
        selected = targets != -100  # (B, L)
        # The output layer runs on the selected positions only: 15% of the vocabulary matmul.
        hidden = self.transform(states[selected])  # (M, D)
        logits = hidden @ self.encoder.token_embed.weight.T + self.output_bias  # (M, V)
        loss = self.loss(logits.float(), targets[selected])  # 0, not NaN, if none selected
        accuracy = (logits.argmax(dim=-1) == targets[selected]).float().mean()
        # The collapse monitor watches the token states the loss trains, not the mean-pooled
        # sentence vector: pooled states of an MLM share a large common direction by nature.
        features = states[selected]  # (M, D)
        return {"loss": loss, "accuracy": accuracy.detach(), "features": features.detach()}

    def on_step_end(self, progress: float) -> None:
        del progress  # no schedules
