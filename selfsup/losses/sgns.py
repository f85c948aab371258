"""Skip-gram negative sampling (SGNS), the loss of word2vec.

Mikolov et al. "Distributed Representations of Words and Phrases and their
Compositionality." NeurIPS 2013, arXiv:1310.4546, eq. 4.

For an input vector v (a context word's, or CBOW's mean of the window), the output vector
u_0 of the word to predict and the output vectors u_1..u_K of K noise words,

    ℓ = -log σ(v·u_0) - Σ_k log σ(-v·u_k)

A noise word that is the predicted word itself is left out (``keep`` False), as
word2vec.c and gensim skip it. The loss is the *sum* over the P predictions: word2vec
applies every pair's gradient at its learning rate alpha, so the engine's lr means what
word2vec's does. The dot products run in float32 whatever the autocast.

Shapes: inputs (P, D), outputs (P, 1 + K, D) with the predicted word's vector first,
keep (P, K) bool -> scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.precision import float32_forward


class SGNSLoss(nn.Module):
    """``SGNSLoss()(inputs, outputs, keep)`` -> the summed loss of P predictions."""

    @float32_forward
    def forward(self, inputs: Tensor, outputs: Tensor, keep: Tensor | None = None) -> Tensor:
        scores = torch.bmm(outputs, inputs.unsqueeze(2)).squeeze(2)  # (P, 1 + K)
        # -log σ(x) = softplus(-x) for the predicted word, -log σ(-x) = softplus(x) for noise
        noise = F.softplus(scores[:, 1:])  # (P, K)
        if keep is not None:
            noise = noise * keep
        return F.softplus(-scores[:, 0]).sum() + noise.sum()
