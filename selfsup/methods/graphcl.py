"""GraphCL: two views of every graph, each by one augmentation drawn from node dropping,
subgraphs, edge perturbation and attribute masking; pooled embeddings, a projection head, and
NT-Xent over the batch.

You et al. "Graph Contrastive Learning with Augmentations." NeurIPS 2020. arXiv:2010.13902.

Made for graph classification (a GIN encoder, sets of small graphs); on a node-level batch the
seed nodes are the samples: they are never dropped and the subgraph grows from them. The
paper's loss contrasts each view-1 graph with the view-2 graphs only; NT-Xent here (SimCLR's,
``NTXentLoss``) also uses the other view-1 graphs as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.losses import NTXentLoss
from selfsup.views.graph import drop_nodes, mask_attributes, perturb_edges, random_walk_subgraph

AUGMENTATIONS = {
    "drop_nodes": drop_nodes,
    "subgraph": random_walk_subgraph,
    "perturb_edges": perturb_edges,
    "mask_attributes": mask_attributes,
}


@dataclass
class GraphCLConfig:
    """GraphCL's hyperparameters; the paper's unsupervised TU defaults."""

    augmentations: list[str] = field(
        default_factory=lambda: ["drop_nodes", "subgraph", "perturb_edges", "mask_attributes"]
    )
    """The pool each view draws one augmentation from, per batch (the paper's "random4"; its
    "random2" is drop_nodes + subgraph)."""
    ratio: float = 0.2
    """Share of nodes or edges each augmentation changes (the paper's 0.2)."""
    temperature: float = 0.2
    """NT-Xent temperature τ (the paper's 0.2)."""
    proj_dim: int | None = None
    """Projection head width; None = the encoder's width (the paper's head is two layers of it)."""

    def validate(self) -> None:
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if unknown or not self.augmentations:
            raise SelfsupError(
                f"graphcl augmentations must be some of {', '.join(AUGMENTATIONS)}, got {self.augmentations}"
            )
        if not 0 <= self.ratio < 1:
            raise SelfsupError(f"ratio must lie in [0, 1), got {self.ratio}")


class GraphCL(nn.Module):
    def __init__(self, cfg: GraphCLConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        if not callable(getattr(encoder, "forward_nodes", None)):
            raise SelfsupError("graphcl needs a graph encoder (--encoder gin, gcn or gat)")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.embed_dim
        out = cfg.proj_dim or dim
        self.projector = nn.Sequential(
            nn.Linear(dim, out), nn.ReLU(inplace=True), nn.Linear(out, out)
        )
        self.loss = NTXentLoss(cfg.temperature)

    def view(self, graph: object) -> object:
        """One augmentation drawn from the pool, applied to the whole batch."""
        names = self.cfg.augmentations
        name = names[int(torch.randint(len(names), (1,)))]
        return AUGMENTATIONS[name](graph, self.cfg.ratio)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        graph = batch["graph"]
        h1, h2 = self.encoder(self.view(graph)), self.encoder(self.view(graph))  # 2 × (B, D)
        z1, z2 = self.projector(h1), self.projector(h2)
        loss = self.loss(z1, z2)
        return {"loss": loss, "features": h1.detach(), "embedding": z1.detach()}

    def on_step_end(self, progress: float) -> None:
        return None  # no teacher, no schedule
