"""Zero-shot classification and cross-modal retrieval: pure functions over frozen embeddings.

Zero-shot (CLIP, §3.1.4): each class name is written into several prompt templates, the
prompts are embedded by the text tower and normalised, their mean is normalised again (the
prompt ensemble), and an image is given the class whose ensemble embedding is most similar to
its own. Retrieval: the held-out pairs are both the queries and the gallery; query i's
match is item i of the other side, and recall@K is the share of queries whose match ranks in
the top K by cosine similarity.
"""

from __future__ import annotations

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


def recall_at_k(
    queries: Tensor, gallery: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@K (%) of queries (N, P) against the gallery (N, P) whose item i is query i's
    match, by cosine similarity (ties broken against the match)."""
    q, g = F.normalize(queries.float(), dim=1), F.normalize(gallery.float(), dim=1)
    sims = q @ g.T  # (N, N)
    own = sims.diagonal().unsqueeze(1)  # (N, 1)
    rank = (sims >= own).sum(dim=1) - 1  # (N,): items scored at least as high, the match aside
    return {k: float((rank < k).float().mean() * 100) for k in ks}


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
