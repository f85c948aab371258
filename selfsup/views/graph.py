"""Views of a graph batch: the masking and dropping rules of GraphMAE, BGRL and GraphCL, as
tensor ops on the whole batch (node features (num_nodes, F), edge_index (2, E)); GraphCL's
subgraph walk is a loop over each graph's nodes (graph-level batches are small graphs).

Randomness comes from the global generator (the engine seeds it), or ``generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


# ---- GraphCL ------------------------------------------------------------------------------


def graph_of_node(graph: Any) -> Tensor:
    """(N,) which graph of a batch each node belongs to (all 0 for one graph)."""
    batch = getattr(graph, "batch", None)
    return batch if batch is not None else torch.zeros(graph.num_nodes, dtype=torch.long)


def choose_per_graph(
    owner: Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
    spare: Tensor | None = None,
) -> Tensor:
    """(N,) bool: ⌊ratio · n_g⌋ random nodes of every graph g (``owner`` (N,) names each node's
    graph), never a node in ``spare`` (the seed nodes of a node-level batch)."""
    n = owner.shape[0]
    keys = torch.rand(n, generator=generator)
    sizes = torch.bincount(owner)  # (G,)
    if spare is not None:
        keys[spare] = 2.0  # last in every order: chosen only if nothing else is left
        sizes = sizes - torch.bincount(owner[spare], minlength=len(sizes))
    order = torch.argsort(keys)
    order = order[torch.argsort(owner[order], stable=True)]  # by graph, random within
    first = torch.cumsum(torch.bincount(owner), 0) - torch.bincount(owner)  # (G,)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - first[owner[order]]
    quota = torch.floor(ratio * sizes.clamp(min=0).double()).long()  # (G,)
    return rank < quota[owner]


def keep_nodes(graph: Any, keep: Tensor) -> Any:
    """``graph`` cut to the nodes where ``keep`` (N,) is True: PyG's ``subgraph`` relabels the
    edges; ``batch`` and ``center`` follow."""
    from torch_geometric.data import Data
    from torch_geometric.utils import subgraph

    edge_index, _ = subgraph(keep, graph.edge_index, relabel_nodes=True, num_nodes=graph.num_nodes)
    out = Data(x=graph.x[keep], edge_index=edge_index)
    new_id = torch.cumsum(keep.long(), 0) - 1  # (N,) position among the kept
    if getattr(graph, "batch", None) is not None:
        out.batch = graph.batch[keep]
        out.num_graphs = graph.num_graphs
    if getattr(graph, "center", None) is not None:
        out.center = new_id[graph.center]
    return out


def drop_nodes(graph: Any, ratio: float, generator: torch.Generator | None = None) -> Any:
    """GraphCL's node dropping: ⌊ratio · n⌋ random nodes of every graph removed with their
    edges (seed nodes are kept)."""
    owner = graph_of_node(graph)
    dropped = choose_per_graph(owner, ratio, generator, getattr(graph, "center", None))
    return keep_nodes(graph, ~dropped)


def perturb_edges(graph: Any, ratio: float, generator: torch.Generator | None = None) -> Any:
    """GraphCL's edge perturbation: ⌊ratio · E⌋ random edges dropped and as many added, each
    between two random nodes of one graph."""
    e = graph.edge_index.shape[1]
    k = int(ratio * e)
    kept = graph.edge_index[:, torch.randperm(e, generator=generator)[: e - k]]
    owner = graph_of_node(graph)
    sizes = torch.bincount(owner)
    starts = torch.cumsum(sizes, 0) - sizes  # (G,) first node of every graph
    src = torch.randint(0, graph.num_nodes, (k,), generator=generator)
    g = owner[src]
    dst = starts[g] + (torch.rand(k, generator=generator) * sizes[g]).long()
    out = graph.clone()  # features, batch and seeds as they were
    out.edge_index = torch.cat([kept, torch.stack([src, dst])], 1)
    return out


def mask_attributes(graph: Any, ratio: float, generator: torch.Generator | None = None) -> Any:
    """GraphCL's attribute masking: the features of ⌊ratio · n⌋ random nodes of every graph
    replaced by Gaussian noise N(0.5, 0.5²), as the paper's code does."""
    masked = choose_per_graph(graph_of_node(graph), ratio, generator)
    out = graph.clone()
    noise = 0.5 + 0.5 * torch.randn(int(masked.sum()), graph.x.shape[1], generator=generator)
    out.x = graph.x.clone()
    out.x[masked] = noise.to(graph.x.dtype)
    return out


def random_walk_subgraph(graph: Any, ratio: float, generator: torch.Generator | None = None) -> Any:
    """GraphCL's subgraph: from one random node of every graph (a seed node, if any), grow the
    kept set by one random neighbour of the set at a time until it holds ⌈(1 − ratio) · n⌉
    nodes or has no neighbour left; the rest are removed."""
    owner = graph_of_node(graph)
    n = graph.num_nodes
    neighbours = [[] for _ in range(n)]  # type: list[list[int]]
    for s, t in graph.edge_index.T.tolist():
        neighbours[s].append(t)
        neighbours[t].append(s)
    keep = torch.zeros(n, dtype=torch.bool)
    center = getattr(graph, "center", None)
    draws = iter(torch.rand(2 * n + 1, generator=generator).tolist())  # one a pick, enough
    for g, nodes in enumerate(_nodes_by_graph(owner)):
        if not nodes:
            continue
        target = math.ceil((1 - ratio) * len(nodes))
        starts = [c for c in (center.tolist() if center is not None else []) if owner[c] == g]
        chosen = set(starts) or {nodes[int(next(draws) * len(nodes))]}
        border = sorted({t for v in chosen for t in neighbours[v]} - chosen)
        in_border = set(border)
        while len(chosen) < target and border:
            at = int(next(draws) * len(border))
            border[at], border[-1] = border[-1], border[at]  # a uniform pick, popped in O(1)
            pick = border.pop()
            in_border.discard(pick)
            chosen.add(pick)
            for t in neighbours[pick]:
                if t not in chosen and t not in in_border:
                    in_border.add(t)
                    border.append(t)
        keep[list(chosen)] = True
    return keep_nodes(graph, keep)


def _nodes_by_graph(owner: Tensor) -> list[list[int]]:
    groups: list[list[int]] = [[] for _ in range(int(owner.max()) + 1 if len(owner) else 0)]
    for node, g in enumerate(owner.tolist()):
        groups[g].append(node)
    return groups
