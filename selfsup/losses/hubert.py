"""HuBERT's targets (k-means clusters of frame features) and its masked-prediction loss.

Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov, Mohamed. "HuBERT: Self-Supervised Speech
Representation Learning by Masked Prediction of Hidden Units." TASLP 2021. arXiv:2106.07447.

Targets. The first iteration clusters 39-dim MFCC frames (13 + Δ + ΔΔ) into 100 units with
k-means; fairseq fits scikit-learn's ``MiniBatchKMeans`` offline on a subset of the corpus and
labels every frame before pretraining. ``MiniBatchKMeans`` here is the same algorithm (Sculley
2010, "Web-scale k-means clustering") run inside the training loop: k-means++ seeding on the
first batch's frames, then for each batch every frame joins its nearest centre and each centre
moves to the running mean of every frame it was ever given,

    c_k ← (n_k · c_k + Σ_{x → k} x) / (n_k + |{x → k}|),    n_k ← n_k + |{x → k}|

which is the per-frame update c_k ← c_k + (x − c_k) / n_k applied to the batch's frames in
turn, with the assignments of the batch's start. Under DDP the sums and counts are added over
processes first, so every process keeps the same centres. The method freezes the centres after
its fitting share of training, so later targets are a fixed labelling, as the paper's.

Loss (fairseq ``HubertModel.compute_nce`` with one target set): each masked frame's projected
context vector o_t scores every unit k by cosine similarity with the unit's learned embedding
e_k, over a temperature τ = 0.1, and a cross-entropy picks its unit:

    L = − Σ_{t masked} log softmax_k( cos(o_t, e_k) / τ )[z_t]
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.distributed import is_distributed
from selfsup.errors import SelfsupError


def hubert_logits(projected: Tensor, embeddings: Tensor, temperature: float) -> Tensor:
    """(M, F) projected context vectors, (K, F) unit embeddings -> (M, K) cosine logits / τ;
    the loss is their cross-entropy with the frames' units."""
    a = F.normalize(projected.float(), dim=-1, eps=1e-8)
    b = F.normalize(embeddings.float(), dim=-1, eps=1e-8)
    return a @ b.T / temperature


def squared_distances(x: Tensor, centres: Tensor) -> Tensor:
    """(P, C) points, (K, C) centres -> (P, K) squared Euclidean distances, float32."""
    x, centres = x.float(), centres.float()
    return (
        x.square().sum(dim=1, keepdim=True)
        - 2 * x @ centres.T
        + centres.square().sum(dim=1)[None, :]
    ).clamp(min=0)


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre uniformly among the
    (P, C) points, each next one with probability proportional to its squared distance to the
    nearest centre chosen so far -> (k, C)."""
    if x.shape[0] < k:
        raise SelfsupError(
            f"k-means needs at least {k} frames to seed {k} clusters, got {x.shape[0]}: "
            "raise the batch size or data.max_seconds, or lower method_args.clusters"
        )
    first = int(torch.randint(x.shape[0], (1,), generator=generator))
    chosen = [first]
    nearest = squared_distances(x, x[first : first + 1])[:, 0]  # (P,)
    for _ in range(k - 1):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, squared_distances(x, x[pick : pick + 1])[:, 0])
    return x[chosen].float().clone()


class MiniBatchKMeans(nn.Module):
    """Online k-means over batches of (P, C) points (see the module docstring). Its centres
    and counts are buffers, so a checkpoint holds them and a resumed run continues exactly."""

    def __init__(self, clusters: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("centres", torch.zeros(clusters, dim))
        self.register_buffer("counts", torch.zeros(clusters))
        self.register_buffer("seeded", torch.tensor(False))

    @property
    def clusters(self) -> int:
        return self.centres.shape[0]

    def assign(self, x: Tensor) -> Tensor:
        """(P, C) -> (P,) index of each point's nearest centre."""
        return squared_distances(x, self.centres).argmin(dim=1)

    @torch.no_grad()
    def update(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """One mini-batch step on the (P, C) points; the first call seeds with k-means++."""
        x = x.float()
        if not bool(self.seeded):
            # every process seeds from its own frames, then all take rank 0's seeds
            seeds = kmeans_plus_plus(x, self.clusters, generator)
            if is_distributed():
                dist.broadcast(seeds, src=0)
            self.centres.copy_(seeds)
            self.seeded.fill_(True)
        labels = self.assign(x)
        sums = torch.zeros_like(self.centres).index_add_(0, labels, x)  # (K, C)
        hits = torch.bincount(labels, minlength=self.clusters).float()  # (K,)
        if is_distributed():
            dist.all_reduce(sums)
            dist.all_reduce(hits)
        total = self.counts + hits
        moved = hits > 0
        self.centres[moved] = (
            self.counts[moved, None] * self.centres[moved] + sums[moved]
        ) / total[moved, None]
        self.counts.copy_(total)
