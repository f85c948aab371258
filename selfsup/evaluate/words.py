"""Word vectors: the word2vec text format, and the three classic benchmarks, read from the
files that ship inside the gensim wheel (``gensim/test/test_data/``).

    words, vectors = word_vectors(folder)             # a word2vec run or export folder
    save_word2vec_format(words, vectors, "vectors.txt")
    rows = word_benchmarks(words, vectors)            # WordSim-353, SimLex-999, analogies

* WordSim-353 (Finkelstein et al. 2002) and SimLex-999 (Hill et al. 2015): Spearman's rho
  between the human scores and the cosine similarity of the two words' vectors, over the
  pairs whose two words are in the vocabulary (as gensim's ``evaluate_word_pairs``);
* the Google analogy questions (Mikolov et al. 2013, 19,544 of "a is to b as c is to d"):
  3CosAdd, the word nearest to b - a + c in cosine among the whole vocabulary except a, b and
  c, over the questions whose four words are in it (as gensim's ``evaluate_word_analogies``).

Words are compared lowercased; ``coverage`` says which share of the benchmark was scored.
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from selfsup.errors import SelfsupError

BENCHMARKS = {
    "wordsim353": "wordsim353.tsv",
    "simlex999": "simlex999.txt",
    "google_analogy": "questions-words.txt",
}


def benchmark_file(name: str) -> Path:
    """The path of a benchmark file inside the installed gensim package."""
    try:
        root = importlib.resources.files("gensim")
    except ModuleNotFoundError:
        raise SelfsupError(
            "the word-vector benchmarks ship inside gensim: pip install selfsup[words]"
        ) from None
    path = Path(str(root / "test" / "test_data" / BENCHMARKS[name]))
    if not path.is_file():
        raise SelfsupError(f"{path} is missing from the gensim install: reinstall gensim")
    return path


def read_pairs(path: Path) -> list[tuple[str, str, float]]:
    """(word, word, human score) from a tab-separated file; ``#`` lines are comments."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            a, b, score = line.split("\t")[:3]
            pairs.append((a.lower(), b.lower(), float(score)))
    return pairs


def read_analogies(path: Path) -> list[tuple[str, str, str, str]]:
    """The four words of every question (lowercased); ``:`` lines name sections."""
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(":"):
            a, b, c, d = line.lower().split()
            questions.append((a, b, c, d))
    return questions


def _unit(vectors: Tensor) -> Tensor:
    v = vectors.float()
    return v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)


def pair_spearman(
    words: list[str], vectors: Tensor, pairs: list[tuple[str, str, float]]
) -> dict[str, float]:
    """Spearman's rho of cosine similarity against the human scores over the covered pairs."""
    from scipy.stats import spearmanr

    index = {w: i for i, w in enumerate(words)}
    unit = _unit(vectors)
    covered = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
    if len(covered) < 3:
        return {"spearman": math.nan, "coverage": len(covered) / max(1, len(pairs))}
    cosines = [float(unit[i] @ unit[j]) for i, j, _ in covered]
    rho = spearmanr([s for _, _, s in covered], cosines).statistic
    return {"spearman": float(rho), "coverage": len(covered) / len(pairs)}


def analogy_accuracy(
    words: list[str],
    vectors: Tensor,
    questions: list[tuple[str, str, str, str]],
    batch_size: int = 1024,
) -> dict[str, float]:
    """3CosAdd accuracy over the questions whose four words are in ``words``."""
    index = {w: i for i, w in enumerate(words)}
    ids = torch.tensor(
        [[index[w] for w in q] for q in questions if all(w in index for w in q)],
        dtype=torch.long,
    ).reshape(-1, 4)  # (Q, 4)
    unit = _unit(vectors)  # (V, D)
    correct = 0
    for start in range(0, len(ids), batch_size):
        q = ids[start : start + batch_size]  # (b, 4): a is to b as c is to d
        target = unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]  # (b, D)
        scores = target @ unit.T  # (b, V); the norm of target does not change the argmax
        scores.scatter_(1, q[:, :3], -math.inf)  # the question's own words are not answers
        correct += int((scores.argmax(1) == q[:, 3]).sum())
    return {"accuracy": correct / max(1, len(ids)), "coverage": len(ids) / max(1, len(questions))}


def word_benchmarks(words: list[str], vectors: Tensor) -> dict[str, dict[str, float]]:
    """WordSim-353 and SimLex-999 Spearman, Google analogy accuracy, each with coverage."""
    lowered = [w.lower() for w in words]
    return {
        "wordsim353": pair_spearman(lowered, vectors, read_pairs(benchmark_file("wordsim353"))),
        "simlex999": pair_spearman(lowered, vectors, read_pairs(benchmark_file("simlex999"))),
        "google_analogy": analogy_accuracy(
            lowered, vectors, read_analogies(benchmark_file("google_analogy"))
        ),
    }


def save_word2vec_format(words: list[str], vectors: Tensor, path: str | Path) -> Path:
    """Write ``words`` and their (V, D) ``vectors`` in the word2vec text format: a header
    line ``V D``, then one line per word, ``word x_1 .. x_D`` (what word2vec.c's
    ``-binary 0``, gensim's ``KeyedVectors.load_word2vec_format`` and fastText read)."""
    import numpy as np

    bad = [w for w in words if not w or any(ch.isspace() for ch in w)]
    if bad:
        raise SelfsupError(
            f"word {bad[0]!r} is empty or holds whitespace: the format cannot hold it"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = vectors.detach().float().cpu().numpy()
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        f.write(f"{len(words)} {array.shape[1]}\n")
        for word, row in zip(words, array):
            f.write(word + " " + " ".join(np.char.mod("%.6g", row)) + "\n")
    partial.replace(path)
    return path


def word_vectors(folder: str | Path) -> tuple[list[str], Tensor]:
    """The words (ids past the special tokens, in id order) and vectors (V, D) of a
    word-vector encoder saved in a run or export folder with its tokenizer."""
    from selfsup.data.tokenizer import find_tokenizer
    from selfsup.export import load_encoder

    encoder = load_encoder(folder)
    table = getattr(encoder, "vectors", None)
    if not isinstance(table, torch.nn.Embedding):
        raise SelfsupError(
            f"{str(folder)!r} holds no table of word vectors: train one with --method word2vec "
            "--encoder word-vectors"
        )
    return vocabulary_vectors(find_tokenizer(folder), table.weight.detach())


def vocabulary_vectors(tokenizer: Any, weight: Tensor) -> tuple[list[str], Tensor]:
    """The words of ``tokenizer`` past the special tokens and their rows of ``weight``."""
    from selfsup.data.tokenizer import FIRST_WORD_ID

    vocab = tokenizer.get_vocab()
    ids = sorted(i for i in vocab.values() if i >= FIRST_WORD_ID)
    by_id = {i: w for w, i in vocab.items()}
    return [by_id[i] for i in ids], weight[torch.tensor(ids, dtype=torch.long)]
