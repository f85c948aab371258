"""Text evaluation: TF-IDF + logistic regression against sklearn done by hand, perplexity
against a slow loop, and sampling against argmax tables and softmax frequencies."""

import math

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from selfsup.errors import SelfsupError
from selfsup.evaluate.generate import generate
from selfsup.evaluate.knn import knn_accuracy
from selfsup.evaluate.linear import stratified_split
from selfsup.evaluate.protocol import class_balanced_subset
from selfsup.evaluate.text import (
    perplexity,
    tfidf_features,
    tfidf_label_efficiency,
    tfidf_logistic_regression,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems: on a busy 2-core machine spare BLAS threads only spin (10× slower)."""
    with threadpool_limits(1):
        yield


# ---------------------------------------------------------------- TF-IDF baseline


def corpus(
    n: int, seed: int, keywords_per_doc: int = 2, majority: bool = False
) -> tuple[list[str], np.ndarray]:
    """n documents of 4 classes: 8 words from a shared pool of 60 plus `keywords_per_doc`
    from the 5 keywords of the document's own class. Balanced classes, or with `majority`
    55% of class 0 and 15% of each other."""
    rng = np.random.default_rng(seed)
    shared = [f"common{i}" for i in range(60)]
    keywords = [[f"topic{c}word{i}" for i in range(5)] for c in range(4)]
    i = np.arange(n)
    y = np.where(i % 20 < 11, 0, 1 + i % 3) if majority else i % 4
    texts = []
    for c in y:
        words = list(rng.choice(shared, 8)) + list(rng.choice(keywords[c], keywords_per_doc))
        texts.append(" ".join(rng.permutation(words)))
    return texts, y


def test_tfidf_logistic_regression_learns_a_keyword_corpus():
    train_texts, train_y = corpus(400, seed=0)
    test_texts, test_y = corpus(200, seed=1)
    result = tfidf_logistic_regression(train_texts, train_y, test_texts, test_y)
    assert result["accuracy"] > 0.95
    assert result["c_selection"] == "validation" and result["note"] == ""
    assert result["num_train"] == 400 and result["num_features"] > 60


def test_c_is_chosen_on_held_out_training_labels_only():
    # with 55% of one class, a tiny C predicts only it (the intercept is not penalised)
    train_texts, train_y = corpus(400, seed=0, majority=True)
    test_texts, test_y = corpus(200, seed=1, majority=True)
    cs = (1e-4, 0.3, 30.0, 100.0)  # the last two tie: the smaller wins
    result = tfidf_logistic_regression(train_texts, train_y, test_texts, test_y, Cs=cs, seed=5)

    # by hand: the same split, one cold sklearn fit per C, the best validation accuracy
    x = TfidfVectorizer(max_features=20000, ngram_range=(1, 2), sublinear_tf=True)
    x = x.fit_transform(train_texts)
    fit, val = stratified_split(train_y, 0.2, seed=5)
    val_acc = {
        c: LogisticRegression(C=c, max_iter=1000)
        .fit(x[fit], train_y[fit])
        .score(x[val], train_y[val])
        for c in cs
    }
    best = max(val_acc.values())
    assert val_acc[1e-4] < 0.6 < 0.8 < best  # the choice matters
    assert val_acc[30.0] == val_acc[100.0] == best
    assert result["C"] == 30.0
    assert result["val_accuracy"] == pytest.approx(best)

    shuffled = np.random.default_rng(0).permutation(test_y)
    blind = tfidf_logistic_regression(train_texts, train_y, test_texts, shuffled, Cs=cs, seed=5)
    assert blind["C"] == result["C"]
    assert blind["accuracy"] < 0.6 < 0.8 < result["accuracy"]


def test_train_index_fits_on_the_subset_with_the_full_vocabulary():
    train_texts, train_y = corpus(400, seed=0, keywords_per_doc=1)
    test_texts, test_y = corpus(200, seed=1)
    idx = class_balanced_subset(train_y, 0.1, seed=2)
    result = tfidf_logistic_regression(
        train_texts, train_y, test_texts, test_y, train_index=idx, seed=2
    )
    assert result["num_train"] == idx.size == 40
    vectorizer = TfidfVectorizer(max_features=20000, ngram_range=(1, 2), sublinear_tf=True)
    x = vectorizer.fit_transform(train_texts)
    model = LogisticRegression(C=result["C"], max_iter=1000).fit(x[idx], train_y[idx])
    expected = model.score(vectorizer.transform(test_texts), test_y)
    assert result["accuracy"] == pytest.approx(expected)


def test_single_label_classes_fall_back_to_the_middle_c():
    train_texts, train_y = corpus(40, seed=0)
    test_texts, test_y = corpus(40, seed=1)
    idx = np.array([0, 1, 2, 3, 4, 5])  # classes 0 and 1 twice, 2 and 3 once
    result = tfidf_logistic_regression(
        train_texts, train_y, test_texts, test_y, train_index=idx, Cs=(1.0, 10.0, 100.0)
    )
    assert result["c_selection"] == "fallback-middle" and result["C"] == 10.0
    assert "single training label" in result["note"]


def test_tfidf_features_match_the_formula_by_hand():
    train = ["apple banana apple", "banana cherry", "cherry cherry cherry date"]
    test = ["apple date", "elderberry"]
    x_train, x_test = tfidf_features(train, test, ngram_range=(1, 1))
    vocab = sorted({w for doc in train for w in doc.split()})
    n = len(train)

    def by_hand(doc: str) -> list[float]:
        words = doc.split()
        row = []
        for term in vocab:
            count = words.count(term)
            df = sum(term in d.split() for d in train)
            tf = 1 + math.log(count) if count else 0.0
            row.append(tf * (math.log((1 + n) / (1 + df)) + 1))
        norm = math.sqrt(sum(v * v for v in row)) or 1.0
        return [v / norm for v in row]

    assert x_train.dtype == torch.float32 and x_train.shape == (3, len(vocab))
    assert torch.allclose(x_train, torch.tensor([by_hand(d) for d in train]), atol=1e-6)
    assert torch.allclose(x_test, torch.tensor([by_hand(d) for d in test]), atol=1e-6)
    assert torch.equal(x_test[1], torch.zeros(len(vocab)))  # unseen word: empty row


def test_tfidf_features_cap_the_vocabulary():
    train_texts, _ = corpus(200, seed=0)
    x_train, x_test = tfidf_features(train_texts, train_texts[:5], max_features=50)
    assert x_train.shape == (200, 50) and x_test.shape == (5, 50)
    norms = x_train.norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.ones_like(norms[norms > 0]), atol=1e-5)


def test_label_efficiency_rows_line_up_with_evaluate_features():
    train_texts, train_y = corpus(400, seed=0)
    test_texts, test_y = corpus(100, seed=1)
    seen = []
    rows = tfidf_label_efficiency(
        train_texts,
        torch.from_numpy(train_y),
        test_texts,
        torch.from_numpy(test_y),
        fractions=(0.1, 1.0),
        seeds=(0, 1),
        progress=seen.append,
    )
    assert [(r["protocol"], r["label_fraction"]) for r in rows] == [
        ("linear", 0.1),
        ("linear", 1.0),
        ("knn", 0.1),
        ("knn", 1.0),
    ]
    for r in rows:
        assert r["encoder"] == "tf-idf" and r["num_test"] == 100
        assert r["seeds"] == (2 if r["label_fraction"] < 1 else 1)
        assert r["num_train"] == (40 if r["label_fraction"] < 1 else 400)
        assert 0.0 <= r["std"] and 0.0 <= r["accuracy"] <= 1.0
    assert rows[1]["accuracy"] > 0.95 and rows[3]["accuracy"] > 0.9
    assert len(rows[0]["Cs"]) == 2 and rows[2]["k"] == 20
    assert rows[1]["std"] == 0.0 and len(seen) == 6
    alone = tfidf_logistic_regression(train_texts, train_y, test_texts, test_y, seed=0)
    assert rows[1]["accuracy"] == alone["accuracy"] and rows[1]["Cs"] == [alone["C"]]
    dense_train, dense_test = tfidf_features(train_texts, test_texts)
    knn = knn_accuracy(dense_train, torch.from_numpy(train_y), dense_test, torch.from_numpy(test_y))
    assert rows[3]["accuracy"] == knn


def test_text_inputs_are_checked():
    texts, y = corpus(20, seed=0)
    with pytest.raises(SelfsupError, match="one label per text"):
        tfidf_logistic_regression(texts, y[:-1], texts, y)
    with pytest.raises(SelfsupError, match="list of documents"):
        tfidf_features("one string", texts)
    with pytest.raises(SelfsupError, match="no words"):
        tfidf_features(["a", "b"], ["c"])


# ---------------------------------------------------------------- perplexity


def causal_model(vocab: int, seed: int):
    """logits_t = mean(E[x_0..x_t]) W + b: each position sees itself and earlier tokens."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab, 8, generator=g)
    weight, bias = torch.randn(8, vocab, generator=g), torch.randn(vocab, generator=g)

    def logits_fn(tokens: torch.Tensor) -> torch.Tensor:
        e = table[tokens]  # (B, L, 8)
        steps = torch.arange(1, tokens.shape[1] + 1, dtype=e.dtype)[None, :, None]
        return (e.cumsum(dim=1) / steps) @ weight + bias  # (B, L, V)

    return logits_fn


def padded_tokens(n: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    """(n, length) ids in 1..vocab-1, each row right-padded with 0 after a random length ≥ 2."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (n, length), generator=g)
    lengths = torch.randint(2, length + 1, (n,), generator=g)
    tokens[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return tokens


def test_perplexity_equals_a_slow_loop():
    vocab = 11
    logits_fn = causal_model(vocab, seed=0)
    tokens = padded_tokens(13, 9, vocab, seed=1)
    total, count = 0.0, 0
    for row in tokens:
        logits = logits_fn(row[None])[0].double()  # (L, V)
        for t in range(len(row) - 1):
            target = int(row[t + 1])
            if target == 0:
                continue
            log_z = math.log(sum(math.exp(v) for v in logits[t].tolist()))
            total += log_z - float(logits[t, target])
            count += 1
    for batch_size in (1, 4, 64):
        result = perplexity(logits_fn, tokens, batch_size=batch_size)
        assert result["tokens"] == count == int((tokens[:, 1:] != 0).sum())
        assert result["nll"] == pytest.approx(total / count, rel=1e-6)
        assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-6)


def test_uniform_logits_give_the_vocabulary_size():
    vocab = 37
    tokens = padded_tokens(10, 12, vocab, seed=0)
    result = perplexity(lambda x: torch.zeros(*x.shape, vocab), tokens)
    assert result["perplexity"] == pytest.approx(vocab, rel=1e-6)
    assert result["nll"] == pytest.approx(math.log(vocab), rel=1e-6)
    every = perplexity(lambda x: torch.zeros(*x.shape, vocab), tokens, pad_id=None)
    assert every["tokens"] == 10 * 11


def test_perplexity_rejects_bad_inputs():
    vocab = 5
    with pytest.raises(SelfsupError, match="no target tokens"):
        perplexity(lambda x: torch.zeros(*x.shape, vocab), torch.tensor([[3, 0, 0]]))
    with pytest.raises(SelfsupError, match=r"\(B, L, V\)"):
        perplexity(lambda x: torch.zeros(x.shape[0], vocab), torch.tensor([[3, 1, 2]]))
    with pytest.raises(SelfsupError, match="L ≥ 2"):
        perplexity(lambda x: torch.zeros(*x.shape, vocab), torch.tensor([[3]]))


# ---------------------------------------------------------------- generation


def bigram_table(vocab: int, seed: int) -> torch.Tensor:
    return torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2


def bigram_fn(table: torch.Tensor):
    """Next-token logits depend on the current token only: logits[b, t] = table[x[b, t]]."""
    return lambda tokens: table[tokens]  # (B, L, V)


def test_greedy_follows_the_argmax_table():
    table = bigram_table(9, seed=0)
    prompt = torch.tensor([[1, 4], [2, 7], [0, 3]])
    out = generate(bigram_fn(table), prompt, max_new_tokens=6, temperature=0.0)
    assert out.shape == (3, 8) and torch.equal(out[:, :2], prompt)
    for row in out:
        for t in range(2, 8):
            assert int(row[t]) == int(table[row[t - 1]].argmax())
    again = generate(bigram_fn(table), prompt, max_new_tokens=6, temperature=0.0)
    assert torch.equal(out, again)


def test_top_k_one_is_greedy():
    table = bigram_table(9, seed=1)
    prompt = torch.arange(9)[:, None]
    greedy = generate(bigram_fn(table), prompt, max_new_tokens=5, temperature=0.0)
    g = torch.Generator().manual_seed(0)
    sampled = generate(
        bigram_fn(table), prompt, max_new_tokens=5, temperature=1.3, top_k=1, generator=g
    )
    assert torch.equal(greedy, sampled)


def test_sampling_frequencies_match_the_softmax():
    table = bigram_table(6, seed=2)
    n = 200_000
    prompt = torch.full((n, 1), 2)
    g = torch.Generator().manual_seed(0)
    out = generate(
        bigram_fn(table), prompt, max_new_tokens=1, temperature=0.7, top_k=None, generator=g
    )
    freq = torch.bincount(out[:, 1], minlength=6).double() / n
    expected = (table[2].double() / 0.7).softmax(dim=0)
    assert torch.allclose(freq, expected, atol=0.005)  # ≥ 4.5 standard errors

    top = generate(bigram_fn(table), prompt, max_new_tokens=1, top_k=3, generator=g)
    freq = torch.bincount(top[:, 1], minlength=6).double() / n
    kept = table[2].topk(3).indices
    expected = torch.zeros(6, dtype=torch.float64)
    expected[kept] = table[2, kept].double().softmax(dim=0)
    assert torch.all(freq[expected == 0] == 0)
    assert torch.allclose(freq, expected, atol=0.005)


def test_a_generator_makes_sampling_repeatable():
    table = bigram_table(8, seed=3)
    prompt = torch.zeros(16, 1, dtype=torch.long)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return generate(bigram_fn(table), prompt, max_new_tokens=10, generator=g)

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_rows_stop_at_eos_and_pad_after():
    eos, pad = 3, 0
    table = torch.full((6, 6), -10.0)
    table[1, 2] = table[2, eos] = table[eos, 5] = 10.0  # 1 -> 2 -> eos
    table[4, 5] = table[5, 4] = 10.0  # 4 <-> 5 never ends
    prompt = torch.tensor([[1], [4]])
    out = generate(bigram_fn(table), prompt, max_new_tokens=5, temperature=0.0, eos_id=eos)
    assert out.tolist() == [[1, 2, eos, pad, pad, pad], [4, 5, 4, 5, 4, 5]]
    done = generate(bigram_fn(table), prompt[:1], max_new_tokens=5, temperature=0.0, eos_id=eos)
    assert done.tolist() == [[1, 2, eos]]  # every row finished: stops early


def test_long_contexts_are_cropped_to_max_length():
    vocab = 10

    def first_token(tokens):  # predicts the first token of whatever context it sees
        assert tokens.shape[1] <= 3
        return (
            torch.nn.functional.one_hot(tokens[:, :1], vocab)
            .float()
            .expand(-1, tokens.shape[1], -1)
        )

    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    out = generate(first_token, prompt, max_new_tokens=4, temperature=0.0, max_length=3)
    expected = prompt.tolist()
    for row in expected:
        for _ in range(4):
            row.append(row[-3])
    assert out.tolist() == expected


def test_generate_rejects_bad_arguments():
    fn = bigram_fn(bigram_table(4, seed=0))
    prompt = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(SelfsupError, match="temperature"):
        generate(fn, prompt, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(SelfsupError, match="top_k"):
        generate(fn, prompt, max_new_tokens=2, top_k=0)
    with pytest.raises(SelfsupError, match="BOS"):
        generate(fn, torch.zeros(2, 0, dtype=torch.long), max_new_tokens=2)
