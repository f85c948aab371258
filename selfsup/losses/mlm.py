"""Token-prediction losses: masked tokens (BERT's MLM, BEiT's visual tokens) and next tokens (GPT).

Devlin, Chang, Lee, Toutanova. "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding." NAACL 2019.
Bao, Dong, Piao, Wei. "BEiT: BERT Pre-Training of Image Transformers." ICLR 2022.
Radford, Narasimhan, Salimans, Sutskever. "Improving Language Understanding by Generative
Pre-Training." 2018.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.contracts import IGNORE_INDEX
from selfsup.errors import SelfsupError

"""Target of a position that is not predicted."""


def _mean_cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int) -> Tensor:
    """Mean CE over the targets != ignore_index, of every process's share under DDP; 0 (with a
    gradient path) when there are none. logits (M, K), targets (M,)."""
    total = F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="sum")
    return distributed.mean_over_processes(total, (targets != ignore_index).sum())


class MaskedTokenLoss(nn.Module):
    """Cross-entropy at the predicted positions only (BERT's MLM, BEiT's masked image modeling).

        L = −(1/|S|) Σ_{(b,l) ∈ S} log softmax(z_bl)[y_bl],    S = {(b,l) : y_bl ≠ −100}

    in nats per predicted token. ``bert_mask`` makes such targets (the original id where a
    token was selected); for BEiT, put the visual token ids at the hidden patches and −100
    elsewhere. With no predicted position the loss is 0.

    Shapes: ``logits`` (B, L, K) and ``targets`` (B, L) int64, or already gathered (M, K) and
    (M,) (cheaper with a large vocabulary: run the output layer on the selected positions
    only) -> scalar.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape[:-1] != targets.shape or targets.dtype.is_floating_point:
            raise SelfsupError(
                f"MaskedTokenLoss wants logits (..., K) and integer targets (...) of the same "
                f"leading shape, got {tuple(logits.shape)} and {targets.dtype} {tuple(targets.shape)}"
            )
        return _mean_cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), self.ignore_index
        )


def causal_lm_loss(logits: Tensor, tokens: Tensor, pad_id: int | None = None) -> Tensor:
    """Next-token cross-entropy of a causal language model, in nats per predicted token.

        L = −(1/|S|) Σ_{(b,t) ∈ S} log softmax(z_{b,t})[x_{b,t+1}],   S = {(b,t) : t < L−1, x_{b,t+1} ≠ pad}

    logits[:, t] (made from tokens[:, :t+1]) predicts tokens[:, t+1]; the last position
    predicts nothing; pad targets are skipped (``pad_id=None``: none skipped).

    Shapes: ``logits`` (B, L, K), ``tokens`` (B, L) int64 -> scalar. exp(L) is the perplexity.
    """
    if logits.ndim != 3 or tokens.shape != logits.shape[:2]:
        raise SelfsupError(
            f"causal_lm_loss wants logits (B, L, K) and tokens (B, L), got "
            f"{tuple(logits.shape)} and {tuple(tokens.shape)}"
        )
    if logits.shape[1] < 2:
        raise SelfsupError("causal_lm_loss needs sequences of at least 2 tokens")
    pred = logits[:, :-1]  # (B, L−1, K)
    target = tokens[:, 1:].long()  # (B, L−1)
    if pad_id is not None:
        target = target.masked_fill(target == pad_id, IGNORE_INDEX)
    return _mean_cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), IGNORE_INDEX)
