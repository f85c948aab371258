"""Pre-LN Transformer blocks shared by the token encoders, and the text Transformer.

``Attention`` and ``Block`` serve the ViT and ``TextTransformer`` alike. The text encoder
reads (B, L) token ids, bidirectional (BERT) or causal (GPT), with learned or rotary
(RoFormer, Su et al. 2021) positions. Padding is never attended to: a sequence's features
are the same with or without extra padding.

Masked prediction enters in two ways, as for the ViT: ``forward_tokens(tokens, mask,
keep_masked=True)`` swaps the hidden positions' embeddings for the encoder's learned
``mask_token`` (SimMIM, data2vec), ``keep_masked=False`` drops them before the blocks (MAE).
BERT's own [MASK] id goes through the ordinary token ids and needs neither.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from selfsup.errors import SelfsupError

PositionKind = Literal["learned", "rotary"]
TextPoolKind = Literal["mean", "cls"]
Rotary = tuple[Tensor, Tensor]  # cos, sin: (B or 1, 1, L, head_dim/2) float32


def rotary_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> Rotary:
    """cos and sin of RoFormer's angles: int positions (...) -> two (..., head_dim/2) float32.

    Pair i of a head (i = 0 .. d/2 - 1) turns by m·θ_i at position m, θ_i = base^(-2i/d).
    """
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = base ** (-exponents / head_dim)  # (d/2,)
    angles = positions.float()[..., None] * inv_freq  # (..., d/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x_i, x_{i+d/2}) of x (..., L, d) by its angle; same shape and dtype.

    (x_i, x_{i+d/2}) -> (x_i cos − x_{i+d/2} sin, x_i sin + x_{i+d/2} cos), so that
    R_m q · R_n k = q · R_{n−m} k depends on the offset n − m only. The pairs (i, i + d/2)
    (as GPT-NeoX) are a fixed permutation of RoFormer's (2i, 2i + 1), which the learned
    q / k projections absorb. Computed in float32.
    """
    x1, x2 = x.float().chunk(2, dim=-1)  # (..., L, d/2) each
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rotated.to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention: (B, N, D) -> (B, N, D), through SDPA unless weights are asked.

    Args:
        dim: token width D.
        num_heads: heads h; D must be divisible by it.
        dropout: dropout on the attention probabilities while training (BERT, GPT-2: 0.1).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, D) -> q, k, v, each (B, heads, N, D/heads)."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d) each
        # unbind, not qkv[0], qkv[1], qkv[2]: the backward of three indexings fills three
        # zero tensors of the whole (3, B, h, N, d) and adds them; unbind's stacks once.
        return q, k, v

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        rotary: Rotary | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """(B, N, D) -> (B, N, D).

        ``attn_mask`` is bool, True = may attend, broadcastable to (B, h, N, N); every row
        must allow at least one key. ``rotary`` turns q and k (``apply_rotary``).
        """
        B, N, D = x.shape
        q, k, v = self._split_heads(x)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal
        )  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))

    def attention_weights(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, heads, N, N) softmax attention, computed explicitly in float32
        (no mask, no rotary: what the ViT's attention maps need)."""
        q, k, _ = self._split_heads(x)
        scores = q.float() @ k.float().transpose(-2, -1) / self.head_dim**0.5
        return scores.softmax(dim=-1)  # (B, h, N, N)


class Block(nn.Module):
    """Pre-LN block: a = Drop(Attn(LN(x))), f = Drop(MLP(LN(x + a))), out = x + a + f.

    (B, N, D) -> (B, N, D). The MLP is Linear(D, r·D), GELU, Linear(r·D, D); ``dropout``
    acts on the attention probabilities and on both residual branches while training.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x

    def forward_with_ffn(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        rotary: Rotary | None = None,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """(B, N, D) -> (out, f), both (B, N, D): f is the feed-forward branch before the last
        residual connection, data2vec's per-layer target."""
        x = x + self._drop(self.attn(self.norm1(x), attn_mask, rotary, is_causal))
        ffn = self._drop(self.mlp(self.norm2(x)))
        return x + ffn, ffn

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        rotary: Rotary | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        return self.forward_with_ffn(x, attn_mask, rotary, is_causal)[0]


def check_mask(mask: Tensor, B: int, N: int) -> Tensor:
    """Raise SelfsupError unless ``mask`` is a bool (B, N) tensor; returns it."""
    if mask.dtype != torch.bool or tuple(mask.shape) != (B, N):
        raise SelfsupError(
            f"mask must be a bool tensor of shape (B, N) = ({B}, {N}) with True = hidden, "
            f"got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    return mask


def drop_hidden(x: Tensor, mask: Tensor, what: str = "patches") -> Tensor:
    """Keep the visible positions: (B, N, ...) with bool mask (B, N), True = hidden ->
    (B, N_visible, ...), each row's positions in their original order."""
    B, N = x.shape[:2]
    check_mask(mask, B, N)
    hidden = mask.sum(dim=1)
    if bool((hidden != hidden[0]).any()):
        raise SelfsupError(
            f"every row of the mask must hide the same number of {what}, got "
            f"{sorted(set(hidden.tolist()))}: sample a fixed count per row (MAE hides 75%), "
            "or keep hidden positions as mask tokens (keep_masked=True)"
        )
    n_visible = N - int(hidden[0])
    # Boolean indexing walks rows in order and keeps each row's positions in order.
    return x[~mask].reshape(B, n_visible, *x.shape[2:])  # (B, N_visible, ...)


class TextTransformer(nn.Module):
    """Transformer over token ids: (B, L) int64 -> (B, D) pooled, or (B, L, D) token states.

    Args:
        vocab_size: number of token ids (the tokenizer's vocabulary, special tokens included).
        max_length: longest sequence L accepted; learned positions have one row per position.
        embed_dim: width D (256 tiny, 512 small, 768 BERT-base).
        depth: number of blocks (4 trains on a CPU; 12 is BERT-base / GPT-2).
        num_heads: attention heads; embed_dim must be divisible by it (64 per head is usual).
        mlp_ratio: hidden width of the MLP relative to D; 4 as in BERT and GPT.
        positions: "learned" adds a trained (L, D) table (BERT, GPT-2); "rotary" turns q and
            k by position-dependent angles (RoFormer) so attention sees offsets only.
        causal: position t attends to positions <= t only (GPT); False is BERT's
            bidirectional attention.
        pool: "mean" averages the non-pad states (works for causal models too); "cls" takes
            position 0, which holds [CLS] in selfsup's encoding (bidirectional only).
        pad_id: the padding id; pad positions are never attended to and not pooled.
        dropout: on the embeddings, attention probabilities and residual branches while
            training; 0.1 as in BERT and GPT-2; 0 for tiny data you want to fit.
        grad_checkpointing: recompute blocks in the backward pass while training; saves
            activation memory for long sequences at about 30% more compute.
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        embed_dim: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        positions: PositionKind = "learned",
        causal: bool = False,
        pool: TextPoolKind = "mean",
        pad_id: int = 0,
        dropout: float = 0.1,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise SelfsupError(
                f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}: "
                "use heads of width 64 (e.g. embed_dim 256 with 4 heads)"
            )
        if positions not in ("learned", "rotary"):
            raise SelfsupError(f"unknown positions {positions!r}: use 'learned' or 'rotary'")
        if positions == "rotary" and (embed_dim // num_heads) % 2:
            raise SelfsupError(
                f"rotary positions need an even head width, got {embed_dim}/{num_heads} = "
                f"{embed_dim // num_heads}: change embed_dim or num_heads"
            )
        if pool not in ("mean", "cls"):
            raise SelfsupError(f"unknown pool {pool!r}: use 'mean' or 'cls'")
        if pool == "cls" and causal:
            raise SelfsupError(
                "pool='cls' with causal=True gives features that see only the first token: "
                "use pool='mean' for a causal encoder"
            )
        if not 0 <= dropout < 1:
            raise SelfsupError(f"dropout must be in [0, 1), got {dropout}: 0.1 is usual")
        if not 0 <= pad_id < vocab_size:
            raise SelfsupError(f"pad_id {pad_id} is not a token id of a {vocab_size}-id vocabulary")
        self.embed_dim: int = embed_dim
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.positions: PositionKind = positions
        self.causal = causal
        self.pool: TextPoolKind = pool
        self.pad_id = pad_id
        self.dropout = dropout
        self.grad_checkpointing = grad_checkpointing
        self.head_dim = embed_dim // num_heads

        self.token_embed = nn.Embedding(vocab_size, embed_dim)
        self.pos_embed: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, max_length, embed_dim)) if positions == "learned" else None
        )
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        """Normal(0.02) embeddings, mask token and linears, zero biases (BERT, GPT-2)."""
        nn.init.normal_(self.token_embed.weight, std=0.02)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.ndim != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise SelfsupError(
                f"the text encoder takes (B, L) integer token ids, got {tokens.dtype} of shape "
                f"{tuple(tokens.shape)}: tokenize the text first (selfsup's text views do)"
            )
        L = tokens.shape[1]
        if not 1 <= L <= self.max_length:
            raise SelfsupError(
                f"sequence length {L} is outside 1..max_length {self.max_length}: truncate "
                "the text or build the encoder with a larger max_length"
            )
        low, high = torch.aminmax(tokens) if tokens.numel() else (0, 0)
        if int(low) < 0 or int(high) >= self.vocab_size:
            raise SelfsupError(
                f"token ids span {int(low)}..{int(high)}, outside the vocabulary 0.."
                f"{self.vocab_size - 1}: build the encoder with the tokenizer's vocab_size"
            )

    def _embed(
        self, tokens: Tensor, mask: Tensor | None, keep_masked: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L) ids -> x (B, L', D), is_token (B, L') bool (False at pads), positions (B, L')."""
        self._check_tokens(tokens)
        B, L = tokens.shape
        x = self.token_embed(tokens)  # (B, L, D)
        swap = check_mask(mask, B, L) if mask is not None and keep_masked else None
        if swap is None:  # nothing swapped; kept in the graph so DDP sees every parameter used
            swap = torch.zeros(B, L, dtype=torch.bool, device=tokens.device)
        x = torch.where(swap[..., None], self.mask_token.to(x.dtype), x)
        if self.pos_embed is not None:
            x = x + self.pos_embed[:, :L]
        is_token = tokens != self.pad_id  # (B, L)
        positions = torch.arange(L, device=tokens.device).expand(B, L)  # (B, L)
        if mask is not None and not keep_masked:
            x = drop_hidden(x, mask, "tokens")  # (B, L_visible, D)
            is_token = drop_hidden(is_token, mask, "tokens")
            positions = drop_hidden(positions, mask, "tokens")
        if self.dropout > 0:
            x = F.dropout(x, self.dropout, self.training)
        return x, is_token, positions

    def _attention_mask(self, is_token: Tensor) -> tuple[Tensor | None, bool]:
        """(B, L) -> (attn_mask (B, 1, L, L) bool True = may attend, or None; SDPA's is_causal).

        Queries attend to tokens, never to pads (and to earlier positions only when causal).
        A pad query also attends to itself, so that no row is empty: an all-masked softmax
        is NaN. Token queries never see a pad, so a pad changes no token's state.
        """
        if bool(is_token.all()):
            return None, self.causal  # no padding: SDPA's own (causal) kernel
        L = is_token.shape[1]
        allowed = is_token[:, None, None, :]  # (B, 1, 1, L) keys that are tokens
        if self.causal:
            allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=is_token.device).tril()
        # a float eye made bool: ONNX Runtime has no bool EyeLike, so this keeps ONNX export
        allowed = allowed | torch.eye(L, device=is_token.device).bool()
        return allowed, False  # (B, 1, L, L)

    def _rotary(self, positions: Tensor) -> Rotary | None:
        """(B, L) positions -> cos, sin of shape (B, 1, L, head_dim/2), or None."""
        if self.positions != "rotary":
            return None
        return rotary_angles(positions[:, None, :], self.head_dim)

    def _blocks(
        self, tokens: Tensor, mask: Tensor | None, keep_masked: bool
    ) -> tuple[Tensor, list[Tensor]]:
        """Run every block: -> (last block's output (B, L', D), per-block FFN branches)."""
        x, is_token, positions = self._embed(tokens, mask, keep_masked)
        attn_mask, is_causal = self._attention_mask(is_token)
        rotary = self._rotary(positions)
        layers = []
        for block in self.blocks:
            assert isinstance(block, Block)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x, ffn = checkpoint(
                    block.forward_with_ffn, x, attn_mask, rotary, is_causal, use_reentrant=False
                )
            else:
                x, ffn = block.forward_with_ffn(x, attn_mask, rotary, is_causal)
            layers.append(ffn)
        return x, layers

    def forward_tokens(
        self, tokens: Tensor, mask: Tensor | None = None, keep_masked: bool = True
    ) -> Tensor:
        """(B, L) ids -> (B, L, D) normalised token states (position 0 is [CLS]).

        ``mask`` is an optional bool (B, L) tensor, True = hidden. With ``keep_masked`` the
        hidden positions' token embeddings become the learned ``mask_token`` (positions are
        still added); without it they are dropped before the blocks -> (B, L_visible, D),
        every row must hide the same count, and the kept positions keep their order and
        their original positions.
        """
        x, _ = self._blocks(tokens, mask, keep_masked)
        return self.norm(x)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, L) ids -> (B, D): mean of the non-pad states, or the state at position 0."""
        states = self.forward_tokens(tokens)  # (B, L, D)
        if self.pool == "cls":
            return states[:, 0]
        weight = (tokens != self.pad_id).unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        return (states * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)

    def forward_layers(self, tokens: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """(B, L) ids -> one (B, L, D) tensor per block: data2vec's layer targets.

        Block l gives its feed-forward branch before the last residual connection,
        Drop(MLP(LN(x + a))), not its output x + a + f: data2vec (Baevski et al. 2022,
        fairseq's ``fc_results``) takes this, un-normalised, and instance-normalises and
        averages the top K itself. ``mask`` hides positions as ``forward_tokens`` with
        keep_masked=True (the teacher usually sees no mask).
        """
        return self._blocks(tokens, mask, keep_masked=True)[1]


def lm_logits(encoder: nn.Module, tokens: Tensor) -> Tensor:
    """Next-token logits (B, L, V) of a causal encoder whose output layer is tied to its
    token embedding (GPT-2's weight tying): ``forward_tokens(tokens) @ token_embed.weightᵀ``."""
    states = encoder.forward_tokens(tokens)  # (B, L, D)
    return states @ encoder.token_embed.weight.T  # (B, L, V)


def check_token_encoder(encoder: nn.Module, method: str) -> None:
    """Raise SelfsupError unless ``encoder`` is a token model with a tied-able embedding."""
    if not isinstance(getattr(encoder, "token_embed", None), nn.Embedding) or not hasattr(
        encoder, "forward_tokens"
    ):
        raise SelfsupError(
            f"{method} needs a token encoder with token_embed and forward_tokens "
            "(e.g. --encoder transformer-tiny)"
        )
