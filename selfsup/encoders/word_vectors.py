"""A table of word vectors: word2vec's trained input vectors, one per token id.

As an encoder it reads (B, L) token ids: ``forward_tokens`` looks every id up, ``forward``
averages the vectors of a row's words (the special ids [PAD] [UNK] [CLS] [SEP] [MASK] left
out), so the text probes (kNN, linear) score a bag of word vectors, the classic use of
word2vec features for documents.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.data.tokenizer import FIRST_WORD_ID


class WordVectors(nn.Module):
    """``vocab_size`` vectors of ``embed_dim``, initialised as word2vec.c does: uniform in
    ±0.5 / embed_dim (the output vectors, which the method holds, start at zero)."""

    def __init__(self, vocab_size: int, embed_dim: int = 100, max_length: int = 0) -> None:
        super().__init__()
        if vocab_size <= FIRST_WORD_ID or embed_dim < 1:
            raise ValueError(
                f"word vectors need words beyond the {FIRST_WORD_ID} special ids and a "
                f"positive width, got vocab_size={vocab_size}, embed_dim={embed_dim}"
            )
        self.embed_dim = embed_dim
        self.max_length = max_length
        self.vectors = nn.Embedding(vocab_size, embed_dim)
        with torch.no_grad():
            self.vectors.weight.uniform_(-0.5 / embed_dim, 0.5 / embed_dim)

    def forward_tokens(
        self, tokens: Tensor, mask: Tensor | None = None, keep_masked: bool = True
    ) -> Tensor:
        """(B, L) ids -> (B, L, D) vectors. ``mask`` (B, L) bool, True = hidden: hidden
        positions become zero vectors (``keep_masked``) or are dropped -> (B, L_visible, D),
        every row hiding the same count. No token sees another, so nothing else changes."""
        states = self.vectors(tokens)  # (B, L, D)
        if mask is None:
            return states
        if keep_masked:
            return states.masked_fill(mask.unsqueeze(-1), 0.0)
        B, _, D = states.shape
        return states[~mask].reshape(B, -1, D)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, L) ids -> (B, D): the mean vector of each row's words (0 for a row without)."""
        words = (tokens >= FIRST_WORD_ID).unsqueeze(-1)  # (B, L, 1)
        total = (self.vectors(tokens) * words).sum(1)  # (B, D)
        return total / words.sum(1).clamp(min=1)
