"""wav2vec 2.0's objective: the contrastive task over quantized latent frames and the codebook
diversity penalty, with the distractor sampler they need.

Baevski, Zhou, Mohamed, Auli. "wav2vec 2.0: A Framework for Self-Supervised Learning of
Speech Representations." NeurIPS 2020, §3.2-3.3. arXiv:2006.11477.

Contrastive loss (eq. 3), for the context vector c_t of each masked frame t, its quantized
target q_t and K distractors q̃ drawn uniformly from the *other* masked frames of the same
utterance (with replacement):

    L_m = −log  exp(sim(c_t, q_t) / κ) / Σ_{q̃ ∈ {q_t} ∪ Q_t} exp(sim(c_t, q̃) / κ)

sim = cosine similarity, κ = 0.1, K = 100, averaged over every masked frame of the batch. A
distractor equal to the target (the same code chosen at two frames) is excluded (its logit
is −inf), as in fairseq.

Diversity loss (eq. 4), over G codebooks of V entries, with p̄_g the softmax of the code
logits (no Gumbel noise) averaged over the batch's frames:

    L_d = (G·V − Σ_g exp(−Σ_v p̄_{g,v} log p̄_{g,v})) / (G·V)

0 when every entry is used equally, → 1 when each codebook uses one entry; its weight α is
0.1. The L2 penalty on the feature encoder's output (weight 10 in fairseq's base config) is
computed by the method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sample_distractors(
    batch: int,
    frames: int,
    num: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, M, K) int64: for each of M masked frames per row, K indices of other frames of the
    same row, uniform over the M − 1 others (with replacement). Needs M ≥ 2."""
    own = torch.arange(frames, device=device).view(1, frames, 1)  # (1, M, 1)
    idx = torch.randint(0, frames - 1, (batch, frames, num), device=device, generator=generator)
    return idx + (idx >= own).long()  # skip the frame itself


def contrastive_logits(
    context: Tensor, targets: Tensor, distractors: Tensor, kappa: float
) -> Tensor:
    """(B, M, F) context, (B, M, F) quantized targets, (B, M, K) distractor indices ->
    (B, M, 1 + K) logits sim / κ, the target first, repeated targets at −inf.

    The cosines of every context with every target of its row are one (B, M, M) product; the
    distractors' logits are gathered from it (no (B, M, K, F) copy of the targets)."""
    c = F.normalize(context.float(), dim=-1, eps=1e-8)
    q = F.normalize(targets.float(), dim=-1, eps=1e-8)
    sims = c @ q.transpose(1, 2) / kappa  # (B, M, M): sims[b, t, j] = cos(c_t, q_j) / κ
    positive = sims.diagonal(dim1=1, dim2=2).unsqueeze(-1)  # (B, M, 1)
    negative = sims.gather(2, distractors)  # (B, M, K)
    with torch.no_grad():
        same = (targets.unsqueeze(2) == targets.unsqueeze(1)).all(dim=-1)  # (B, M, M)
        repeated = same.gather(2, distractors)  # (B, M, K)
    return torch.cat([positive, negative.masked_fill(repeated, float("-inf"))], dim=-1)


class Wav2Vec2ContrastiveLoss(nn.Module):
    """Eq. 3 above. forward(context (B, M, F), targets (B, M, F), distractors (B, M, K))
    -> scalar, the mean over the B·M masked frames."""

    def __init__(self, kappa: float = 0.1) -> None:
        super().__init__()
        if not kappa > 0:
            raise ValueError(f"kappa must be positive, got {kappa}")
        self.kappa = kappa

    def forward(self, context: Tensor, targets: Tensor, distractors: Tensor) -> Tensor:
        logits = contrastive_logits(context, targets, distractors, self.kappa)
        zeros = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits.flatten(0, 1), zeros.flatten())


def codebook_perplexity(mean_probs: Tensor) -> Tensor:
    """(G, V) average code probabilities -> scalar Σ_g exp(entropy of p̄_g)."""
    p = mean_probs.float()
    return torch.exp(-(p * torch.log(p + 1e-7)).sum(dim=-1)).sum()


def diversity_loss(mean_probs: Tensor) -> Tensor:
    """Eq. 4 above: (G, V) average softmax probabilities -> scalar in [0, 1)."""
    G, V = mean_probs.shape
    return (G * V - codebook_perplexity(mean_probs)) / (G * V)
