"""Graph neural networks from PyTorch Geometric behind the encoder contract.

The input is a PyG ``Data`` (or ``Batch``) as ``selfsup.data.graph`` collates it: node
features ``x`` (num_nodes, F), ``edge_index`` (2, E), and either ``center`` (B,), the
positions of a node-level batch's seed nodes in its sampled neighbourhood, or ``batch``
(num_nodes,), which graph each node of a graph-level batch belongs to. ``forward`` gives one
row per sample: the seed node's embedding, or the mean of a graph's node embeddings;
``forward_nodes`` gives every node's, which node-level methods (GraphMAE, BGRL) train on.

The layers, message passing and pooling are PyG's (``torch_geometric.nn.models.GCN``, ``GIN``,
``GAT``, ``global_mean_pool``); nothing here passes a message by hand.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from selfsup.errors import SelfsupError

GNNKind = Literal["gcn", "gin", "gat"]
NormKind = Literal["batch", "layer", "none"]


def pyg() -> Any:
    """``torch_geometric``, or the one-line error that says how to install it."""
    try:
        import torch_geometric
    except ImportError:
        raise SelfsupError("graphs need PyTorch Geometric: pip install 'selfsup[graph]'") from None
    return torch_geometric


def make_gnn(
    kind: GNNKind,
    in_channels: int,
    hidden: int,
    num_layers: int,
    *,
    out_channels: int | None = None,
    heads: int = 4,
    norm: NormKind = "batch",
    dropout: float = 0.0,
) -> nn.Module:
    """A PyG ``BasicGNN`` of ``kind``: ``gnn(x, edge_index) -> (num_nodes, out or hidden)``;
    PReLU between layers (GraphMAE's and BGRL's activation), none after the last."""
    models = pyg().nn.models
    common: dict[str, Any] = {
        "in_channels": in_channels,
        "hidden_channels": hidden,
        "num_layers": num_layers,
        "out_channels": out_channels,
        "act": "prelu",
        "norm": None if norm == "none" else f"{norm}_norm" if norm == "batch" else "layer_norm",
        "dropout": dropout,
    }
    if kind == "gcn":
        model = models.GCN(**common)
    elif kind == "gin":
        model = models.GIN(**common)
    elif kind == "gat":
        if hidden % heads:
            raise SelfsupError(f"a GAT's width {hidden} must be a multiple of its {heads} heads")
        model = models.GAT(**common, heads=heads)
    else:
        raise SelfsupError(f"unknown GNN kind {kind!r}; choose gcn, gin or gat")
    if num_layers == 1:
        # one layer has no "between": the PReLU would be a parameter no loss reaches, which
        # DDP refuses (a GIN layer's MLP keeps its own reference to it)
        model.act = None
    return model


class GraphEncoder(nn.Module):
    """``embed_dim``; ``forward(graph) -> (B, D)``; ``forward_nodes(x, edge_index) -> (num_nodes, D)``."""

    def __init__(
        self,
        *,
        in_channels: int,
        kind: GNNKind = "gcn",
        hidden: int = 256,
        num_layers: int = 2,
        heads: int = 4,
        norm: NormKind = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.in_channels = in_channels
        self.embed_dim = hidden
        self.gnn = make_gnn(
            kind, in_channels, hidden, num_layers, heads=heads, norm=norm, dropout=dropout
        )

    def forward_nodes(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Every node's embedding (num_nodes, D) from features (num_nodes, F)."""
        if x.shape[-1] != self.in_channels:
            raise SelfsupError(
                f"the graph has {x.shape[-1]} features a node but the encoder reads {self.in_channels}"
            )
        return self.gnn(x.float(), edge_index)

    def readout(self, nodes: Tensor, graph: Any) -> Tensor:
        """(B, D) from node embeddings (num_nodes, D): the seed nodes of a node-level batch,
        else each graph's mean."""
        center = getattr(graph, "center", None)
        if center is not None:
            return nodes[center]
        return pyg().nn.global_mean_pool(
            nodes, getattr(graph, "batch", None), size=getattr(graph, "num_graphs", None)
        )

    def forward(self, graph: Any) -> Tensor:
        return self.readout(self.forward_nodes(graph.x, graph.edge_index), graph)
