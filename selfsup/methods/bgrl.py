"""BGRL: two views of a graph by dropping edges and feature columns; an online GNN and
predictor regress, node by node, the embeddings an EMA target GNN makes of the other view.

Thakoor et al. "Large-Scale Representation Learning on Graphs via Bootstrapping." ICLR 2022.
arXiv:2102.06514.

BYOL on graphs without the projector: the target network is the encoder alone, copied from the
online encoder, re-initialised (the paper's code starts it from other random weights) and then
moved towards the online one by EMA. No negatives, so the cost is linear in the nodes.
Node-level batches are sampled neighbourhoods (``selfsup.data.graph``); the loss covers every
node of the neighbourhood, as the paper's sampled-subgraph runs on ogbn-arxiv do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.engine.teacher import cosine_momentum, ema_update, make_teacher
from selfsup.errors import SelfsupError
from selfsup.losses.bgrl import BGRLLoss
from selfsup.views.graph import drop_edges, drop_feature_columns


@dataclass
class BGRLConfig:
    """BGRL's hyperparameters; the augmentation defaults are the paper's for WikiCS."""

    drop_edge_1: float = 0.2
    """Edge drop probability of view 1 (0.2-0.5 across the paper's data sets)."""
    drop_edge_2: float = 0.3
    drop_feature_1: float = 0.2
    """Feature-column drop probability of view 1 (0.1-0.4 in the paper)."""
    drop_feature_2: float = 0.1
    momentum: float = 0.99
    """Target EMA momentum at the start, raised to 1 by a cosine schedule (the paper's 0.99)."""
    predictor_hidden: int = 512
    """Hidden width of the predictor MLP (the paper's 512)."""

    def validate(self) -> None:
        for name in ("drop_edge_1", "drop_edge_2", "drop_feature_1", "drop_feature_2"):
            if not 0 <= getattr(self, name) < 1:
                raise SelfsupError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.momentum <= 1:
            raise SelfsupError(f"momentum must lie in [0, 1], got {self.momentum}")


def reset_parameters(module: nn.Module) -> None:
    """Draw fresh weights for every layer of ``module`` that knows how (PyG's and torch's)."""
    for layer in module.modules():
        if layer is not module and callable(getattr(layer, "reset_parameters", None)):
            layer.reset_parameters()


class BGRL(nn.Module):
    def __init__(self, cfg: BGRLConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        if not callable(getattr(encoder, "forward_nodes", None)):
            raise SelfsupError("bgrl needs a graph encoder (--encoder gcn, gat or gin)")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.embed_dim
        self.predictor = nn.Sequential(
            nn.Linear(dim, cfg.predictor_hidden),
            nn.BatchNorm1d(cfg.predictor_hidden),
            nn.PReLU(),
            nn.Linear(cfg.predictor_hidden, dim),
        )
        self.target = make_teacher(encoder)
        with torch.no_grad():
            reset_parameters(self.target)
        self.loss = BGRLLoss()

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        graph = batch["graph"]
        c = self.cfg
        views = [
            (drop_feature_columns(graph.x, p_f), drop_edges(graph.edge_index, p_e))
            for p_f, p_e in ((c.drop_feature_1, c.drop_edge_1), (c.drop_feature_2, c.drop_edge_2))
        ]
        h1, h2 = (self.encoder.forward_nodes(x, e) for x, e in views)  # 2 × (N, D)
        q1, q2 = self.predictor(h1), self.predictor(h2)
        with torch.no_grad():
            y1, y2 = (self.target.forward_nodes(x, e) for x, e in views)
        loss = self.loss(q1, q2, y1, y2)
        return {"loss": loss, "features": self.encoder.readout(h1, graph).detach()}

    def on_step_end(self, progress: float) -> None:
        ema_update(self.target, self.encoder, cosine_momentum(self.cfg.momentum, 1.0, progress))
