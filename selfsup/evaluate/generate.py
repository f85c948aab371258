"""Autoregressive sampling from a next-token model, to read what a GPT-style model learned.

No KV cache: every step runs the model on the whole (cropped) context, which is simple
and fast enough for the short samples an evaluation prints.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from selfsup.errors import SelfsupError


@torch.no_grad()
def generate(
    logits_fn: Callable[[Tensor], Tensor],
    prompt: Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = 50,
    eos_id: int | None = None,
    pad_id: int = 0,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Extend each prompt by sampling one token at a time.

    At each step the model sees the sequence so far, cropped to its last ``max_length``
    tokens, and its logits z at the last position give the next token:

        temperature = 0:  x = argmax_v z_v   (greedy; ties go to the lowest id)
        otherwise:        keep the top_k largest z_v (ties at the k-th value are kept),
                          x ~ softmax(z / temperature) over the kept ids

    A row that emits ``eos_id`` is finished: the eos is kept and every later position is
    ``pad_id``. Generation stops after ``max_new_tokens`` steps or once every row is
    finished.

    Args:
        logits_fn: (B, L) int64 tokens -> (B, L, V) next-token logits; it is called on the
            device of ``prompt``.
        prompt: (B, L0) int64 tokens, L0 ≥ 1 (e.g. a BOS token alone).
        max_new_tokens: at most this many tokens are added.
        temperature: 1.0 samples the model's distribution; 0.7-0.9 reads more fluently;
            0 is greedy decoding.
        top_k: sample only among the k most likely tokens; 50 is the usual value; None
            keeps every token.
        eos_id: end-of-sequence token that finishes a row; None never finishes early.
        pad_id: filler after a row's eos.
        max_length: the model's context window; longer contexts are cropped to their last
            max_length tokens. None never crops.
        generator: torch generator on the prompt's device, for repeatable sampling.

    Returns:
        (B, L0 + n) int64 tokens, the prompt first, n ≤ max_new_tokens.
    """
    _check_generate_args(prompt, max_new_tokens, temperature, top_k, max_length)
    seq = prompt.long()  # (B, L)
    finished = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)  # (B,)
    for _ in range(max_new_tokens):
        context = seq if max_length is None else seq[:, -max_length:]  # (B, ≤ max_length)
        logits = logits_fn(context)  # (B, L, V)
        if logits.ndim != 3 or logits.shape[:2] != context.shape:
            raise SelfsupError(
                f"logits_fn returned {tuple(logits.shape)} for tokens {tuple(context.shape)}; "
                "it must give (B, L, V) next-token logits"
            )
        last = logits[:, -1].float()  # (B, V)
        nxt = _pick(last, temperature, top_k, generator)  # (B,)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)  # (B, L + 1)
        if eos_id is not None:
            finished |= nxt == eos_id
            if bool(finished.all()):
                break
    return seq


def _pick(
    logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> Tensor:
    """One token per row from (B, V) logits: greedy at temperature 0, else top-k sampling."""
    if temperature == 0:
        return logits.argmax(dim=1)  # (B,)
    if top_k is not None and top_k < logits.shape[1]:
        kth = logits.topk(top_k, dim=1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = (logits / temperature).softmax(dim=1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)


def _check_generate_args(
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    max_length: int | None,
) -> None:
    """Raise SelfsupError with a fix for every malformed argument of `generate`."""
    if prompt.ndim != 2 or prompt.shape[1] < 1 or prompt.is_floating_point():
        raise SelfsupError(
            f"generate expects int64 (B, L0) prompt tokens with L0 ≥ 1, got {prompt.dtype} of "
            f"shape {tuple(prompt.shape)}; start from a BOS token if there is no prompt"
        )
    if max_new_tokens < 0:
        raise SelfsupError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
    if temperature < 0:
        raise SelfsupError(f"temperature must be ≥ 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise SelfsupError(f"top_k must be at least 1 or None (no filter), got {top_k}; 50 works")
    if max_length is not None and max_length < 1:
        raise SelfsupError(f"max_length must be at least 1 or None, got {max_length}")
