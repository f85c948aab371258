"""The standard library's syntax trees as a graph-level set: one unit's graph against a slow
reference, labels and split on a small library, the PyG samples and the raw features."""

from __future__ import annotations

import ast
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "torch_geometric", reason="graphs need PyTorch Geometric: pip install 'selfsup[graph]'"
)

from selfsup.data import syntax_trees  # noqa: E402
from selfsup.data.code import definitions  # noqa: E402
from selfsup.data.split import in_test_split  # noqa: E402
from selfsup.data.syntax_trees import (  # noqa: E402
    SyntaxTreeDataset,
    node_types,
    read_syntax_trees,
    syntax_graph,
)

SOURCE = textwrap.dedent(
    '''
    class Shape(Base):
        """A docstring the graph leaves out."""
        sides = 4

        def area(self, w):
            """Also left out."""
            return w * w
    '''
)


def reference_edges(node: ast.AST, leave_out: set[int]) -> Counter:
    """(parent type, child type) of every kept parent-child pair, by plain recursion."""
    pairs: Counter = Counter()
    for child in ast.iter_child_nodes(node):
        if id(child) in leave_out or isinstance(child, ast.expr_context):
            continue
        pairs[(type(node).__name__, type(child).__name__)] += 1
        pairs += reference_edges(child, leave_out)
    return pairs


def test_a_unit_graph_is_its_tree_without_docstring_contexts_or_methods():
    tree = ast.parse(SOURCE)
    (shape, members), (area, nested) = definitions(tree)
    assert [m.name for m in members] == ["area"] and nested == []
    names = node_types()
    column = {n: i for i, n in enumerate(names)}
    types, edges = syntax_graph(shape, members, column)
    assert [names[t] for t in types] == ["ClassDef", "Name", "Assign", "Name", "Constant"]
    assert edges.tolist() == [[0, 0, 2, 2], [1, 2, 3, 4]]

    types, edges = syntax_graph(area, nested, column)
    kinds = [names[t] for t in types]
    assert kinds[0] == "FunctionDef" and "Expr" not in kinds  # the docstring's statement
    assert "Load" not in kinds and kinds.count("Name") == 2
    got = Counter((kinds[a], kinds[b]) for a, b in edges.T.tolist())
    leave_out = {id(area.body[0])}
    assert got == reference_edges(area, leave_out)
    assert edges.shape[1] == len(types) - 1  # a tree: every node but the root has one parent


def test_every_unit_of_a_real_module_matches_the_slow_reference():
    tree = ast.parse(Path(textwrap.__file__).read_text())
    column = {n: i for i, n in enumerate(node_types())}
    for node, members in definitions(tree):
        types, edges = syntax_graph(node, members, column)
        doc = [node.body[0]] if ast.get_docstring(node) else []
        leave_out = {id(n) for n in [*members, *doc]}
        names = node_types()
        got = Counter((names[types[a]], names[types[b]]) for a, b in edges.T.tolist())
        assert got == reference_edges(node, leave_out), node.name


def small_library(root: Path) -> Path:
    files = {
        "alpha/__init__.py": "def a1(x):\n    return x + 1\n\ndef a2(y):\n    return [y, y]\n",
        "alpha/more.py": "class K:\n    z = 1\n    def m(self):\n        return self.z\n",
        "beta/core.py": "def b0(n):\n    return -n\n\ndef b1():\n    for i in range(3):\n        print(i)\n",
        "beta/broken.py": "def b2(:\n",
        "gamma/tiny.py": "def g1():\n    return 1\n",
        "toplevel.py": "def t1():\n    return 2\n",
        "beta/test/test_skip.py": "def t():\n    return 3\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_packages_label_units_and_the_rest_is_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(syntax_trees, "MIN_PACKAGE_UNITS", 2)
    trees = read_syntax_trees(small_library(tmp_path))
    assert trees.class_names == ["alpha", "beta"]  # gamma has 1 unit, toplevel.py no package
    assert trees.skipped_files == 1  # beta/broken.py does not parse
    # alpha: a1, a2, K (its header and `z = 1`), m; beta: b0, b1 (tests are left out)
    assert np.bincount(trees.labels).tolist() == [4, 2]
    files = ["alpha/__init__.py"] * 2 + ["alpha/more.py"] * 2 + ["beta/core.py"] * 2
    assert trees.in_test.tolist() == [in_test_split(f, 0.2) for f in files]
    assert len(trees.node_start) == len(trees.labels) + 1 == len(trees.edge_start)


def test_samples_are_one_hot_trees_with_both_edge_directions(tmp_path, monkeypatch):
    monkeypatch.setattr(syntax_trees, "MIN_PACKAGE_UNITS", 2)
    trees = read_syntax_trees(small_library(tmp_path))
    trees.in_test[:] = False
    data = SyntaxTreeDataset(trees, "train", "python-ast")
    assert len(data) == 6 and data.num_features == len(node_types())
    first = data[0]["graph"]
    assert torch.equal(first.x.sum(1), torch.ones(first.num_nodes))
    src, dst = first.edge_index
    pairs = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert all((b, a) in pairs for a, b in pairs) and len(pairs) == 2 * (first.num_nodes - 1)
    features, labels = data.features()
    for i in range(len(data)):
        torch.testing.assert_close(features[i], data[i]["graph"].x.mean(0))
    assert labels.tolist() == [0, 0, 0, 0, 1, 1]
    batch = data.collate([data[i] for i in range(3)])
    assert batch["graph"].num_graphs == 3 and batch["label"].tolist() == [0, 0, 0]


def test_the_standard_library_set():
    from selfsup.data.graph import load_graphs

    train, test = load_graphs("python-ast", "train"), load_graphs("python-ast", "test")
    assert len(train) > 5_000 and len(test) > 1_000
    assert train.class_names == test.class_names and len(train.class_names) >= 10
    assert "asyncio" in train.class_names and "(top level)" not in train.class_names
    assert train[0]["graph"].num_nodes >= syntax_trees.MIN_NODES
