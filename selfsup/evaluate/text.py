"""Text evaluation: the TF-IDF + logistic-regression baseline, causal perplexity, and
(re-exported from `selfsup.evaluate.generate`) sampling from a language model.

TF-IDF + LR is the raw-input baseline a text encoder must beat (the "raw pixels" row of
the image tables). It runs on scikit-learn's sparse matrices: a 20,000-term vocabulary of
unigrams and bigrams stays sparse, where the dense standardised features of
`linear_probe` would cost N × 20,000 floats. Its one hyperparameter, C, is chosen on a
held-out part of the training labels, as `linear_probe` chooses its weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import SelfsupError
from selfsup.evaluate.generate import generate
from selfsup.evaluate.knn import knn_accuracy
from selfsup.evaluate.linear import stratified_split
from selfsup.evaluate.protocol import class_balanced_subset, format_fraction, result_row

__all__ = [
    "generate",  # lives in generate.py; re-exported so text evaluation has one import
    "perplexity",
    "tfidf_features",
    "tfidf_label_efficiency",
    "tfidf_logistic_regression",
]

DEFAULT_CS: tuple[float, ...] = (1.0, 10.0, 100.0)
LR_MAX_FEATURES = 20000  # the sparse vocabulary of TF-IDF + LR, as in the literature
NGRAM_RANGE = (1, 2)  # words and word pairs


def _vectorizer(max_features: int | None, ngram_range: tuple[int, int], sublinear_tf: bool) -> Any:
    """A TfidfVectorizer: lower-cased words of ≥ 2 characters, L2-normalised rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        max_features=max_features, ngram_range=ngram_range, sublinear_tf=sublinear_tf
    )


def _fit_transform(vectorizer: Any, texts: Sequence[str]) -> Any:
    """Fit the vectorizer on texts and return their sparse (N, F) matrix."""
    try:
        return vectorizer.fit_transform(list(texts))
    except ValueError as err:  # sklearn: "empty vocabulary; perhaps the documents only ..."
        raise SelfsupError(
            f"TF-IDF found no words in the training texts ({err}); pass documents with words "
            "of two or more letters"
        ) from err


def tfidf_features(
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    *,
    max_features: int = 4096,
    ngram_range: tuple[int, int] = NGRAM_RANGE,
    sublinear_tf: bool = True,
) -> tuple[Tensor, Tensor]:
    """Dense TF-IDF features of a capped vocabulary, for kNN and other dense probes.

    The vocabulary (the ``max_features`` most frequent n-grams) and the idf are fitted on
    the training texts only (no labels are read). With tf = 1 + log(count) when
    ``sublinear_tf`` and idf(t) = log((1 + N) / (1 + df(t))) + 1,

        x_t = tf_t · idf(t),   x <- x / ||x||_2

    Args:
        train_texts: N documents; test_texts: Q documents.
        max_features: vocabulary cap; 4096 keeps N × 4096 float32 manageable (15k
            documents take 250 MB). Use `tfidf_logistic_regression` for the full sparse
            vocabulary.
        ngram_range: (1, 2) adds bigrams to single words.
        sublinear_tf: damp repeated words with 1 + log(count).

    Returns:
        float32 (N, F) and (Q, F) features, F ≤ max_features.
    """
    _check_texts(train_texts, test_texts)
    vectorizer = _vectorizer(max_features, ngram_range, sublinear_tf)
    train = _fit_transform(vectorizer, train_texts)
    test = vectorizer.transform(list(test_texts))
    return (
        torch.from_numpy(train.astype(np.float32).toarray()),  # (N, F)
        torch.from_numpy(test.astype(np.float32).toarray()),  # (Q, F)
    )


def tfidf_logistic_regression(
    train_texts: Sequence[str],
    train_y: Tensor | np.ndarray,
    test_texts: Sequence[str],
    test_y: Tensor | np.ndarray,
    *,
    train_index: np.ndarray | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_features: int | None = LR_MAX_FEATURES,
    ngram_range: tuple[int, int] = NGRAM_RANGE,
    sublinear_tf: bool = True,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Accuracy of multinomial logistic regression on sparse TF-IDF features.

    1. Fit the TF-IDF vocabulary and idf on all ``train_texts`` (no labels: like an
       encoder pretrained on the unlabelled corpus) and transform both sets.
    2. Keep the labelled rows ``train_index`` (default all), split them (stratified,
       ``val_fraction`` per class, ``seed``), fit one classifier per C on the rest and keep
       the best on the held-out part (ties go to the smaller C, i.e. the stronger
       regulariser).
    3. Refit on all labelled rows with that C and score on test.

    sklearn's LogisticRegression(C) minimises C · sum_n CE_n + ½ ||W||², i.e. the
    `fit_linear_classifier` objective with weight_decay = 1 / (C N).

    Args:
        train_texts: N documents; train_y: (N,) labels. test_texts, test_y: Q of each.
        train_index: indices of the labelled training rows, e.g. from
            `class_balanced_subset` for the 1% / 10% protocol.
        Cs: candidate inverse regularisation strengths; TF-IDF rows have unit norm, so
            the best C is usually 1-100 (10-100 on fortunes, 45% test accuracy; 0.1
            underfits there, 22%).
        val_fraction: share of each labelled class held out to choose C.
        seed: seeds the split; the fit itself is deterministic.
        max_features: vocabulary cap (None for all n-grams); 20,000 as in the literature.
        ngram_range, sublinear_tf: as in `tfidf_features`.
        max_iter: L-BFGS iterations per fit.

    Returns:
        {"accuracy": float in [0, 1], "C": float (chosen), "val_accuracy": float | None,
         "c_selection": "validation" | "only-candidate" | "fallback-middle",
         "note": str ("" unless a fallback was taken), "num_train": int,
         "num_features": int}.
    """
    _check_texts(train_texts, test_texts)
    y_train = _labels(train_y, len(train_texts), "train")
    y_test = _labels(test_y, len(test_texts), "test")
    if not Cs or min(Cs) <= 0:
        raise SelfsupError(f"Cs must be a non-empty list of positive values, got {list(Cs)}")
    if not 0.0 < val_fraction < 1.0:
        raise SelfsupError(f"val_fraction must lie in (0, 1), got {val_fraction}; 0.2 works")
    idx = np.arange(len(train_texts)) if train_index is None else np.asarray(train_index)
    if idx.size == 0:
        raise SelfsupError("train_index selects no training rows; pass at least one index")
    vectorizer = _vectorizer(max_features, ngram_range, sublinear_tf)
    x_train = _fit_transform(vectorizer, train_texts)  # sparse (N, F)
    x_test = vectorizer.transform(list(test_texts))  # sparse (Q, F)
    return _sparse_lr_probe(x_train, y_train, x_test, y_test, idx, Cs, val_fraction, seed, max_iter)


def _sparse_lr_probe(
    x_train: Any,
    y_train: np.ndarray,
    x_test: Any,
    y_test: np.ndarray,
    idx: np.ndarray,
    cs: Sequence[float],
    val_fraction: float,
    seed: int,
    max_iter: int,
) -> dict[str, Any]:
    """Steps 2-3 of `tfidf_logistic_regression` on vectorised sets: choose C on the rows
    idx of (x_train, y_train), refit, score on (x_test, y_test)."""
    from threadpoolctl import threadpool_limits

    x, y = x_train[idx], y_train[idx]
    # One BLAS/OpenMP thread: the sparse products are single-threaded anyway, and on a busy
    # 2-core machine idle threads spinning for the small dense steps made fits 10× slower.
    with threadpool_limits(1):
        choice = _choose_c(x, y, sorted(cs), val_fraction, seed, max_iter)
        model = _fit_lr(x, y, choice["C"], max_iter)
        accuracy = _lr_accuracy(model, x_test, y_test)
    return {
        "accuracy": accuracy,
        **choice,
        "num_train": int(idx.size),
        "num_features": int(x_train.shape[1]),
    }


def _fit_lr(x: Any, y: np.ndarray, c: float, max_iter: int, warm: Any = None) -> Any:
    """Multinomial L-BFGS logistic regression on sparse x (n, F), started from the solution
    of ``warm`` (a model fitted at another C on the same rows) when given; a constant model
    when y holds a single class (sklearn refuses to fit one)."""
    from sklearn.linear_model import LogisticRegression

    if np.unique(y).size < 2:
        return int(y[0])
    model = LogisticRegression(C=c, max_iter=max_iter, warm_start=warm is not None)
    if warm is not None:
        model.coef_, model.intercept_ = warm.coef_.copy(), warm.intercept_.copy()
    return model.fit(x, y)


def _lr_accuracy(model: Any, x: Any, y: np.ndarray) -> float:
    """Fraction of rows of x that `model` (or a constant class) labels y."""
    pred = np.full(y.shape, model) if isinstance(model, int) else model.predict(x)
    return float((pred == y).mean())


def _choose_c(
    x: Any, y: np.ndarray, cs: list[float], val_fraction: float, seed: int, max_iter: int
) -> dict[str, Any]:
    """Pick C by validation accuracy on a stratified split of the labelled rows only.

    ``cs`` ascends: each fit starts from the previous C's solution (the optimum is unique,
    so only the time changes: a third of the iterations on fortunes), and a tie keeps the
    smaller C."""
    if len(cs) == 1:
        return {
            "C": float(cs[0]),
            "val_accuracy": None,
            "c_selection": "only-candidate",
            "note": "",
        }
    split = stratified_split(y, val_fraction, seed)
    if split is None:
        middle = float(cs[len(cs) // 2])
        return {
            "C": middle,
            "val_accuracy": None,
            "c_selection": "fallback-middle",
            "note": (
                "a class has a single training label, so no validation split exists; "
                f"used the middle C {middle:g}"
            ),
        }
    fit_idx, val_idx = split
    best_c, best_acc, model = cs[0], -1.0, None
    for c in cs:
        warm = model if model is not None and not isinstance(model, int) else None
        model = _fit_lr(x[fit_idx], y[fit_idx], c, max_iter, warm)
        acc = _lr_accuracy(model, x[val_idx], y[val_idx])
        if acc > best_acc:
            best_c, best_acc = c, acc
    return {"C": float(best_c), "val_accuracy": best_acc, "c_selection": "validation", "note": ""}


def tfidf_label_efficiency(
    train_texts: Sequence[str],
    train_y: Tensor | np.ndarray,
    test_texts: Sequence[str],
    test_y: Tensor | np.ndarray,
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    protocols: Sequence[str] = ("linear", "knn"),
    encoder: str = "tf-idf",
    k: int = 20,
    temperature: float = 0.07,
    knn_features: int = 4096,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The TF-IDF baseline under the label-efficiency protocol of `evaluate_features`.

    Per fraction and seed, `class_balanced_subset` draws the labelled rows; "linear" is
    `tfidf_logistic_regression` on them with its defaults (20,000 uni- and bigrams,
    sparse; the texts are vectorised once), "knn" is `knn_accuracy`
    with them as the bank, on `tfidf_features` capped at ``knn_features`` terms. At
    fraction 1.0 one seed is run and std is 0.

    Returns:
        Rows shaped like those of `evaluate_features` ({"encoder", "protocol",
        "label_fraction", "accuracy", "std", "seeds", "num_train", "num_test"}), plus
        "Cs": list[float] (chosen per seed) for "linear" and "k", "temperature" for "knn";
        they can be concatenated with an encoder's rows for one table.
    """
    unknown = [p for p in protocols if p not in ("linear", "knn")]
    if unknown or not protocols:
        raise SelfsupError(f"unknown protocol(s) {unknown or list(protocols)}; choose linear, knn")
    if not seeds:
        raise SelfsupError("pass at least one seed, e.g. seeds=(0, 1, 2)")
    _check_texts(train_texts, test_texts)
    y_train = _labels(train_y, len(train_texts), "train")
    y_test = _labels(test_y, len(test_texts), "test")
    sparse = dense = None
    if "linear" in protocols:  # vectorised once: the vocabulary reads no labels
        vectorizer = _vectorizer(LR_MAX_FEATURES, NGRAM_RANGE, True)
        sparse = (_fit_transform(vectorizer, train_texts), vectorizer.transform(list(test_texts)))
    if "knn" in protocols:
        dense = tfidf_features(train_texts, test_texts, max_features=knn_features)
    rows = []
    for protocol in protocols:
        for fraction in fractions:
            run_seeds = list(seeds) if fraction < 1.0 else list(seeds)[:1]
            accuracies, chosen = [], []
            for seed in run_seeds:
                idx = class_balanced_subset(y_train, fraction, seed)
                if progress is not None:
                    progress(
                        f"{encoder} · {protocol} · {format_fraction(fraction)} labels · seed {seed}"
                    )
                if sparse is not None and protocol == "linear":
                    result = _sparse_lr_probe(
                        sparse[0], y_train, sparse[1], y_test, idx, DEFAULT_CS, 0.2, seed, 1000
                    )
                    accuracies.append(result["accuracy"])
                    chosen.append(result["C"])
                elif dense is not None:
                    bank_y, query_y = torch.from_numpy(y_train[idx]), torch.from_numpy(y_test)
                    accuracies.append(
                        knn_accuracy(dense[0][idx], bank_y, dense[1], query_y, k, temperature)
                    )
            extra: dict[str, Any] = (
                {"Cs": chosen}
                if protocol == "linear"
                else {"k": min(k, int(idx.size)), "temperature": float(temperature)}
            )
            rows.append(
                result_row(
                    encoder,
                    protocol,
                    fraction,
                    accuracies,
                    num_train=int(idx.size),
                    num_test=int(y_test.shape[0]),
                    **extra,
                )
            )
    return rows


@torch.no_grad()
def perplexity(
    model_logits_fn: Callable[[Tensor], Tensor],
    tokens: Tensor,
    *,
    pad_id: int | None = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Causal perplexity: exp of the mean next-token cross-entropy.

    With logits z = model_logits_fn(tokens) (B, L, V), every position t < L - 1 predicts
    token t + 1, and the targets that are not ``pad_id`` count:

        nll = (1/M) sum_{n, t : x_{n,t+1} != pad} -log softmax(z_{n,t})_{x_{n,t+1}}
        perplexity = exp(nll)

    M is the number of counted targets. Uniform logits over V tokens give perplexity V.
    Pad on the right: a real token that follows a pad is still counted.

    Args:
        model_logits_fn: (B, L) int64 tokens -> (B, L, V) logits of a causal model (each
            position sees only itself and earlier tokens); batches arrive on the device of
            ``tokens``.
        tokens: (N, L) int64 sequences, L ≥ 2.
        pad_id: padding token never predicted; None counts every target.
        batch_size: sequences per call of model_logits_fn.

    Returns:
        {"perplexity": float, "nll": float (nats per token), "tokens": int (M)}.
    """
    if tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise SelfsupError(
            f"perplexity expects int64 (N, L) token ids with L ≥ 2, got {tokens.dtype} of "
            f"shape {tuple(tokens.shape)}"
        )
    if batch_size < 1:
        raise SelfsupError(f"batch_size must be at least 1, got {batch_size}")
    total, count = 0.0, 0
    for start in range(0, tokens.shape[0], batch_size):
        x = tokens[start : start + batch_size].long()  # (B, L)
        logits = model_logits_fn(x)  # (B, L, V)
        if logits.ndim != 3 or logits.shape[:2] != x.shape:
            raise SelfsupError(
                f"model_logits_fn returned {tuple(logits.shape)} for tokens {tuple(x.shape)}; "
                "it must give (B, L, V) next-token logits"
            )
        target = x[:, 1:].to(logits.device)  # (B, L-1)
        nll = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), target, reduction="none"
        )  # (B, L-1)
        keep = torch.ones_like(target, dtype=torch.bool) if pad_id is None else target != pad_id
        total += float(nll[keep].double().sum())
        count += int(keep.sum())
    if count == 0:
        raise SelfsupError(
            "perplexity found no target tokens: every token after the first is padding "
            f"(pad_id={pad_id}); pass real sequences or the right pad_id"
        )
    mean = total / count
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": count}


def _labels(y: Tensor | np.ndarray, n: int, name: str) -> np.ndarray:
    """Labels as an int64 numpy vector of length n, non-negative."""
    arr = y.numpy() if isinstance(y, Tensor) else np.asarray(y)
    if arr.shape != (n,):
        raise SelfsupError(
            f"got {n} {name} texts but labels of shape {arr.shape}; pass one label per text"
        )
    if n and arr.min() < 0:
        raise SelfsupError(f"{name} labels must be non-negative class indices 0..K-1")
    return arr.astype(np.int64)


def _check_texts(train_texts: Sequence[str], test_texts: Sequence[str]) -> None:
    """Raise SelfsupError unless both sets are non-empty sequences of strings."""
    for name, texts in (("train", train_texts), ("test", test_texts)):
        if isinstance(texts, str) or len(texts) == 0:
            raise SelfsupError(
                f"{name} texts must be a non-empty list of documents (strings), got "
                f"{type(texts).__name__}{'' if isinstance(texts, str) else f' of {len(texts)}'}"
            )
