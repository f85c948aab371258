"""Small helpers the text methods share: special-token ids, pooling, LM logits."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


def special_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of [PAD], [UNK], [CLS], [SEP] and [MASK] in a selfsup tokenizer (0-4)."""
    from selfsup.data.tokenizer import SPECIAL_TOKENS

    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    missing = [token for token, i in ids.items() if i is None]
    if missing:
        raise ValueError(
            f"the tokenizer lacks the special tokens {missing}: train it with selfsup "
            "(--set data.tokenizer=wordpiece) or add them"
        )
    return ids


def word_starts(tokenizer: Any) -> Tensor:
    """(V,) bool: True where a token begins a word (whole-word masking)."""
    from selfsup.data.tokenizer import word_start_table

    return word_start_table(tokenizer)


def mean_pool(states: Tensor, keep: Tensor) -> Tensor:
    """Mean of token states (B, L, D) over the positions where ``keep`` (B, L) is True."""
    weights = keep.to(states.dtype).unsqueeze(-1)  # (B, L, 1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # (B, D)


def lm_logits(encoder: nn.Module, tokens: Tensor) -> Tensor:
    """Next-token logits (B, L, V) of a causal encoder whose output layer is tied to its
    token embedding (GPT-2's weight tying): ``forward_tokens(tokens) @ token_embed.weightᵀ``."""
    states = encoder.forward_tokens(tokens)  # (B, L, D)
    return states @ encoder.token_embed.weight.T  # (B, L, V)


def check_token_encoder(encoder: nn.Module, method: str) -> None:
    """Raise ValueError unless ``encoder`` is a token model with a tied-able embedding."""
    if not isinstance(getattr(encoder, "token_embed", None), nn.Embedding) or not hasattr(
        encoder, "forward_tokens"
    ):
        raise ValueError(
            f"{method} needs a token encoder with token_embed and forward_tokens "
            "(e.g. --encoder transformer-tiny)"
        )
