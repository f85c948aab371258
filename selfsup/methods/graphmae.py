"""GraphMAE: mask the features of half the nodes, encode the graph, and reconstruct the masked
features with a one-layer GNN decoder, scored by the scaled cosine error.

Hou et al. "GraphMAE: Self-Supervised Masked Graph Autoencoders." KDD 2022. arXiv:2205.10803.

The masked nodes' features become a learnable [MASK] token (a share ``replace_rate`` of them
take a random node's features instead); the encoder sees the whole graph; its output passes a
bias-free linear map, the masked nodes' codes are set to zero again ("re-mask", so the decoder
must rebuild them from their neighbours), and a one-layer GNN of the encoder's kind decodes
every node's features. Only the masked nodes are scored. Node-level batches here are sampled
neighbourhoods (``selfsup.data.graph``), not the whole graph the paper trains on; masking and
loss cover every node of the neighbourhood.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.encoders.graph import make_gnn
from selfsup.errors import SelfsupError
from selfsup.losses.sce import ScaledCosineError
from selfsup.views.graph import apply_node_mask, graphmae_mask


@dataclass
class GraphMAEConfig:
    """GraphMAE's hyperparameters; defaults are the paper's for Cora (configs.yml)."""

    mask_rate: float = 0.5
    """Share of nodes masked (0.5 on Cora and Citeseer, 0.75 on PubMed and Reddit)."""
    replace_rate: float = 0.05
    """Share of the masked nodes given a random node's features instead of the token (0.05 on
    Cora, 0.1-0.15 on larger graphs; 0 turns it off)."""
    gamma: float = 3.0
    """Power of the scaled cosine error (3 on Cora; 1-2 on graph-level sets)."""

    def validate(self) -> None:
        if not 0 < self.mask_rate < 1:
            raise SelfsupError(f"mask_rate must lie in (0, 1), got {self.mask_rate}")
        if not 0 <= self.replace_rate < 1:
            raise SelfsupError(f"replace_rate must lie in [0, 1), got {self.replace_rate}")
        if self.gamma < 1:
            raise SelfsupError(f"gamma must be at least 1, got {self.gamma}")


class GraphMAE(nn.Module):
    def __init__(self, cfg: GraphMAEConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        if not callable(getattr(encoder, "forward_nodes", None)):
            raise SelfsupError("graphmae needs a graph encoder (--encoder gat, gcn or gin)")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        features, dim = encoder.in_channels, encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, features))
        self.encoder_to_decoder = nn.Linear(dim, dim, bias=False)
        self.decoder = make_gnn(encoder.kind, dim, dim, 1, out_channels=features, heads=1)
        self.loss = ScaledCosineError(cfg.gamma)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        graph = batch["graph"]
        x = graph.x  # (N, F)
        mask = graphmae_mask(x.shape[0], self.cfg.mask_rate, self.cfg.replace_rate)
        nodes = self.encoder.forward_nodes(
            apply_node_mask(x, mask, self.mask_token), graph.edge_index
        )
        code = self.encoder_to_decoder(nodes)  # (N, D)
        code = code.index_fill(0, mask.masked.to(code.device), 0.0)  # re-mask
        recon = self.decoder(code, graph.edge_index)  # (N, F)
        loss = self.loss(recon[mask.masked], x[mask.masked])
        return {"loss": loss, "features": self.encoder.readout(nodes, graph).detach()}

    def on_step_end(self, progress: float) -> None:
        return None  # no teacher, no schedule
