"""The WordNet noun graph: a real node-classification set of the Cora kind, built offline.

Debian's ``wordnet-base`` installs ``/usr/share/wordnet/data.noun``: 82,115 noun synsets, one a
line, as WordNet's ``wndb(5)`` format describes it::

    offset lex_filenum ss_type w_cnt (word lex_id){w_cnt} p_cnt (sym offset pos src_tgt){p_cnt} | gloss

Nodes are the synsets; edges are every pointer from a noun to a noun (hypernym, hyponym,
meronym, antonym, ...), made undirected; the node features are a binary bag of words of the
gloss over its ``vocab`` most frequent non-stop words (Cora's are a 1,433-word binary bag);
the label is the lexicographer file (``noun.animal``, ``noun.artifact``, ...: 26 classes),
which the gloss alone predicts only in part and the graph's neighbours much better.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from selfsup.errors import SelfsupError

WORDNET_DIR = Path("/usr/share/wordnet")

LEXNAMES = [
    "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body",
    "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food",
    "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity",
    "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
]  # fmt: skip
"""WordNet's lexicographer files 03-28 (``lexnames(5)``): the node labels, in file order."""
FIRST_NOUN_FILE = 3

_WORD = re.compile(r"[a-z]+")


def wordnet_noun_file(folder: Path = WORDNET_DIR) -> Path:
    path = folder / "data.noun"
    if not path.is_file():
        raise SelfsupError(
            f"the WordNet noun graph needs {path}: `sudo apt-get install wordnet-base`, or "
            "wordnet:FOLDER holding data.noun"
        )
    return path


def parse_synset(line: str) -> tuple[int, int, list[int], str]:
    """One ``data.noun`` line -> (offset, label, noun pointer offsets, gloss)."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, lex_file = int(fields[0]), int(fields[1])
    w_cnt = int(fields[3], 16)
    at = 4 + 2 * w_cnt
    p_cnt = int(fields[at])
    pointers = fields[at + 1 : at + 1 + 4 * p_cnt]
    targets = [int(pointers[i + 1]) for i in range(0, len(pointers), 4) if pointers[i + 2] == "n"]
    return offset, lex_file - FIRST_NOUN_FILE, targets, gloss.strip()


def read_wordnet_nouns(
    path: Path, vocab: int = 1000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The noun graph of ``data.noun``: uint8 features (N, vocab), int64 undirected edges
    (2, E) without duplicates, int64 labels (N,), and the feature words."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # type: ignore[import-untyped]

    offsets, labels, pointers, glosses = [], [], [], []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or not line.strip():
                continue  # the licence header
            try:
                offset, label, targets, gloss = parse_synset(line)
            except (ValueError, IndexError) as e:
                raise SelfsupError(f"{path}: unreadable synset line {line[:40]!r} ({e})") from None
            offsets.append(offset)
            labels.append(label)
            pointers.append(targets)
            glosses.append(gloss)
    if not offsets:
        raise SelfsupError(f"{path} holds no synsets")
    node = {offset: i for i, offset in enumerate(offsets)}
    src = [i for i, targets in enumerate(pointers) for t in targets if t in node]
    dst = [node[t] for targets in pointers for t in targets if t in node]
    pairs = np.array([src + dst, dst + src], dtype=np.int64)  # both directions
    pairs = pairs[:, pairs[0] != pairs[1]]
    edges = np.unique(pairs, axis=1)  # (2, E)
    tokens = [[w for w in _WORD.findall(g.lower()) if w not in ENGLISH_STOP_WORDS] for g in glosses]
    counts = Counter(w for words in tokens for w in set(words))
    words = [w for w, _ in counts.most_common(vocab)]
    column = {w: j for j, w in enumerate(words)}
    x = np.zeros((len(offsets), len(words)), dtype=np.uint8)
    for i, ws in enumerate(tokens):
        x[i, [column[w] for w in ws if w in column]] = 1
    return x, edges, np.array(labels, dtype=np.int64), words
