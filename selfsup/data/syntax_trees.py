"""The syntax trees of the Python standard library: a graph-level set, one graph a function,
method or class, labelled by the package it lies in.

    dataset = load_syntax_trees("train")      # SyntaxTreeDataset of PyG Data, label = package

A unit is what ``selfsup.data.code`` splits a file into (every function not nested in another,
every class without its methods), so the graph and the code sources cut the library the same
way. Its graph is the unit's abstract syntax tree from ``ast``: a node for every AST node, an
edge each way between a node and its children, the node's type one-hot as its features (one
width a type of this interpreter's ``ast``). Left out of the tree: the docstring (a unit's
description, not its code), the load/store/del context markers (one a name, they double the
nodes and say little), and a class's methods (units of their own).

Labels are the top-level packages with at least ``MIN_PACKAGE_UNITS`` units (asyncio, email,
xml, ...); units of modules directly in the library's root (``os.py``, ``typing.py``: no
package to name) and of smaller packages are left out, as are trees of fewer than
``MIN_NODES`` nodes (a class of methods only). The split is the code sources' own, by a hash
of the file's path, so a held-out module's functions are never pretrained on.

Parsing the library takes about half a minute; the graphs are cached once as flat arrays
(``cache_dir("syntax-trees")``) and each ``Data`` is built when its sample is read.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from selfsup.cache import cache_dir
from selfsup.data.code import (
    CODE_TEST_FRACTION,
    TOP_LEVEL,
    definitions,
    docstring_node,
    package_of,
    source_files,
    stdlib_root,
)
from selfsup.data.graph import GraphSetDataset
from selfsup.data.split import in_test_split
from selfsup.encoders.graph import pyg
from selfsup.errors import SelfsupError

Split = Literal["train", "test"]

MIN_PACKAGE_UNITS = 100
"""A package needs this many units to be a class (20 packages on Python 3.11)."""
MIN_NODES = 3
"""Smaller trees (a class that only holds methods) are left out."""


def node_types() -> list[str]:
    """The names of this interpreter's concrete AST node types, sorted: the feature columns
    (abstract bases, context markers and the deprecated aliases such as ``Num`` left out)."""
    abstract = {"AST", "mod", "stmt", "expr", "expr_context", "boolop", "operator", "unaryop"}
    abstract |= {"cmpop", "excepthandler", "pattern", "type_ignore", "type_param", "slice"}
    return sorted(
        name
        for name, value in vars(ast).items()
        if isinstance(value, type)
        and issubclass(value, ast.AST)
        and name not in abstract
        and not issubclass(value, ast.expr_context)
        and "Deprecated" not in (value.__doc__ or "")
    )


def syntax_graph(
    node: ast.AST, leave_out: list[ast.AST], column: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(types (n,) int16, parent→child edges (2, n - 1) int32) of the tree under ``node``,
    without the subtrees ``leave_out``, the docstring and the context markers; node 0 is
    ``node``, the others in depth-first order."""
    skip = {id(n) for n in leave_out}
    doc = docstring_node(node)
    if doc is not None:
        skip.add(id(doc))
    types: list[int] = []
    parents: list[int] = []
    stack: list[tuple[ast.AST, int]] = [(node, -1)]
    while stack:
        current, parent = stack.pop()
        types.append(column[type(current).__name__])
        parents.append(parent)
        here = len(types) - 1
        children = [
            c
            for c in ast.iter_child_nodes(current)
            if id(c) not in skip and not isinstance(c, ast.expr_context)
        ]
        stack.extend((c, here) for c in reversed(children))
    edges = np.array([parents[1:], range(1, len(types))], dtype=np.int32).reshape(2, -1)
    return np.array(types, dtype=np.int16), edges


@dataclass
class SyntaxTrees:
    """Every kept unit's tree as flat arrays: graph g's nodes are
    ``types[node_start[g]:node_start[g + 1]]``, its edges (local ids) the same way."""

    types: np.ndarray  # (total nodes,) int16
    node_start: np.ndarray  # (G + 1,) int64
    edges: np.ndarray  # (2, total edges) int32
    edge_start: np.ndarray  # (G + 1,) int64
    labels: np.ndarray  # (G,) int64
    in_test: np.ndarray  # (G,) bool
    class_names: list[str]
    type_names: list[str]
    skipped_files: int


def read_syntax_trees(root: Path) -> SyntaxTrees:
    """Parse every library file under ``root`` into unit trees (files that do not parse are
    skipped and counted, as the code sources do)."""
    type_names = node_types()
    column = {name: i for i, name in enumerate(type_names)}
    files = source_files(root, (".py",), stdlib=True)
    per_package = Counter()
    parsed: list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]] = []
    skipped = 0
    for relative in files:
        try:
            tree = ast.parse((root / relative).read_bytes().decode("utf-8"), relative)
        except (SyntaxError, ValueError, UnicodeDecodeError):
            skipped += 1
            continue
        graphs = [syntax_graph(node, members, column) for node, members in definitions(tree)]
        graphs = [g for g in graphs if len(g[0]) >= MIN_NODES]
        parsed.append((relative, graphs))
        per_package[package_of(relative)] += len(graphs)
    classes = sorted(p for p, n in per_package.items() if n >= MIN_PACKAGE_UNITS and p != TOP_LEVEL)
    index = {p: i for i, p in enumerate(classes)}
    types, edges, node_start, edge_start, labels, in_test = [], [], [0], [0], [], []
    for relative, graphs in parsed:
        package = package_of(relative)
        if package not in index:
            continue
        test = in_test_split(relative, CODE_TEST_FRACTION)
        for kinds, links in graphs:
            types.append(kinds)
            edges.append(links)
            node_start.append(node_start[-1] + len(kinds))
            edge_start.append(edge_start[-1] + links.shape[1])
            labels.append(index[package])
            in_test.append(test)
    if not labels:
        raise SelfsupError(f"{root}: no package with {MIN_PACKAGE_UNITS} or more units")
    return SyntaxTrees(
        np.concatenate(types),
        np.array(node_start, dtype=np.int64),
        np.concatenate(edges, axis=1),
        np.array(edge_start, dtype=np.int64),
        np.array(labels, dtype=np.int64),
        np.array(in_test, dtype=bool),
        classes,
        type_names,
        skipped,
    )


def stdlib_syntax_trees() -> SyntaxTrees:
    """The standard library's trees, parsed once and cached by interpreter version."""
    root = stdlib_root()
    rules = f"{MIN_PACKAGE_UNITS}:{MIN_NODES}:{len(node_types())}"  # a new rule, a new file
    key = hashlib.sha1(f"{root.resolve()}:{sys.version}:{rules}".encode()).hexdigest()[:12]
    cached = cache_dir("syntax-trees") / f"stdlib-{key}.npz"
    if not cached.is_file():
        trees = read_syntax_trees(root)
        tmp = cached.with_suffix(".tmp.npz")
        arrays = {k: v for k, v in vars(trees).items() if isinstance(v, np.ndarray)}
        np.savez_compressed(
            tmp,
            **arrays,
            class_names=np.array(trees.class_names),
            type_names=np.array(trees.type_names),
            skipped_files=np.array(trees.skipped_files),
        )
        tmp.replace(cached)
    with np.load(cached, allow_pickle=False) as f:
        return SyntaxTrees(
            f["types"],
            f["node_start"],
            f["edges"],
            f["edge_start"],
            f["labels"],
            f["in_test"],
            [str(c) for c in f["class_names"]],
            [str(t) for t in f["type_names"]],
            int(f["skipped_files"]),
        )


class SyntaxTreeDataset(GraphSetDataset):
    """One split of the library's syntax trees, each read as a PyG ``Data`` (x: one-hot node
    types, float32; edge_index: both directions of every parent–child edge)."""

    def __init__(self, trees: SyntaxTrees, split: Split, name: str) -> None:  # noqa: D107
        self.name = name
        self.trees = trees
        self.keep = np.flatnonzero(trees.in_test == (split == "test"))
        self.has_labels = True
        self.class_names = trees.class_names
        self._labels = torch.from_numpy(trees.labels[self.keep])
        self.num_features = len(trees.type_names)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int) -> dict[str, Any]:
        g = int(self.keep[index])
        t = self.trees
        types = torch.from_numpy(t.types[t.node_start[g] : t.node_start[g + 1]].astype(np.int64))
        down = torch.from_numpy(t.edges[:, t.edge_start[g] : t.edge_start[g + 1]].astype(np.int64))
        graph = pyg().data.Data(
            x=torch.nn.functional.one_hot(types, self.num_features).float(),
            edge_index=torch.cat([down, down.flip(0)], dim=1),
        )
        return {"graph": graph, "label": self._labels[index]}

    def features(self) -> tuple[Tensor, Tensor]:
        """Each tree's share of every node type (n, F): the raw baseline's input."""
        t = self.trees
        sizes = np.diff(t.node_start)
        owner = np.repeat(np.arange(len(sizes)), sizes)  # graph of every node
        counts = np.zeros((len(sizes), self.num_features), dtype=np.float32)
        np.add.at(counts, (owner, t.types.astype(np.int64)), 1.0)
        shares = counts[self.keep] / sizes[self.keep, None].astype(np.float32)
        return torch.from_numpy(shares), self.labels()


def load_syntax_trees(split: Split, name: str = "python-ast") -> SyntaxTreeDataset:
    """One split of the standard library's syntax trees."""
    return SyntaxTreeDataset(stdlib_syntax_trees(), split, name)
