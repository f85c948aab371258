"""Source code as text: the ast splitter, docstrings kept aside, the split by module, the
docstring→code retrieval metrics and TF-IDF baseline, bad source files, and a two-step MLM run
on a generated source tree through the CLI with its retrieval evaluation."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.data.code import TOP_LEVEL, docstring_pairs, query_of, read_tree, split_python
from selfsup.data.text import load_texts
from selfsup.errors import SelfsupError
from selfsup.evaluate.retrieval import (
    cosine_ranks,
    identifier_words,
    match_ranks,
    mean_reciprocal_rank,
    ranking_row,
    tfidf_code_ranks,
)

SOURCE = textwrap.dedent(
    '''\
    """Module docstring: not a unit."""
    import functools

    LIMIT = 3


    def plain(x):
        """Return x.

        More words that are not the query.
        """
        return x


    @functools.lru_cache(maxsize=None)
    def decorated(y):
        def nested(z):
            return z + 1
        return nested(y)


    class Shape:
        """A shape."""

        sides = 0

        def area(self):
            """The area."""
            return 0.0

        @property
        def name(self):
            return "shape"

        class Inner:
            def deep(self):
                return 1


    async def fetch():
        return None
    '''
)


def test_the_splitter_cuts_functions_methods_and_classes_without_docstrings():
    units = split_python(SOURCE)
    names = [u.name for u in units]
    assert names == ["plain", "decorated", "Shape", "area", "name", "Inner", "deep", "fetch"]
    by_name = {u.name: u for u in units}
    # the docstring is kept aside and removed from the code
    assert by_name["plain"].code == "def plain(x):\n    return x"
    assert by_name["plain"].docstring.startswith("Return x.")
    assert query_of(by_name["plain"].docstring) == "Return x."
    # decorators belong to their function; a nested function stays inside its parent
    assert by_name["decorated"].code.splitlines()[0] == "@functools.lru_cache(maxsize=None)"
    assert "def nested(z):" in by_name["decorated"].code and "nested" not in names
    # a class keeps its header and attributes, not its methods or docstring
    assert by_name["Shape"].code == "class Shape:\n\n    sides = 0"
    assert by_name["Shape"].docstring == "A shape."
    # methods are dedented units of their own, decorators included
    assert by_name["area"].code == "def area(self):\n    return 0.0"
    assert by_name["name"].code.startswith("@property\ndef name(self):")
    assert by_name["deep"].code == "def deep(self):\n    return 1"
    assert by_name["fetch"].docstring is None
    assert split_python("") == []
    with pytest.raises(SyntaxError):
        split_python("def broken(:\n")


def _tree(root: Path, modules: int = 30) -> Path:
    """Three packages and top-level modules of small documented functions whose names and
    docstrings share words, so retrieval by identifiers is possible."""
    rng = random.Random(0)
    verbs = ["parse", "render", "compute", "load", "save", "merge", "split", "count"]
    nouns = ["header", "matrix", "config", "token", "image", "record", "socket", "graph"]
    for m in range(modules):
        package = ["alpha", "beta", "gamma", ""][m % 4]
        lines = []
        for f in range(4):
            verb, noun = rng.choice(verbs), rng.choice(nouns)
            lines += [
                f"def {verb}_{noun}_{m}_{f}(value, count=1):",
                f'    """{verb.capitalize()} the {noun} from the value."""',
                f"    {noun}_total = value * count",
                f"    return {verb}{noun.capitalize()}({noun}_total)",
                "",
            ]
        folder = root / package if package else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod{m}.py").write_text("\n".join(lines))
    return root


def test_the_split_is_by_module_deterministic_and_labelled_by_package(tmp_path):
    root = _tree(tmp_path / "src")
    spec = f"code:{root}"
    train, test = load_texts(spec, "train"), load_texts(spec, "test")
    assert len(train) + len(test) == 30 * 4 and len(test) > 0
    assert train.class_names == sorted(["alpha", "beta", "gamma", TOP_LEVEL])
    # every unit of a module falls on one side: a function's module number names its file
    modules = [{t.split("(")[0].split("_")[2] for t in c.texts} for c in (train, test)]
    assert not modules[0] & modules[1]
    read_tree.cache_clear()
    assert load_texts(spec, "test").texts == test.texts  # same split when read again
    assert all('"""' not in t for t in train.texts + test.texts)
    queries, codes = docstring_pairs(spec, "test")
    assert len(queries) == len(test) and queries[0].endswith("from the value.")


def test_bad_source_files_are_one_line_or_skipped_and_counted(tmp_path, capsys):
    root = _tree(tmp_path / "src", modules=8)
    (root / "alpha" / "broken.py").write_text("def broken(:\n    pass\n")
    (root / "alpha" / "latin.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    (root / "alpha" / "empty.py").write_text("")
    with pytest.raises(SelfsupError, match=r"broken\.py line 1 does not parse.*--skip-bad"):
        load_texts(f"code:{root}", "train")
    read_tree.cache_clear()
    corpus = load_texts(f"code:{root}", "train", skip_bad=True)
    assert sorted(corpus.skipped) == ["alpha/broken.py", "alpha/latin.py"]
    out = tmp_path / "run"
    argv = ["pretrain", "--method", "mlm", "--data", f"code:{root}", "--out", str(out)]
    assert main([*argv, "--no-eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.py" in err[0] and "Traceback" not in err[0], err
    with pytest.raises(SelfsupError, match="holds no functions, classes"):
        load_texts(f"code:{root / 'alpha' / 'empty.py'}")
    with pytest.raises(SelfsupError, match=r"no \.js files found"):
        load_texts(f"code:{root}:ext=js")


def test_ranking_metrics_on_a_hand_made_case():
    # match ranks 0, 1 and 3 (0-based): MRR = (1 + 1/2 + 1/4) / 3
    sims = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.2],
            [0.8, 0.5, 0.1, 0.0],
            [0.1, 0.2, 0.3, 0.0],
            [0.5, 0.6, 0.7, 0.1],
        ]
    )
    ranks = match_ranks(sims)
    assert ranks.tolist() == [0, 1, 0, 3]
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 0.5 + 1 + 0.25) / 4)
    row = ranking_row(ranks, ks=(1, 2))
    assert row["recall@1"] == pytest.approx(50.0) and row["recall@2"] == pytest.approx(75.0)
    # a tie ranks against the match; identical embeddings retrieve perfectly
    assert match_ranks(torch.ones(2, 2)).tolist() == [1, 1]
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    assert cosine_ranks(z, z * 3).tolist() == [0] * 5


def test_tfidf_baseline_matches_identifiers_to_words():
    assert identifier_words("parseHTTPResponse_fast(x2)") == "parse http response fast x2"
    codes = ["def load_image(path): ...", "def saveConfig(cfg): ...", "def merge_graph(a, b): ..."]
    queries = ["Save the config to disk.", "Combine two graphs.", "Load an image from a path."]
    ranks = tfidf_code_ranks(queries, [codes[1], codes[2], codes[0]])
    # "graphs" is not "graph" (no stemming): the second query scores every code 0, and a tie
    # ranks the match last
    assert ranks.tolist() == [0, 2, 0]


def test_mlm_on_a_source_tree_through_the_cli_evaluates_retrieval(tmp_path):
    root = _tree(tmp_path / "src")
    out = tmp_path / "run"
    argv = [
        "pretrain", "--method", "mlm", "--encoder", "transformer-tiny",
        "--data", f"code:{root}", "--tokenizer", "byte-bpe", "--vocab-size", "300",
        "--max-length", "32", "--max-steps", "2", "--batch-size", "8", "--out", str(out),
        "--set", "encoder_args.depth=1", "--set", "encoder_args.embed_dim=32",
        "--set", "encoder_args.num_heads=2", "--set", "eval.label_fractions=[1.0]",
        "--set", "eval.seeds=[0]", "--set", "eval.report=false", "--set", "train.progress=false",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "retrieval.json").read_text())
    assert [r["encoder"] for r in rows] == ["mlm", "random-init", "tf-idf (identifier words)"]
    queries, _ = docstring_pairs(f"code:{root}", "test")
    for row in rows:
        assert row["num_queries"] == len(queries)
        assert 1 / len(queries) <= row["mrr"] <= 1 and row["recall@1"] <= row["recall@10"]
    # the identifiers repeat the docstrings' verb and noun: TF-IDF finds most matches
    assert rows[-1]["mrr"] > 0.5
    probes = json.loads((out / "eval.json").read_text())
    assert {("mlm", "linear"), ("raw", "linear")} <= {(r["encoder"], r["protocol"]) for r in probes}
