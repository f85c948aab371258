"""Graph sources: one large graph whose nodes are the samples, or a set of small graphs.

Specs:
    wordnet[:FOLDER]   the WordNet noun graph (``selfsup.data.wordnet``), node-level
    python-ast         the standard library's syntax trees, graph-level
                       (``selfsup.data.syntax_trees``)
    graph:PATH         your own graph: a ``.npz`` (``x`` (N, F), ``edge_index`` (2, E) or
                       ``edges`` (E, 2), optional ``y`` (N,)); a folder with ``edges.csv`` (two
                       integer columns, source and target) and ``nodes.csv`` (one row a node, an
                       optional ``label`` column, every other column a feature); or a ``.pt``
                       holding a PyG ``Data`` (node-level) or a list of ``Data`` (graph-level, one
                       label ``y`` a graph)

A node-level sample is ``{"node": int64, "label": int64}``; its batch is the seed nodes'
sampled neighbourhood, a PyG ``Data`` with ``center`` (B,) marking the seeds (see
``NodeDataset.collate``). A graph-level sample is ``{"graph": Data, "label": int64}``, batched
by PyG's ``Batch.from_data_list``. Either way the batch's input key is ``"graph"``.

PyG's ``NeighborLoader`` needs ``pyg-lib`` or ``torch-sparse``, which have no wheels for this
torch; ``sample_neighbours`` draws the same per-hop fan-out with torch ops, and PyG's
``subgraph`` cuts out the induced subgraph of what it drew.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.cache import cache_dir
from selfsup.encoders.graph import pyg
from selfsup.errors import SelfsupError

Split = Literal["train", "test"]

GRAPH_SOURCES: dict[str, str] = {
    "wordnet": (
        "WordNet nouns: 82,115 synsets, noun-to-noun pointers as edges, a 1,000-word bag of "
        "words of the gloss as features, 26 lexicographer files as labels (node-level); "
        "`sudo apt-get install wordnet-base`; 80/20 node split, seed 0"
    ),
    "python-ast": (
        "the syntax trees of the Python standard library: one graph a function, method or "
        "class (one-hot AST node types, parent-child edges), labelled by its package (20 "
        "packages of 100+ units, ~10k graphs); graph-level; ~20% of the modules to test by "
        "hash; no download"
    ),
    "graph": (
        "your own graph, graph:PATH: .npz (x, edge_index, optional y), a folder with "
        "edges.csv + nodes.csv, or a .pt of a PyG Data (node-level) or a list of Data "
        "(graph-level); seeded 80/20 split"
    ),
}

FANOUT = (10, 10)
"""Neighbours drawn per node and hop for a node-level batch (GraphSAGE's 25/10 is for 128+
dimensional batches on a GPU; 10/10 keeps a CPU step under a second for 256 seeds)."""
TEST_FRACTION = 0.2


@dataclass
class NodeGraph:
    """One graph whose nodes are the samples."""

    x: Tensor
    """(N, F) features, float32 or uint8 (a binary bag of words, 4× smaller)."""
    edge_index: Tensor
    """(2, E) int64, messages flow from row 0 to row 1."""
    y: Tensor | None
    """(N,) int64 labels, or None."""
    class_names: list[str]


def check_graph(x: Tensor, edge_index: Tensor, y: Tensor | None, where: str) -> None:
    """One-line errors for what would fail later, deep inside a GNN."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise SelfsupError(
            f"{where}: node features must be (N, F) with N > 0, got {tuple(x.shape)}"
        )
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise SelfsupError(f"{where}: edge_index must be (2, E), got {tuple(edge_index.shape)}")
    if edge_index.shape[1] == 0:
        raise SelfsupError(f"{where}: the graph has no edges; a GNN needs neighbours to learn from")
    if edge_index.is_floating_point():
        raise SelfsupError(f"{where}: edge_index must hold integer node ids")
    low, high = int(edge_index.min()), int(edge_index.max())
    if low < 0 or high >= x.shape[0]:
        bad = low if low < 0 else high
        raise SelfsupError(
            f"{where}: an edge names node {bad} but the graph has nodes 0..{x.shape[0] - 1}"
        )
    if y is not None and y.shape[0] != x.shape[0]:
        raise SelfsupError(f"{where}: {y.shape[0]} labels for {x.shape[0]} nodes")


def split_indices(n: int, split: Split, seed: int = 0) -> Tensor:
    """The sample indices of ``split``: a seeded permutation, the last 20% for test."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = n - max(1, round(TEST_FRACTION * n))
    return (order[:cut] if split == "train" else order[cut:]).sort().values


def sample_neighbours(
    rowptr: Tensor, col: Tensor, seeds: Tensor, fanout: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    """The seeds and up to ``fanout[h]`` random neighbours of every node reached at hop h.

    ``rowptr`` (N + 1,) and ``col`` (E,) are the graph in CSR by target node: the neighbours
    of node v are ``col[rowptr[v]:rowptr[v + 1]]``. Returns the nodes reached (unique, sorted).
    """
    reached, frontier = [seeds], seeds
    for k in fanout:
        start, deg = rowptr[frontier], rowptr[frontier + 1] - rowptr[frontier]  # (F,)
        owner = torch.repeat_interleave(torch.arange(len(frontier)), deg)  # (S,) slot -> node
        first = torch.cumsum(deg, 0) - deg  # (F,) each node's first slot
        slot = start[owner] + torch.arange(len(owner)) - first[owner]  # (S,) positions in col
        keys = torch.rand(len(owner), generator=generator)  # (S,) a random order per node
        order = torch.argsort(keys)
        order = order[torch.argsort(owner[order], stable=True)]  # by node, random within
        rank = torch.arange(len(order)) - first[owner[order]]  # (S,) 0, 1, ... per node
        frontier = col[slot[order][rank < k]].unique()
        reached.append(frontier)
    return torch.cat(reached).unique()


class NodeDataset(Dataset):
    """The nodes of one split of a ``NodeGraph``; batches are their sampled neighbourhoods."""

    input_key = "graph"
    in_memory = False  # batches go through ``collate``, never stacked

    def __init__(self, graph: NodeGraph, split: Split, name: str, fanout: tuple[int, ...] = FANOUT):
        self.graph = graph
        self.name = name
        self.nodes = split_indices(graph.x.shape[0], split)
        self.fanout = fanout
        self.class_names = graph.class_names
        self.has_labels = graph.y is not None
        self.num_features = graph.x.shape[1]
        target = graph.edge_index[1]
        order = torch.argsort(target, stable=True)
        self._col = graph.edge_index[0][order]  # (E,) sources by target
        counts = torch.bincount(target, minlength=graph.x.shape[0])
        self._rowptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        node = self.nodes[index]
        sample = {"node": node}
        if self.graph.y is not None:
            sample["label"] = self.graph.y[node]
        return sample

    def labels(self) -> Tensor:
        if self.graph.y is None:
            raise SelfsupError(f"{self.name} has no node labels")
        return self.graph.y[self.nodes]

    def collate(self, samples: list[dict[str, Tensor]]) -> dict[str, Any]:
        """The seeds' sampled neighbourhood as one PyG ``Data`` (float features, the induced
        edges, ``center`` (B,) the seeds' positions) and their labels. The draw is seeded by
        the seeds, so a batch is the same in training, on resume and in evaluation."""
        seeds = torch.stack([s["node"] for s in samples])  # (B,)
        digest = hashlib.blake2b(seeds.numpy().tobytes(), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        nodes = sample_neighbours(self._rowptr, self._col, seeds, self.fanout, generator)
        edge_index, _ = pyg().utils.subgraph(
            nodes, self.graph.edge_index, relabel_nodes=True, num_nodes=self.graph.x.shape[0]
        )
        center = torch.searchsorted(nodes, seeds)  # (B,) nodes is sorted
        data = pyg().data.Data(x=self.graph.x[nodes].float(), edge_index=edge_index, center=center)
        batch: dict[str, Any] = {"graph": data}
        if "label" in samples[0]:
            batch["label"] = torch.stack([s["label"] for s in samples])
        return batch

    def features(self) -> tuple[Tensor, Tensor]:
        """The split's raw node features (n, F) float32 and labels (n,): the raw baseline's input."""
        return self.graph.x[self.nodes].float(), self.labels()


class GraphSetDataset(Dataset):
    """One split of a set of graphs, one label each."""

    input_key = "graph"
    in_memory = False

    def __init__(self, graphs: list[Any], split: Split, name: str) -> None:
        self.name = name
        keep = split_indices(len(graphs), split)
        self.graphs = [graphs[i] for i in keep.tolist()]
        self.has_labels = all(getattr(g, "y", None) is not None for g in graphs)
        y = [int(g.y.reshape(-1)[0]) for g in graphs] if self.has_labels else []
        self.class_names = [str(c) for c in sorted(set(y))]
        self._labels = torch.tensor([y[i] for i in keep.tolist()]) if y else None
        self.num_features = graphs[0].x.shape[1]

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        graph = self.graphs[index]
        sample: dict[str, Any] = {"graph": graph}
        if self._labels is not None:
            sample["label"] = self._labels[index]
        return sample

    def labels(self) -> Tensor:
        if self._labels is None:
            raise SelfsupError(f"{self.name}: not every graph has a label y")
        return self._labels

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_graphs(samples)

    def features(self) -> tuple[Tensor, Tensor]:
        """Each graph's mean node features (n, F): the raw baseline's input."""
        return torch.stack([g.x.float().mean(0) for g in self.graphs]), self.labels()


def collate_graphs(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whole graphs batched by PyG's ``Batch.from_data_list`` (features as float32), and the
    labels."""
    if "graph" not in samples[0]:
        raise SelfsupError(
            "node samples batch through their data set's collate, which holds the graph"
        )
    batch: dict[str, Any] = {
        "graph": pyg().data.Batch.from_data_list([s["graph"] for s in samples])
    }
    batch["graph"].x = batch["graph"].x.float()
    if "label" in samples[0]:
        batch["label"] = torch.stack([torch.as_tensor(s["label"]) for s in samples])
    return batch


def load_graphs(spec: str, split: Split) -> NodeDataset | GraphSetDataset:
    """One split of the graph source ``spec``."""
    prefix, _, rest = spec.partition(":")
    if prefix == "wordnet":
        return NodeDataset(wordnet_graph(Path(rest) if rest else None), split, spec)
    if prefix == "python-ast":
        from selfsup.data.syntax_trees import load_syntax_trees

        if rest:
            raise SelfsupError(
                f"{spec!r}: python-ast takes no argument (it is the standard library)"
            )
        return load_syntax_trees(split, spec)
    if prefix != "graph" or not rest:
        raise SelfsupError(f"unknown graph source {spec!r}; use wordnet, python-ast or graph:PATH")
    path = Path(rest).expanduser()
    if not path.exists():
        raise SelfsupError(f"{spec}: {path} does not exist")
    loaded = (
        _read_pt(path)
        if path.suffix == ".pt"
        else _read_npz(path)
        if path.suffix == ".npz"
        else _read_csv(path)
    )
    if isinstance(loaded, list):
        return GraphSetDataset(loaded, split, spec)
    return NodeDataset(loaded, split, spec)


def wordnet_graph(folder: Path | None) -> NodeGraph:
    """The WordNet noun graph, parsed once and cached as .npz (parsing takes ~10 s)."""
    from selfsup.data.wordnet import LEXNAMES, WORDNET_DIR, read_wordnet_nouns, wordnet_noun_file

    source = wordnet_noun_file(folder or WORDNET_DIR)
    stat = source.stat()
    key = hashlib.sha1(
        f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()[:12]
    cached = cache_dir("wordnet") / f"nouns-{key}.npz"
    if not cached.is_file():
        x, edges, y, words = read_wordnet_nouns(source)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, x=x, edge_index=edges, y=y, words=np.array(words))
        tmp.replace(cached)
    with np.load(cached) as f:
        return NodeGraph(
            torch.from_numpy(f["x"]),
            torch.from_numpy(f["edge_index"]),
            torch.from_numpy(f["y"]),
            LEXNAMES,
        )


def _node_graph(x: Tensor, edge_index: Tensor, y: Tensor | None, where: str) -> NodeGraph:
    edge_index = edge_index.long() if not edge_index.is_floating_point() else edge_index
    check_graph(x, edge_index, y, where)
    names: list[str] = []
    if y is not None:
        values, y = torch.unique(y, return_inverse=True)
        names = [str(v) for v in values.tolist()]
    if not x.is_floating_point():
        x = x.float()
    return NodeGraph(x.float(), edge_index, y, names)


def _read_npz(path: Path) -> NodeGraph:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise SelfsupError(f"{path}: not a readable .npz ({e})") from None
    if "x" not in arrays:
        raise SelfsupError(f"{path}: no node features 'x' (keys: {', '.join(arrays) or 'none'})")
    if "edge_index" in arrays:
        edges = arrays["edge_index"]
    elif "edges" in arrays:
        edges = arrays["edges"].T
    else:
        raise SelfsupError(f"{path}: no 'edge_index' (2, E) or 'edges' (E, 2)")
    y = torch.from_numpy(arrays["y"]).long() if "y" in arrays else None
    return _node_graph(
        torch.from_numpy(arrays["x"]), torch.from_numpy(np.asarray(edges)), y, str(path)
    )


def _read_csv(folder: Path) -> NodeGraph:
    """``edges.csv`` (source, target; a header row is allowed) and ``nodes.csv`` (a header, then
    one row a node: an optional ``label`` column, every other column a feature)."""
    edges_file, nodes_file = folder / "edges.csv", folder / "nodes.csv"
    for f in (edges_file, nodes_file):
        if not f.is_file():
            raise SelfsupError(
                f"{folder}: a CSV graph needs edges.csv and nodes.csv, {f.name} is missing"
            )
    edges = _csv_rows(edges_file)
    if edges and not edges[0][0].strip().lstrip("-").isdigit():
        edges = edges[1:]  # a header
    if any(len(r) != 2 for r in edges):
        raise SelfsupError(f"{edges_file}: every row must be two node ids (source, target)")
    header, *rows = _csv_rows(nodes_file) or [[]]
    if not rows:
        raise SelfsupError(f"{nodes_file} holds no nodes")
    lengths = sorted({len(r) for r in rows} - {len(header)})
    if lengths:
        raise SelfsupError(
            f"{nodes_file}: rows of {lengths[0]} values under a header of {len(header)}; every node "
            "needs the same number of features"
        )
    label = header.index("label") if "label" in header else None
    try:
        pairs = [[int(a), int(b)] for a, b in edges]
        table = [[float(v) for j, v in enumerate(r) if j != label] for r in rows]
        y = torch.tensor([int(float(r[label])) for r in rows]) if label is not None else None
    except ValueError as e:
        raise SelfsupError(f"{folder}: a value is not a number ({e})") from None
    edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T
    return _node_graph(torch.tensor(table, dtype=torch.float32), edge_index, y, str(folder))


def _csv_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [r for r in csv.reader(f) if r]
    except UnicodeDecodeError:
        raise SelfsupError(f"{path} is not UTF-8 text") from None


def _read_pt(path: Path) -> NodeGraph | list[Any]:
    """A PyG ``Data`` or a list of them, loaded with ``weights_only=True`` (PyG's data
    classes are the only globals allowed)."""
    from torch_geometric.data import Data
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage

    safe = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]
    try:
        with torch.serialization.safe_globals(safe):
            loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise SelfsupError(
            f"{path}: not a saved PyG Data or list of Data ({str(e).splitlines()[0]})"
        ) from None
    if isinstance(loaded, dict):
        loaded = Data(**loaded)
    if isinstance(loaded, Data):
        return _node_graph(loaded.x, loaded.edge_index, getattr(loaded, "y", None), str(path))
    if not isinstance(loaded, list) or not loaded or not all(isinstance(g, Data) for g in loaded):
        raise SelfsupError(f"{path}: expected a PyG Data or a non-empty list of Data")
    widths = {g.x.shape[1] if g.x is not None and g.x.ndim == 2 else -1 for g in loaded}
    if len(widths) != 1 or -1 in widths:
        raise SelfsupError(
            f"{path}: every graph needs node features x of one width, got {sorted(widths)}"
        )
    for i, g in enumerate(loaded):
        check_graph(g.x, g.edge_index, None, f"{path}, graph {i}")
    return loaded
