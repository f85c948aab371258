"""The Gumbel-softmax product quantizer of wav2vec 2.0 (§3.2).

Baevski, Zhou, Mohamed, Auli. "wav2vec 2.0." NeurIPS 2020. arXiv:2006.11477; Jang et al.
"Categorical Reparameterization with Gumbel-Softmax." ICLR 2017.

A latent frame z (C) is mapped to logits l ∈ R^{G×V}; in each of the G codebooks one of V
entries e_{g,v} ∈ R^{F/G} is chosen and the choices are concatenated, q = [e_{1,v1}; ...;
e_{G,vG}] ∈ R^F. Training picks with the straight-through Gumbel-softmax: the forward pass
uses the one-hot argmax of (l + g) / τ with g ~ Gumbel(0, 1), the backward pass the gradient
of the soft probabilities; τ is annealed from 2 to 0.5. In evaluation the choice is argmax l.

The entries start as N(0, 1) draws. fairseq draws them from U(0, 1): all-positive vectors
whose cosines start near 0.75, so every target looks alike and the contrastive loss sits at
chance, ln(K + 1), until the entries spread, which a 400k-step run can afford and a few
hundred CPU steps cannot (measured: 100 steps at lr 5e-4 on the Asterisk prompts stayed at
4.61 = ln 101).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.wav2vec2 import codebook_perplexity


class GumbelQuantizer(nn.Module):
    """forward(z (M, C), tau) -> (q (M, F), mean_probs (G, V), codes (M, G)).

    ``mean_probs`` is the softmax of the logits (no noise) averaged over the M frames, what the
    diversity loss reads; ``codes`` are the chosen entries.
    """

    def __init__(self, in_dim: int, groups: int = 2, entries: int = 320, dim: int = 256) -> None:
        super().__init__()
        if dim % groups:
            raise ValueError(f"codevector_dim {dim} must be divisible by codebooks {groups}")
        self.groups, self.entries = groups, entries
        self.logits = nn.Linear(in_dim, groups * entries)
        nn.init.normal_(self.logits.weight, std=1.0)  # fairseq: weight_proj ~ N(0, 1), bias 0
        nn.init.zeros_(self.logits.bias)
        self.codebooks = nn.Parameter(torch.randn(groups, entries, dim // groups))

    def forward(self, z: Tensor, tau: float) -> tuple[Tensor, Tensor, Tensor]:
        M = z.shape[0]
        logits = self.logits(z).float().view(M, self.groups, self.entries)  # (M, G, V)
        mean_probs = logits.softmax(dim=-1).mean(dim=0)  # (G, V)
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)  # (M, G, V)
        else:
            onehot = F.one_hot(logits.argmax(dim=-1), self.entries).float()
        codes = onehot.argmax(dim=-1)  # (M, G)
        q = torch.einsum("mgv,gvf->mgf", onehot.to(self.codebooks.dtype), self.codebooks)
        return q.reshape(M, -1), mean_probs, codes  # (M, G·F/G)

    @torch.no_grad()
    def code_perplexity(self, codes: Tensor) -> Tensor:
        """Σ_g exp(entropy of the chosen entries' frequencies): G·V when all are used evenly,
        G when each codebook always picks one entry (collapse)."""
        counts = F.one_hot(codes, self.entries).float().mean(dim=0)  # (G, V)
        return codebook_perplexity(counts)
