"""Graphs: sources and their bad input, neighbourhood sampling, GraphMAE's masking and SCE loss,
BGRL's views and loss (each against a slow reference), the PyG encoders, and a tiny run."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "torch_geometric", reason="graphs need PyTorch Geometric: pip install 'selfsup[graph]'"
)

from torch_geometric.data import Data  # noqa: E402
from torch_geometric.utils import k_hop_subgraph  # noqa: E402

from selfsup.data.graph import collate_graphs, load_graphs, sample_neighbours  # noqa: E402
from selfsup.data.info import DataInfo  # noqa: E402
from selfsup.encoders import build_encoder  # noqa: E402
from selfsup.errors import SelfsupError  # noqa: E402
from selfsup.losses import BGRLLoss, ScaledCosineError  # noqa: E402
from selfsup.methods import build_method  # noqa: E402
from selfsup.views.graph import (  # noqa: E402
    apply_node_mask,
    choose_per_graph,
    drop_edges,
    drop_feature_columns,
    drop_nodes,
    graphmae_mask,
    keep_nodes,
    mask_attributes,
    perturb_edges,
    random_walk_subgraph,
)

REPO = Path(__file__).resolve().parents[1]


def community_graph(path: Path, n: int = 120, classes: int = 3, seed: int = 0) -> Path:
    """Nodes of ``classes`` communities (90% of edges inside one), 12 noisy features with a
    weak class signal; saved as graph.npz."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    src = rng.integers(0, n, 6 * n)
    same = rng.random(len(src)) < 0.9
    dst = np.where(
        same,
        (src + classes * rng.integers(1, n // classes, len(src))) % n,
        rng.integers(0, n, len(src)),
    )
    x = rng.normal(size=(n, 12)).astype(np.float32)
    x[np.arange(n), y] += 0.7
    keep = src != dst
    edges = np.stack([np.r_[src[keep], dst[keep]], np.r_[dst[keep], src[keep]]])
    np.savez(path, x=x, edge_index=edges, y=y)
    return path


# ---- losses against slow references ---------------------------------------------------------


@pytest.mark.parametrize("gamma", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(1, 3), (7, 5)])
def test_sce_matches_a_slow_reference(gamma, shape):
    g = torch.Generator().manual_seed(0)
    recon, target = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    target[0] = 0.0  # a node without features counts as cosine 0
    terms = []
    for r, t in zip(recon.tolist(), target.tolist(), strict=True):
        dot = sum(a * b for a, b in zip(r, t, strict=True))
        norms = math.sqrt(sum(a * a for a in r)) * math.sqrt(sum(b * b for b in t))
        cosine = dot / norms if norms > 0 else 0.0
        terms.append((1 - cosine) ** gamma)
    expected = sum(terms) / len(terms)
    assert ScaledCosineError(gamma)(recon, target).item() == pytest.approx(expected, rel=1e-5)


def test_sce_is_zero_for_a_perfect_reconstruction_at_any_scale():
    x = torch.rand(6, 4) + 0.1
    assert ScaledCosineError(2.0)(3 * x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_bgrl_loss_matches_a_slow_reference():
    g = torch.Generator().manual_seed(1)
    q1, q2, y1, y2 = (torch.randn(5, 4, generator=g) for _ in range(4))

    def cos(u, v):
        dot = sum(a * b for a, b in zip(u, v, strict=True))
        return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    expected = 2 - np.mean([cos(a, b) for a, b in zip(q1.tolist(), y2.tolist(), strict=True)])
    expected -= np.mean([cos(a, b) for a, b in zip(q2.tolist(), y1.tolist(), strict=True)])
    assert BGRLLoss()(q1, q2, y1, y2).item() == pytest.approx(expected, rel=1e-5)
    assert BGRLLoss()(y2, y1, y1, y2).item() == pytest.approx(0.0, abs=1e-6)


# ---- views ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n,rate,replace", [(100, 0.5, 0.05), (37, 0.75, 0.1), (10, 0.5, 0.0)])
def test_graphmae_mask_counts_and_parts(n, rate, replace):
    mask = graphmae_mask(n, rate, replace, torch.Generator().manual_seed(0))
    m = int(rate * n)
    assert len(mask.masked) == m == len(set(mask.masked.tolist()))
    assert len(mask.replaced) == len(mask.sources) == int(replace * m)
    token, replaced = set(mask.token.tolist()), set(mask.replaced.tolist())
    assert not token & replaced and token | replaced == set(mask.masked.tolist())


def test_applied_mask_matches_a_slow_reference():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 6, generator=g)
    token = torch.randn(1, 6, generator=g)
    mask = graphmae_mask(30, 0.5, 0.3, torch.Generator().manual_seed(3))
    out = apply_node_mask(x, mask, token)
    rows = [list(map(float, r)) for r in x]
    expected = [list(r) for r in rows]
    for node, source in zip(mask.replaced.tolist(), mask.sources.tolist(), strict=True):
        expected[node] = list(rows[source])  # the source's original features
    for node in mask.token.tolist():
        expected[node] = token[0].tolist()
    torch.testing.assert_close(out, torch.tensor(expected))
    assert len(mask.replaced) == 4  # int(0.3 * 15)


def test_masked_token_gets_a_gradient():
    x = torch.randn(20, 4)
    token = torch.zeros(1, 4, requires_grad=True)
    out = apply_node_mask(x, graphmae_mask(20, 0.5, 0.0), token)
    out.sum().backward()
    assert token.grad is not None and token.grad.abs().sum() > 0


def test_bgrl_views_drop_edges_and_whole_feature_columns():
    g = torch.Generator().manual_seed(0)
    edges = torch.randint(0, 50, (2, 4000), generator=g)
    kept = drop_edges(edges, 0.3, torch.Generator().manual_seed(1))
    assert 0.65 < kept.shape[1] / 4000 < 0.75
    pairs = set(map(tuple, edges.T.tolist()))
    assert set(map(tuple, kept.T.tolist())) <= pairs
    x = torch.rand(40, 200) + 0.1
    dropped = drop_feature_columns(x, 0.4, torch.Generator().manual_seed(2))
    zero_columns = (dropped == 0).all(0)
    assert ((dropped == 0).any(0) == zero_columns).all()  # a column is dropped for every node
    assert 0.3 < zero_columns.float().mean() < 0.5
    torch.testing.assert_close(dropped[:, ~zero_columns], x[:, ~zero_columns])
    assert drop_edges(edges, 0.0) is edges and drop_feature_columns(x, 0.0) is x


def graph_set(sizes=(7, 9, 12), seed=0):
    """A PyG Batch of rings with random chords, 5 features a node."""
    from torch_geometric.data import Batch

    g = torch.Generator().manual_seed(seed)
    graphs = []
    for n in sizes:
        ring = torch.arange(n)
        chords = torch.randint(0, n, (2, n // 2), generator=g)
        edges = torch.cat([torch.stack([ring, (ring + 1) % n]), chords], 1)
        edges = torch.cat([edges, edges.flip(0)], 1)
        graphs.append(Data(x=torch.randn(n, 5, generator=g), edge_index=edges))
    return Batch.from_data_list(graphs)


def test_choose_per_graph_takes_the_floor_share_of_every_graph_and_spares_seeds():
    owner = torch.tensor([0] * 7 + [1] * 9 + [2] * 12)
    spare = torch.tensor([0, 1, 7])
    chosen = choose_per_graph(owner, 0.35, torch.Generator().manual_seed(0), spare)
    counts = [int(chosen[owner == g].sum()) for g in range(3)]
    assert counts == [int(0.35 * 5), int(0.35 * 8), int(0.35 * 12)]
    assert not chosen[spare].any()


def test_keep_nodes_matches_a_slow_reference():
    graph = graph_set()
    keep = torch.rand(graph.num_nodes, generator=torch.Generator().manual_seed(1)) < 0.6
    out = keep_nodes(graph, keep)
    kept = [i for i in range(graph.num_nodes) if keep[i]]
    new = {old: i for i, old in enumerate(kept)}
    edges = sorted(
        (new[s], new[t]) for s, t in graph.edge_index.T.tolist() if s in new and t in new
    )
    assert sorted(map(tuple, out.edge_index.T.tolist())) == edges
    torch.testing.assert_close(out.x, graph.x[kept])
    assert out.batch.tolist() == [int(graph.batch[i]) for i in kept]


def test_graphcl_node_dropping_and_attribute_masking_per_graph():
    graph = graph_set()
    dropped = drop_nodes(graph, 0.2, torch.Generator().manual_seed(0))
    assert torch.bincount(dropped.batch).tolist() == [7 - 1, 9 - 1, 12 - 2]
    masked = mask_attributes(graph, 0.2, torch.Generator().manual_seed(0))
    changed = (masked.x != graph.x).any(1)
    assert [int(changed[graph.batch == g].sum()) for g in range(3)] == [1, 1, 2]
    assert torch.equal(masked.edge_index, graph.edge_index)


def test_graphcl_edge_perturbation_drops_and_adds_inside_graphs():
    graph = graph_set()
    e = graph.edge_index.shape[1]
    out = perturb_edges(graph, 0.2, torch.Generator().manual_seed(0))
    assert out.edge_index.shape[1] == e
    before = {}
    for pair in map(tuple, graph.edge_index.T.tolist()):
        before[pair] = before.get(pair, 0) + 1
    for pair in map(tuple, out.edge_index.T.tolist()):
        before[pair] = before.get(pair, 0) - 1
    assert sum(v for v in before.values() if v > 0) >= int(0.2 * e) - 2  # dropped (re-adds aside)
    assert (graph.batch[out.edge_index[0]] == graph.batch[out.edge_index[1]]).all()


def test_graphcl_subgraph_is_connected_and_of_the_kept_size():
    graph = graph_set()
    out = random_walk_subgraph(graph, 0.2, torch.Generator().manual_seed(0))
    assert torch.bincount(out.batch).tolist() == [math.ceil(0.8 * n) for n in (7, 9, 12)]
    for g in range(3):  # each kept part is connected: a walk from one node reaches all
        nodes = set((out.batch == g).nonzero().flatten().tolist())
        links = [(s, t) for s, t in out.edge_index.T.tolist() if s in nodes]
        seen, todo = set(), [min(nodes)]
        while todo:
            v = todo.pop()
            if v not in seen:
                seen.add(v)
                todo += [t for s, t in links if s == v]
        assert seen == nodes


def test_node_level_views_keep_the_seeds(tmp_path):
    data = load_graphs(f"graph:{community_graph(tmp_path / 'g.npz')}", "train")
    graph = data.collate([data[i] for i in range(8)])["graph"]
    for view in (drop_nodes(graph, 0.5), random_walk_subgraph(graph, 0.5)):
        torch.testing.assert_close(view.x[view.center], graph.x[graph.center])


# ---- neighbourhood sampling -----------------------------------------------------------------


def _csr(edge_index, n):
    order = torch.argsort(edge_index[1], stable=True)
    counts = torch.bincount(edge_index[1], minlength=n)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]), edge_index[0][order]


def test_unbounded_fanout_reaches_what_k_hop_subgraph_reaches():
    g = torch.Generator().manual_seed(0)
    edges = torch.randint(0, 200, (2, 500), generator=g)
    rowptr, col = _csr(edges, 200)
    seeds = torch.tensor([3, 50, 120])
    reached = sample_neighbours(rowptr, col, seeds, (1000, 1000), torch.Generator())
    expected, _, _, _ = k_hop_subgraph(seeds, 2, edges, num_nodes=200, flow="source_to_target")
    assert reached.tolist() == sorted(expected.tolist())


def test_fanout_bounds_the_neighbours_drawn_per_node():
    n = 60
    hub = torch.zeros(n - 1, dtype=torch.long)
    edges = torch.stack([torch.arange(1, n), hub])  # 59 nodes point at node 0
    rowptr, col = _csr(edges, n)
    one_hop = sample_neighbours(
        rowptr, col, torch.tensor([0]), (5,), torch.Generator().manual_seed(0)
    )
    assert len(one_hop) == 6 and one_hop[0] == 0
    other = sample_neighbours(
        rowptr, col, torch.tensor([0]), (5,), torch.Generator().manual_seed(1)
    )
    assert other.tolist() != one_hop.tolist()  # a random draw, not the first five


def test_node_batches_are_sampled_neighbourhoods_with_their_seeds(tmp_path):
    data = load_graphs(f"graph:{community_graph(tmp_path / 'g.npz')}", "train")
    batch = data.collate([data[i] for i in range(8)])
    graph = batch["graph"]
    assert graph.center.shape == (8,) and batch["label"].shape == (8,)
    torch.testing.assert_close(graph.x[graph.center], data.graph.x[data.nodes[:8]])
    again = data.collate([data[i] for i in range(8)])
    assert torch.equal(again["graph"].edge_index, graph.edge_index)  # seeded by the seeds


# ---- sources and bad input ------------------------------------------------------------------


def test_splits_are_disjoint_and_cover_the_nodes(tmp_path):
    spec = f"graph:{community_graph(tmp_path / 'g.npz')}"
    train, test = load_graphs(spec, "train"), load_graphs(spec, "test")
    assert len(train) == 96 and len(test) == 24
    assert not set(train.nodes.tolist()) & set(test.nodes.tolist())


def test_csv_and_saved_data_read_as_the_npz(tmp_path):
    path = community_graph(tmp_path / "g.npz")
    arrays = np.load(path)
    folder = tmp_path / "csv"
    folder.mkdir()
    np.savetxt(
        folder / "edges.csv",
        arrays["edge_index"].T,
        fmt="%d",
        delimiter=",",
        header="source,target",
        comments="",
    )
    header = ",".join([f"f{i}" for i in range(12)] + ["label"])
    table = np.concatenate([arrays["x"], arrays["y"][:, None]], axis=1)
    np.savetxt(folder / "nodes.csv", table, delimiter=",", header=header, comments="", fmt="%.6f")
    torch.save(
        Data(
            x=torch.from_numpy(arrays["x"]),
            edge_index=torch.from_numpy(arrays["edge_index"]),
            y=torch.from_numpy(arrays["y"]),
        ),
        tmp_path / "g.pt",
    )
    base = load_graphs(f"graph:{path}", "train")
    for spec in (f"graph:{folder}", f"graph:{tmp_path / 'g.pt'}"):
        other = load_graphs(spec, "train")
        torch.testing.assert_close(other.graph.x, base.graph.x, atol=1e-5, rtol=0)
        assert torch.equal(other.graph.edge_index, base.graph.edge_index)
        assert torch.equal(other.labels(), base.labels())


def test_a_list_of_data_is_a_graph_level_set(tmp_path):
    from selfsup.modalities import MODALITIES

    graph = MODALITIES["graph"]
    batch = graph.tiny_batch(10)
    graphs = [
        Data(x=g.x, edge_index=g.edge_index, y=torch.tensor([i % 2]))
        for i, g in enumerate(batch["graph"].to_data_list())
    ]
    torch.save(graphs, tmp_path / "set.pt")
    train = load_graphs(f"graph:{tmp_path / 'set.pt'}", "train")
    assert len(train) == 8 and train.class_names == ["0", "1"]
    samples = [train[i] for i in range(3)]
    again = collate_graphs(samples)
    assert again["graph"].num_graphs == 3 and torch.equal(again["label"], train.labels()[:3])


@pytest.mark.parametrize(
    "arrays,message",
    [
        (
            {"x": np.ones((4, 3)), "edge_index": np.array([[0, 1], [1, 4]])},
            "names node 4 but the graph has nodes 0..3",
        ),
        ({"x": np.ones((4, 3)), "edge_index": np.array([[0, -1], [1, 2]])}, "names node -1"),
        ({"x": np.ones((4, 3)), "edge_index": np.zeros((2, 0), dtype=np.int64)}, "has no edges"),
        (
            {"x": np.ones((4, 3)), "edge_index": np.array([[0, 1], [1, 2]]), "y": np.arange(3)},
            "3 labels for 4 nodes",
        ),
        ({"edge_index": np.array([[0, 1], [1, 2]])}, "no node features 'x'"),
    ],
)
def test_bad_graphs_give_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SelfsupError, match=message) as error:
        load_graphs(f"graph:{tmp_path / 'bad.npz'}", "train")
    assert "\n" not in str(error.value)


def test_csv_rows_of_different_lengths_are_refused(tmp_path):
    (tmp_path / "edges.csv").write_text("source,target\n0,1\n1,2\n")
    (tmp_path / "nodes.csv").write_text("a,b,label\n1,2,0\n3,1\n4,5,1\n")
    with pytest.raises(SelfsupError, match="every node needs the same number"):
        load_graphs(f"graph:{tmp_path}", "train")


def test_the_cli_exits_2_on_dangling_edges(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.ones((4, 3)), edge_index=np.array([[0, 1], [1, 9]]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfsup",
            "pretrain",
            "--method",
            "graphmae",
            "--data",
            f"graph:{tmp_path / 'bad.npz'}",
            "--max-steps",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2, result.stderr
    assert "names node 9" in result.stderr and "Traceback" not in result.stderr


# ---- encoders and methods -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gcn", "gin", "gat"])
def test_encoders_give_seed_rows_and_graph_means(name, tmp_path):
    data = load_graphs(f"graph:{community_graph(tmp_path / 'g.npz')}", "train")
    encoder = build_encoder(name, in_channels=12, hidden=16).eval()
    node_batch = data.collate([data[i] for i in range(5)])["graph"]
    nodes = encoder.forward_nodes(node_batch.x, node_batch.edge_index)
    torch.testing.assert_close(encoder(node_batch), nodes[node_batch.center])
    from selfsup.modalities import MODALITIES

    graphs = MODALITIES["graph"].tiny_batch(3)["graph"]  # 8 features a node
    encoder = build_encoder(name, in_channels=8, hidden=16).eval()
    pooled = encoder(graphs)
    first = graphs.get_example(0)
    alone = encoder.forward_nodes(first.x, first.edge_index).mean(0)
    torch.testing.assert_close(pooled[0], alone, atol=1e-5, rtol=1e-4)
    with pytest.raises(SelfsupError, match="7 features a node but the encoder reads 8"):
        encoder.forward_nodes(torch.zeros(3, 7), node_batch.edge_index[:, :0])


@pytest.mark.parametrize("name", ["gcn", "gin", "gat"])
def test_graph_encoders_export_and_load_back(name, tmp_path):
    """PyG's GIN hands one PReLU to every layer: the export writes it under each name."""
    from selfsup.export import export_encoder, load_encoder
    from selfsup.modalities import MODALITIES

    graphs = MODALITIES["graph"].tiny_batch(3)["graph"]
    encoder = build_encoder(name, in_channels=8, hidden=16, num_layers=3).eval()
    export_encoder(encoder, tmp_path)
    loaded = load_encoder(tmp_path).eval()
    torch.testing.assert_close(loaded(graphs), encoder(graphs), rtol=0, atol=0)


@pytest.mark.parametrize(
    "method,encoder",
    [("graphmae", "gat"), ("bgrl", "gcn"), ("graphmae", "gin"), ("graphcl", "gin")],
)
def test_methods_learn_on_a_small_graph(method, encoder, tmp_path):
    """Forward, backward, no NaN, and 30 Adam steps lower the loss on one batch."""
    torch.manual_seed(0)
    data = load_graphs(f"graph:{community_graph(tmp_path / 'g.npz')}", "train")
    batch = data.collate([data[i] for i in range(32)])
    net = build_encoder(encoder, in_channels=12, hidden=32)
    model = build_method(method, {}, net, DataInfo(modality="graph", node_features=12))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for step in range(30):
        torch.manual_seed(step % 3)  # the same few masks and views again and again
        out = model.training_step(batch)
        assert torch.isfinite(out["loss"]) and out["features"].shape == (32, 32)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        model.on_step_end(step / 30)
        losses.append(out["loss"].item())
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses


def test_bgrl_target_starts_elsewhere_and_follows_by_ema():
    net = build_encoder("gcn", in_channels=8, hidden=16)
    model = build_method(
        "bgrl", {"momentum": 0.5}, net, DataInfo(modality="graph", node_features=8)
    )
    online = dict(model.encoder.named_parameters())
    target = dict(model.target.named_parameters())
    name = next(n for n in online if n.endswith("lin.weight"))
    assert not torch.equal(online[name], target[name])  # re-initialised, as the paper's code
    assert not any(p.requires_grad for p in model.target.parameters())
    before = target[name].clone()
    model.on_step_end(0.0)
    torch.testing.assert_close(target[name], 0.5 * before + 0.5 * online[name])


def test_a_tiny_graphmae_run_evaluates_against_raw_features_and_propagation(tmp_path):
    from selfsup.api import pretrain

    path = community_graph(tmp_path / "g.npz", n=300)
    run = pretrain(
        method="graphmae",
        encoder="gcn",
        data={"name": f"graph:{path}"},
        train={"max_steps": 40, "batch_size": 32, "lr": 5e-3, "progress": False},
        eval={"protocols": ["linear"], "label_fractions": [0.1], "seeds": [0], "report": False},
        out=str(tmp_path / "run"),
    )
    accuracy = {row["encoder"]: row["accuracy"] for row in run.eval_rows}
    assert accuracy["graphmae"] > accuracy["raw"] + 0.1, accuracy
    assert "label-propagation" in accuracy and (tmp_path / "run" / "encoder.safetensors").is_file()


# ---- WordNet ---------------------------------------------------------------------------------


def test_a_synset_line_gives_its_label_noun_pointers_and_gloss():
    from selfsup.data.wordnet import LEXNAMES, parse_synset

    line = (
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 003 @ 02083346 n 0000 "
        "#m 02083863 n 0000 + 01215481 v 0301 | a member of the genus Canis  \n"
    )
    offset, label, targets, gloss = parse_synset(line)
    assert offset == 2084071 and LEXNAMES[label] == "noun.animal"
    assert targets == [2083346, 2083863]  # the verb pointer is not a noun edge
    assert gloss == "a member of the genus Canis"


def test_the_wordnet_noun_graph_when_installed():
    from selfsup.data.wordnet import WORDNET_DIR

    if not (WORDNET_DIR / "data.noun").is_file():
        pytest.skip("WordNet is not installed: apt-get install wordnet-base")
    train, test = load_graphs("wordnet", "train"), load_graphs("wordnet", "test")
    assert len(train) + len(test) == 82115 and len(train.class_names) == 26
    assert train.num_features == 1000 and train.graph.edge_index.shape[1] > 200_000
    assert set(train.labels().unique().tolist()) == set(range(26))
