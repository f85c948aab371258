"""Views of a graph batch: the masking and dropping rules of GraphMAE and BGRL, as tensor ops
on the whole batch (node features (num_nodes, F), edge_index (2, E)).

Randomness comes from the global generator (the engine seeds it), or ``generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class NodeMask:
    """Which nodes GraphMAE masked and how."""

    masked: Tensor
    """(M,) every masked node: the nodes whose features are reconstructed."""
    token: Tensor
    """(M − R,) masked nodes whose features became the learnable [MASK] token."""
    replaced: Tensor
    """(R,) masked nodes whose features became those of ``sources``."""
    sources: Tensor
    """(R,) random nodes whose features the ``replaced`` nodes take."""


def graphmae_mask(
    num_nodes: int, mask_rate: float, replace_rate: float, generator: torch.Generator | None = None
) -> NodeMask:
    """GraphMAE's node mask: ⌊mask_rate · N⌋ random nodes are masked; of these, ⌊replace_rate ·
    M⌋ take the features of random nodes of the graph (the BERT-style noise that keeps the
    encoder from trusting the token) and the rest take the [MASK] token. The paper's code rounds
    both parts down and leaves the odd node unchanged; here every masked node is one or the
    other."""
    perm = torch.randperm(num_nodes, generator=generator)
    m = int(mask_rate * num_nodes)
    masked = perm[:m]
    r = int(replace_rate * m)
    order = torch.randperm(m, generator=generator)
    sources = torch.randperm(num_nodes, generator=generator)[:r]
    return NodeMask(masked, masked[order[: m - r]], masked[order[m - r :]], sources)


def apply_node_mask(x: Tensor, mask: NodeMask, token: Tensor) -> Tensor:
    """``x`` (N, F) with the token nodes set to ``token`` (1, F) and the replaced nodes to
    their sources' features (the sources' original features, not their masked ones)."""
    out = x.clone()
    out[mask.replaced] = x[mask.sources]
    out[mask.token] = token.to(x.dtype).expand(len(mask.token), -1)
    return out


def drop_edges(edge_index: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """(2, E') the edges each kept with probability 1 − p, independently (BGRL; each direction
    of an undirected edge on its own, as ``dropout_adj`` with ``force_undirected=False``)."""
    if p <= 0:
        return edge_index
    keep = torch.rand(edge_index.shape[1], generator=generator) >= p  # (E,)
    return edge_index[:, keep.to(edge_index.device)]


def drop_feature_columns(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``x`` (N, F) with each feature column zeroed with probability p, the same columns for
    every node (BGRL's feature masking)."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape[1], generator=generator) >= p  # (F,)
    return x * keep.to(x.device, x.dtype)
