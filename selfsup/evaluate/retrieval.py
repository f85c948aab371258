"""Zero-shot classification and cross-modal retrieval: pure functions over frozen embeddings.

Zero-shot (CLIP, §3.1.4): each class name is written into several prompt templates, the
prompts are embedded by the text tower and normalised, their mean is normalised again (the
prompt ensemble), and an image is given the class whose ensemble embedding is most similar to
its own. Retrieval: the held-out pairs are both the queries and the gallery; query i's
match is item i of the other side, and recall@K is the share of queries whose match ranks in
the top K by cosine similarity. Docstring→code retrieval (the CodeSearchNet task) ranks
the held-out code by each docstring and reports the mean reciprocal rank (MRR) beside recall.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PROMPTS = (
    "{}.",
    "a drawing of {}.",
    "clip art of {}.",
    "an illustration of {}.",
    "a picture of {}.",
)
"""Prompt templates of the zero-shot ensemble; ``{}`` is a class name."""


def prompts_for(class_names: Sequence[str], templates: Sequence[str] = PROMPTS) -> list[str]:
    """Every template for every class, class-major: (K · T) prompts; underscores in class
    names (folder names) become spaces."""
    return [t.format(name.replace("_", " ")) for name in class_names for t in templates]


def ensemble_classifier(prompt_embeddings: Tensor, num_classes: int) -> Tensor:
    """(K · T, P) prompt embeddings, class-major -> (K, P) unit class embeddings: the mean of
    each class's normalised prompt embeddings, normalised."""
    z = F.normalize(prompt_embeddings.float(), dim=1).reshape(
        num_classes, -1, prompt_embeddings.shape[1]
    )
    return F.normalize(z.mean(dim=1), dim=1)


def zero_shot_predict(image_embeddings: Tensor, classifier: Tensor) -> Tensor:
    """(N, P) image embeddings, (K, P) class embeddings -> (N,) predicted class ids."""
    return (F.normalize(image_embeddings.float(), dim=1) @ classifier.T).argmax(dim=1)


def match_ranks(sims: Tensor) -> Tensor:
    """(N, N) query × gallery scores whose item i is query i's match -> (N,) int64 0-based
    rank of each match: the number of other items scored at least as high (ties broken
    against the match)."""
    own = sims.diagonal().unsqueeze(1)  # (N, 1)
    return (sims >= own).sum(dim=1) - 1


def cosine_ranks(queries: Tensor, gallery: Tensor) -> Tensor:
    """0-based ranks (N,) of the matches of queries (N, P) in the gallery (N, P) whose item i
    is query i's match, by cosine similarity."""
    q, g = F.normalize(queries.float(), dim=1), F.normalize(gallery.float(), dim=1)
    return match_ranks(q @ g.T)


def recall_from_ranks(rank: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K (%): the share of 0-based match ranks below K."""
    return {k: float((rank < k).double().mean() * 100) for k in ks}


def mean_reciprocal_rank(rank: Tensor) -> float:
    """MRR: the mean of 1 / (rank + 1) over the 0-based match ranks (1.0 = every match first)."""
    return float((1.0 / (rank.double() + 1)).mean())


def recall_at_k(
    queries: Tensor, gallery: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@K (%) of queries (N, P) against the gallery (N, P) whose item i is query i's
    match, by cosine similarity (ties broken against the match)."""
    return recall_from_ranks(cosine_ranks(queries, gallery), ks)


def ranking_row(rank: Tensor, ks: Sequence[int] = (1, 10)) -> dict[str, float | int]:
    """The retrieval measures of 0-based match ranks: MRR, recall@K (%) and the gallery size."""
    recalls = recall_from_ranks(rank, ks)
    return {
        "mrr": mean_reciprocal_rank(rank),
        **{f"recall@{k}": value for k, value in recalls.items()},
        "num_queries": len(rank),
    }


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def identifier_words(text: str) -> str:
    """Code as words for TF-IDF: identifiers split on snake_case and camelCase, lower-cased
    (``parseHTTPResponse_fast`` -> ``parse http response fast``)."""
    words = re.findall(r"[A-Za-z][A-Za-z0-9]*", text.replace("_", " "))
    return " ".join(w.lower() for part in words for w in _CAMEL.split(part))


def tfidf_code_ranks(queries: Sequence[str], codes: Sequence[str]) -> Tensor:
    """The bag-of-words baseline of docstring→code retrieval: 0-based ranks (N,) of code i
    for query i by cosine similarity of TF-IDF vectors (fitted on the codes' identifier words
    and the queries, ``identifier_words`` applied to both)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    q_words = [identifier_words(t) for t in queries]
    c_words = [identifier_words(t) for t in codes]
    vectorizer = TfidfVectorizer(sublinear_tf=True).fit([*c_words, *q_words])
    sims = vectorizer.transform(q_words) @ vectorizer.transform(c_words).T  # (N, N), unit rows
    return match_ranks(torch.from_numpy(np.asarray(sims.toarray(), dtype=np.float64)))


def tfidf_zero_shot(
    train_captions: Sequence[str], test_captions: Sequence[str], class_names: Sequence[str]
) -> np.ndarray:
    """The bag-of-words baseline of zero-shot classification: each caption's class is the
    class name nearest to it in TF-IDF space (fitted on the training captions and the class
    names). A caption sharing no word with any class name gets class 0."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    names = [n.replace("_", " ") for n in class_names]
    vectorizer = TfidfVectorizer(sublinear_tf=True).fit([*train_captions, *names])
    sims = vectorizer.transform(test_captions) @ vectorizer.transform(names).T  # (N, K)
    return np.asarray(sims.toarray().argmax(axis=1))


def accuracy(predicted: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """Share of correct predictions, in %."""
    return float((torch.as_tensor(predicted) == torch.as_tensor(labels)).float().mean() * 100)


def balanced_accuracy(predicted: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """The mean over the classes present in ``labels`` of each class's share of correct
    predictions, in %: on unequal classes, answering the largest class always scores
    100 / classes, as chance does, where plain accuracy scores the class's share."""
    predicted, labels = torch.as_tensor(predicted), torch.as_tensor(labels)
    classes = int(labels.max()) + 1
    right = torch.bincount(labels[predicted == labels], minlength=classes).double()
    seen = torch.bincount(labels, minlength=classes).double()
    return float((right[seen > 0] / seen[seen > 0]).mean() * 100)
