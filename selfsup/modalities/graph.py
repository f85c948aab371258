"""Graphs: the nodes of one large graph (node classification) or a set of small graphs (graph
classification), batched as PyG ``Data`` under ``{"graph": ...}``.

Sources are in ``selfsup.data.graph``; a node-level batch is the sampled neighbourhood of its
seed nodes, a graph-level batch PyG's ``Batch`` of whole graphs, each made by the data set's
own ``collate``. Encoders are PyG's GCN, GIN and GAT (``selfsup.encoders.graph``). The raw-input
baselines are a logistic regression and kNN on the node features (a graph's mean features) and,
for node-level data, label propagation over the graph from the same labelled nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from selfsup.data.graph import (
    GRAPH_SOURCES,
    GraphSetDataset,
    NodeDataset,
    collate_graphs,
    load_graphs,
)
from selfsup.errors import SelfsupError

if TYPE_CHECKING:
    from selfsup.config import DataConfig, EvalConfig, RunConfig
    from selfsup.data.info import DataInfo
    from selfsup.recipe import Choice


class GraphModality:
    name = "graph"
    input_key = "graph"
    corruptions: tuple[str, ...] = ()
    sources = GRAPH_SOURCES
    default_encoder = "gcn"
    finetune_augment: Callable[[Tensor], Tensor] | None = None

    def owns(self, spec: str) -> bool:
        return spec.partition(":")[0].strip().lower() in self.sources

    def guess(self, spec: str) -> str | None:
        path = Path(spec).expanduser()
        looks = path.suffix in (".npz", ".pt") or (path / "edges.csv").is_file()
        return f"did you mean graph:{spec}?" if looks and path.exists() else None

    def check_data(self, data: DataConfig) -> None:
        return None  # graphs use no image or text options

    def prepare_run(self, data: DataConfig, run_dir: Path) -> None:
        load_graphs(data.name, "train")  # WordNet is parsed and cached once, before workers start

    def load(self, spec: str, split: Any, *, folder: Path | None = None, **options: Any) -> Any:
        del folder, options  # graphs need nothing from the run folder
        return load_graphs(spec, split)

    def run_options(self, data: DataConfig) -> dict[str, Any]:
        return {}

    def eval_options(self, export: dict[str, Any], data: DataConfig | None) -> dict[str, Any]:
        return {}

    def data_info(self, dataset: Any, cfg: RunConfig, folder: Path) -> dict[str, Any]:
        return {"node_features": dataset.num_features}

    def fitted_defaults(self, cfg: RunConfig, info: DataInfo) -> list[Choice]:
        return []  # no option of its methods depends on the data yet

    def encoder_inputs(self, info: DataInfo) -> dict[str, Any]:
        return {"in_channels": info.node_features}

    def export(self, info: DataInfo, folder: Path) -> dict[str, Any]:
        return {
            "node_features": info.node_features,
            "input": {
                "dtype": "PyG Data: x float32 (num_nodes, F), edge_index int64 (2, E), and "
                "center (B,) seed-node positions (node-level) or batch (num_nodes,) (graph-level)"
            },
        }

    def to_input(self, encoder: nn.Module) -> Callable[[Any], Any]:
        return lambda graph: graph

    def check_encoder(self, encoder: nn.Module, dataset: Any, spec: str) -> None:
        expected = (getattr(encoder, "build_args", None) or {}).get("in_channels")
        if expected is not None and dataset.num_features != expected:
            raise SelfsupError(
                f"{spec!r} has {dataset.num_features} features a node but the encoder reads "
                f"{expected}: pass --data with the run's features"
            )

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Whole graphs (graph-level samples); node samples need their data set's collate."""
        return collate_graphs(samples)

    def raw_features(self, train: Any, test: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        """The raw node features (graph-level: each graph's mean)."""
        return features_of(train)[0], features_of(test)[0]

    def decoder(self, info: DataInfo, embed_dim: int) -> nn.Module | None:
        return None  # a batch of graphs is no tensor a decoder regresses

    def example_input(self, encoder: nn.Module, batch_size: int, seed: int = 0) -> Tensor:
        raise SelfsupError(
            "a graph encoder reads a PyG batch (features, edges, batch vector), not one tensor: "
            "ONNX export of graph encoders is not supported yet"
        )

    def corrupted(self, dataset: Any, kind: str, severity: int, seed: int = 0) -> Any:
        from selfsup.modalities import no_shifts

        raise no_shifts(self.name)

    def raw_baseline(
        self,
        train: Any,
        test: Any,
        ev: EvalConfig,
        probes: list[str],
        progress: Callable[[str], None],
    ) -> list[dict[str, Any]]:
        """Linear probe and kNN on the raw node features (graph-level: each graph's mean), and
        label propagation from the same labelled nodes (node-level)."""
        from selfsup.evaluate.features import root_dataset
        from selfsup.evaluate.protocol import FeatureSet, evaluate_features

        train_x, train_y = features_of(train)
        test_x, test_y = features_of(test)
        rows = evaluate_features(
            {"raw": FeatureSet(train_x, train_y, test_x, test_y)},
            fractions=ev.label_fractions,
            seeds=ev.seeds,
            protocols=probes,  # type: ignore[arg-type]
            k=ev.knn_k,
            temperature=ev.knn_temperature,
            progress=progress,
        )
        rows = [{**row, "features": "node features"} for row in rows]
        if isinstance(root_dataset(train), NodeDataset):
            progress("label propagation")
            rows += label_propagation_rows(train, test, ev)
        return rows

    def extra_evaluation(
        self,
        models: dict[str, nn.Module],
        spec: str,
        folder: Path | None,
        options: dict[str, Any],
        ev: EvalConfig,
    ) -> dict[str, list[dict[str, Any]]]:
        return {}

    def tiny_batch(self, batch_size: int, seed: int = 0) -> dict[str, Any]:
        """``batch_size`` rings of 5-8 nodes with a chord, 8 features a node, as PyG's
        ``Batch``; labels alternate."""
        from torch_geometric.data import Data

        g = torch.Generator().manual_seed(seed)
        graphs = []
        for i in range(batch_size):
            n = 5 + i % 4
            ring = torch.arange(n)
            src = torch.cat([ring, (ring + 1) % n, ring[:1], ring[2:3]])
            dst = torch.cat([(ring + 1) % n, ring, ring[2:3], ring[:1]])
            x = torch.randn(n, 8, generator=g)
            graphs.append(
                {
                    "graph": Data(x=x, edge_index=torch.stack([src, dst])),
                    "label": torch.tensor(i % 2),
                }
            )
        return collate_graphs(graphs)


def features_of(dataset: Any) -> tuple[Tensor, Tensor]:
    """Raw features and labels of a node- or graph-level split, through ``Subset``s."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        x, y = features_of(dataset.dataset)
        keep = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return x[keep], y[keep]
    if not isinstance(dataset, (NodeDataset, GraphSetDataset)):
        raise SelfsupError(f"{type(dataset).__name__} is not a graph data set")
    return dataset.features()


def label_propagation_rows(train: Any, test: Any, ev: EvalConfig) -> list[dict[str, Any]]:
    """Label propagation (Zhou et al. 2004; PyG's ``LabelPropagation``, 50 steps, α 0.9) over
    the whole graph from the labelled training nodes of each label fraction and seed, scored
    on the test nodes: what the graph alone knows, without features."""
    from torch.utils.data import Subset
    from torch_geometric.nn.models import LabelPropagation

    from selfsup.evaluate.features import root_dataset
    from selfsup.evaluate.protocol import class_balanced_subset, result_row

    root: NodeDataset = root_dataset(train)
    graph = root.graph
    assert graph.y is not None
    train_nodes = root.nodes
    if isinstance(train, Subset):
        train_nodes = train_nodes[torch.as_tensor(list(train.indices), dtype=torch.long)]
    test_nodes = root_dataset(test).nodes
    propagate = LabelPropagation(num_layers=50, alpha=0.9)
    rows = []
    for fraction in ev.label_fractions:
        seeds = ev.seeds if fraction < 1 else ev.seeds[:1]
        accuracies = []
        for seed in seeds:
            keep = class_balanced_subset(graph.y[train_nodes].numpy(), fraction, seed)
            labelled = train_nodes[torch.as_tensor(keep, dtype=torch.long)]
            mask = torch.zeros(graph.y.shape[0], dtype=torch.bool)
            mask[labelled] = True
            with torch.no_grad():
                scores = propagate(graph.y, graph.edge_index, mask=mask)  # (N, C)
            predicted = scores[test_nodes].argmax(1)
            accuracies.append(float((predicted == graph.y[test_nodes]).float().mean()))
        rows.append(
            {
                **result_row(
                    "label-propagation",
                    "propagation",
                    fraction,
                    accuracies,
                    num_train=int(round(float(np.mean([len(train_nodes) * fraction])))),
                    num_test=len(test_nodes),
                ),
                "features": "graph only",
            }
        )
    return rows


GRAPH = GraphModality()
