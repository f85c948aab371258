"""word2vec: its sampling (subsampling, the dynamic window's pairs, CBOW windows, the
unigram^0.75 noise) and its loss against slow references written the obvious way; the word
tokenizer; the word2vec text format read back by gensim; the benchmark scores against
gensim's own evaluation; and a tiny run end to end whose vectors learn the corpus's topics."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.data.tokenizer import FIRST_WORD_ID, encode_batch, train_tokenizer
from selfsup.engine.optim import linear_lr
from selfsup.errors import SelfsupError
from selfsup.evaluate.words import (
    analogy_accuracy,
    benchmark_file,
    pair_spearman,
    read_analogies,
    read_pairs,
    save_word2vec_format,
    word_vectors,
)
from selfsup.losses.sgns import SGNSLoss
from selfsup.views.skipgram import (
    cbow_windows,
    dynamic_spans,
    keep_probabilities,
    noise_cdf,
    sample_negatives,
    skipgram_pairs,
    subsample,
)

COUNTS = torch.tensor([0, 3, 0, 0, 0, 5000, 1200, 300, 40, 7, 1, 0, 25000])
"""Counts of ids 0..12: specials 0-4 (an [UNK] count among them), one unseen word (11)."""


# --- subsampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("sample", [1e-3, 1e-2, 1e-5, 0.0])
def test_keep_probabilities_are_word2vec_c(sample):
    """word2vec.c: ran = (sqrt(cn / (sample * train_words)) + 1) * (sample * train_words) / cn."""
    total = sum(int(c) for i, c in enumerate(COUNTS) if i >= FIRST_WORD_ID)
    got = keep_probabilities(COUNTS, sample)
    for i, c in enumerate(COUNTS.tolist()):
        if i < FIRST_WORD_ID or c == 0:
            want = 0.0
        elif sample == 0:
            want = 1.0
        else:
            t = sample * total
            want = min(1.0, (math.sqrt(c / t) + 1) * t / c)
        assert got[i].item() == pytest.approx(want, rel=1e-12), i


def test_subsample_drops_specials_and_compacts_rows_in_order():
    tokens = torch.tensor([[2, 5, 6, 7, 8, 3, 0, 0], [2, 12, 1, 9, 12, 10, 3, 0]])
    keep = keep_probabilities(COUNTS, 1e-3).float()
    g = torch.Generator().manual_seed(3)
    rows = subsample(tokens, keep, generator=g)
    # the same draws, by hand: a word stays when its draw is below its keep probability
    draws = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(3))
    for row, drawn, got in zip(tokens.tolist(), draws.tolist(), rows.tolist()):
        kept = [t for t, u in zip(row, drawn) if t >= FIRST_WORD_ID and u < keep[t].item()]
        assert got == kept + [0] * (len(row) - len(kept))


def test_subsample_keeps_each_word_at_its_rate():
    keep = keep_probabilities(COUNTS, 1e-3).float()
    tokens = torch.tensor([5, 6, 7, 12]).repeat(20000, 1)  # (20000, 4)
    rows = subsample(tokens, keep, generator=torch.Generator().manual_seed(0))
    for word in (5, 6, 7, 12):
        rate = (rows == word).sum().item() / 20000
        assert rate == pytest.approx(keep[word].item(), abs=0.012), word


# --- the dynamic window's pairs ------------------------------------------------------------


def _reference_pairs(rows: list[list[int]], spans: list[list[int]]) -> list[tuple[int, int]]:
    """For every word i of every row, every word j != i with |i - j| <= span_i."""
    pairs = []
    for row, reach in zip(rows, spans):
        words = [t for t in row if t > 0]
        for i, center in enumerate(words):
            for j in range(max(0, i - reach[i]), min(len(words), i + reach[i] + 1)):
                if j != i:
                    pairs.append((center, words[j]))
    return sorted(pairs)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_skipgram_pairs_match_the_obvious_loops(window):
    g = torch.Generator().manual_seed(window)
    rows = torch.randint(5, 40, (6, 14), generator=g)
    for r, length in enumerate([14, 9, 3, 1, 0, 12]):
        rows[r, length:] = 0
    spans = dynamic_spans(rows, window, generator=g)
    centers, contexts = skipgram_pairs(rows, spans)
    got = sorted(zip(centers.tolist(), contexts.tolist()))
    assert got == _reference_pairs(rows.tolist(), spans.tolist())


def test_dynamic_spans_are_uniform_in_one_to_window():
    rows = torch.full((4000, 10), 7)
    rows[:, 8:] = 0
    spans = dynamic_spans(rows, 5, generator=torch.Generator().manual_seed(0))
    assert (spans[:, 8:] == 0).all()
    shares = torch.bincount(spans[:, :8].flatten(), minlength=6)[1:].double() / (4000 * 8)
    assert torch.allclose(shares, torch.full((5,), 0.2, dtype=torch.float64), atol=0.01)


def test_cbow_windows_match_the_obvious_loops():
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(5, 40, (5, 11), generator=g)
    rows[1, 6:], rows[2, 1:], rows[3, :] = 0, 0, 0
    spans = dynamic_spans(rows, 3, generator=g)
    centers, ids, mask = cbow_windows(rows, spans)
    got = sorted((c, tuple(sorted(i[m].tolist()))) for c, i, m in zip(centers.tolist(), ids, mask))
    want = []
    for row, reach in zip(rows.tolist(), spans.tolist()):
        words = [t for t in row if t > 0]
        for i, center in enumerate(words):
            lo, hi = max(0, i - reach[i]), min(len(words), i + reach[i] + 1)
            context = tuple(sorted(words[j] for j in range(lo, hi) if j != i))
            if context:
                want.append((center, context))
    assert got == sorted(want)


# --- the noise distribution ----------------------------------------------------------------


def _unigram_table(counts: list[int], size: int, power: float = 0.75) -> list[int]:
    """word2vec.c's InitUnigramTable: ``size`` slots, each word filling a share of them
    proportional to count^power."""
    vocab = [(i, c) for i, c in enumerate(counts) if i >= FIRST_WORD_ID and c > 0]
    total = sum(c**power for _, c in vocab)
    table, w = [], 0
    share = vocab[0][1] ** power / total
    for a in range(size):
        table.append(vocab[w][0])
        if a / size > share:
            w += 1
            share += vocab[w][1] ** power / total
        w = min(w, len(vocab) - 1)
    return table


@pytest.mark.parametrize("power", [0.75, 1.0, 0.0])
def test_noise_distribution_is_the_unigram_table(power):
    cdf = noise_cdf(COUNTS, power)
    probs = torch.diff(cdf, prepend=torch.zeros(1, dtype=torch.float64))
    size = 100_000
    table = Counter(_unigram_table(COUNTS.tolist(), size, power))
    for i, c in enumerate(COUNTS.tolist()):
        want = c**power if i >= FIRST_WORD_ID and c > 0 else 0.0
        want /= sum(x**power for j, x in enumerate(COUNTS.tolist()) if j >= FIRST_WORD_ID and x > 0)
        assert probs[i].item() == pytest.approx(want, abs=1e-12)
        assert table[i] / size == pytest.approx(want, abs=2 / size + 1e-4)


def test_negatives_are_drawn_at_the_noise_rates():
    cdf = noise_cdf(COUNTS)
    probs = torch.diff(cdf, prepend=torch.zeros(1, dtype=torch.float64))
    draws = sample_negatives(cdf, (200_000, 5), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=len(COUNTS)).double() / draws.numel()
    assert torch.allclose(freq, probs, atol=3e-3)
    assert (freq[:FIRST_WORD_ID] == 0).all() and freq[11] == 0  # specials, unseen words


# --- the loss ------------------------------------------------------------------------------


def _reference_sgns(inputs, outputs, keep) -> float:
    total = 0.0
    for v, us, ks in zip(inputs.tolist(), outputs.tolist(), keep.tolist()):
        dots = [sum(a * b for a, b in zip(v, u)) for u in us]
        total -= math.log(1 / (1 + math.exp(-dots[0])))
        for dot, k in zip(dots[1:], ks):
            if k:
                total -= math.log(1 / (1 + math.exp(dot)))
    return total


@pytest.mark.parametrize("negatives, width", [(5, 8), (1, 3), (15, 16)])
def test_sgns_loss_matches_the_formula(negatives, width):
    g = torch.Generator().manual_seed(negatives)
    inputs = torch.randn(7, width, generator=g)
    outputs = torch.randn(7, 1 + negatives, width, generator=g)
    keep = torch.rand(7, negatives, generator=g) > 0.2
    got = SGNSLoss()(inputs, outputs, keep)
    assert got.item() == pytest.approx(_reference_sgns(inputs, outputs, keep), rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32 all the same
        assert SGNSLoss()(inputs, outputs, keep).item() == pytest.approx(got.item(), rel=1e-6)


def test_linear_schedule_falls_to_its_floor():
    lrs = [linear_lr(s, 101, 0.025, 1, 1e-4) for s in range(101)]
    assert (
        lrs[0] == 0.025
        and lrs[1] == 0.025
        and lrs[-1] == pytest.approx(0.025 * (1 - 0.99 * (1 - 1e-4)))
    )
    assert linear_lr(101, 101, 0.025, 1, 1e-4) == pytest.approx(0.025e-4)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


# --- the method on a corpus of two topics ---------------------------------------------------

TOPICS = (
    "cat dog horse cow sheep goat pig mouse rabbit fox".split(),
    "red blue green yellow purple orange black white brown pink".split(),
)


def _topic_corpus(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(TOPICS[i % 2], k=rng.randint(6, 12))) for i in range(n)]


def _within_minus_across(words: list[str], vectors: torch.Tensor) -> float:
    """Mean cosine of word pairs of one topic minus that of pairs across the topics."""
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)
    index = {w: i for i, w in enumerate(words)}
    topic = {w: t for t, ws in enumerate(TOPICS) for w in ws}
    within, across = [], []
    for a in topic:
        for b in topic:
            if a < b:
                (within if topic[a] == topic[b] else across).append(
                    float(unit[index[a]] @ unit[index[b]])
                )
    return sum(within) / len(within) - sum(across) / len(across)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """word2vec through ``selfsup pretrain`` on a text file of two topics (a few seconds)."""
    from selfsup.api import pretrain

    folder = tmp_path_factory.mktemp("w2v")
    (folder / "corpus.txt").write_text("\n".join(_topic_corpus()) + "\n")
    return pretrain(
        "selfsup/configs/fortunes-word2vec.yaml",
        evaluate=False,
        out=str(folder / "run"),
        overrides=[
            f"data.name=text:{folder / 'corpus.txt'}",
            "data.max_length=16",
            "encoder_args.embed_dim=16",
            "method_args.sample=0",
            "train.batch_size=16",
            "train.max_epochs=2",
            "train.progress=false",
        ],
    )


def test_word2vec_learns_the_topics_end_to_end(trained_run):
    words, vectors = word_vectors(trained_run.run_dir)
    assert sorted(words) == sorted(w for ws in TOPICS for w in ws)
    learned = _within_minus_across(words, vectors)
    from selfsup.export import load_encoder

    random_init = load_encoder(trained_run.run_dir).__class__(len(words) + FIRST_WORD_ID, 16)
    before = _within_minus_across(words, random_init.vectors.weight[FIRST_WORD_ID:].detach())
    assert learned > 0.3 and abs(before) < 0.15, (learned, before)


def test_word2vec_is_deterministic_by_seed(trained_run, tmp_path):
    from selfsup.api import pretrain

    cfg = trained_run.run_dir / "config.yaml"
    runs = [
        pretrain(cfg, evaluate=False, out=str(tmp_path / name), overrides=["train.max_steps=5"])
        for name in ("a", "b")
    ]
    first, second = (word_vectors(run.run_dir)[1] for run in runs)
    assert torch.equal(first, second)


def test_cbow_learns_the_topics():
    from selfsup.encoders import build_encoder
    from selfsup.methods import DataInfo, build_method

    torch.manual_seed(0)
    tok = train_tokenizer(_topic_corpus(), "word", 100)
    rows = encode_batch(tok, _topic_corpus(), 16)
    counts = torch.bincount(rows.flatten(), minlength=tok.get_vocab_size())
    info = DataInfo(modality="text", vocab_size=len(counts), tokenizer=tok, token_counts=counts)
    encoder = build_encoder("word-vectors", vocab_size=len(counts), max_length=16, embed_dim=16)
    method = build_method("word2vec", {"mode": "cbow", "sample": 0.0}, encoder, info)
    opt = torch.optim.SGD(method.parameters(), lr=0.05)
    for step in range(2 * len(rows) // 16):
        batch = rows[(step * 16) % len(rows) :][:16]
        for group in opt.param_groups:
            group["lr"] = linear_lr(step, 2 * len(rows) // 16, 0.05, 1, 1e-4)
        opt.zero_grad()
        method.training_step({"tokens": batch})["loss"].backward()
        opt.step()
    vocab = tok.get_vocab()
    words = [w for w in vocab if vocab[w] >= FIRST_WORD_ID]
    vectors = encoder.vectors.weight[[vocab[w] for w in words]].detach()
    assert _within_minus_across(words, vectors) > 0.3


def test_cbow_gives_every_context_word_the_whole_gradient():
    """word2vec.c feeds the mean of the window forward but adds the hidden layer's whole error
    to each context word's vector (not 1/n of it). Row [5 6 7], window 1: words 5 and 7 are
    only in the window of center 6, h = (v5 + v7) / 2, so each gets dL/dh of that one
    prediction, L = -log σ(h·u6) - Σ_k log σ(-h·u_k)."""
    from selfsup.encoders import build_encoder
    from selfsup.methods import DataInfo, build_method

    counts = torch.tensor([0, 0, 0, 0, 0, 10, 10, 10])
    info = DataInfo(modality="text", vocab_size=8, token_counts=counts)
    encoder = build_encoder("word-vectors", vocab_size=8, max_length=4, embed_dim=4)
    method = build_method("word2vec", {"mode": "cbow", "sample": 0.0, "window": 1}, encoder, info)
    torch.nn.init.normal_(method.output.weight)
    tokens = torch.tensor([[5, 6, 7, 0]])
    torch.manual_seed(0)
    method.training_step({"tokens": tokens})["loss"].backward()
    # the method's draws again: subsampling, spans, then negatives for centers 5, 6, 7
    torch.manual_seed(0)
    torch.rand(tokens.shape)
    torch.randint(0, 1, tokens.shape)
    negatives = sample_negatives(noise_cdf(counts), (3, 5))[1]  # center 6's
    v, u = encoder.vectors.weight.detach(), method.output.weight.detach()
    h = (v[5] + v[7]) / 2
    error = -torch.sigmoid(-h @ u[6]) * u[6]
    for k in negatives.tolist():
        if k != 6:
            error += torch.sigmoid(h @ u[k]) * u[k]
    grad = encoder.vectors.weight.grad
    assert torch.allclose(grad[5], error, atol=1e-6) and torch.allclose(grad[7], error, atol=1e-6)


# --- export and the benchmarks -------------------------------------------------------------


def test_word_vectors_command_writes_the_word2vec_format(trained_run, tmp_path, capsys):
    out = tmp_path / "vectors.txt"
    assert main(["word-vectors", str(trained_run.run_dir), "--out", str(out), "--no-eval"]) == 0
    words, vectors = word_vectors(trained_run.run_dir)
    lines = out.read_text().splitlines()
    assert lines[0] == f"{len(words)} 16" and len(lines) == len(words) + 1
    first = lines[1].split()
    assert first[0] == words[0] and len(first) == 17
    assert torch.allclose(
        torch.tensor([float(x) for x in first[1:]]), vectors[0], rtol=1e-5, atol=1e-7
    )
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(out), binary=False)
    assert list(kv.index_to_key) == words
    assert torch.allclose(torch.from_numpy(kv.vectors), vectors, rtol=1e-5, atol=1e-7)


def test_bad_input_is_one_line(trained_run, tmp_path, capsys):
    with pytest.raises(SelfsupError, match="whitespace"):
        save_word2vec_format(["a b"], torch.zeros(1, 3), tmp_path / "v.txt")
    from selfsup.encoders import build_encoder
    from selfsup.methods import DataInfo, build_method

    transformer = build_encoder("transformer-tiny", vocab_size=20, max_length=8, depth=1)
    info = DataInfo(modality="text", vocab_size=20, token_counts=torch.ones(20))
    with pytest.raises(SelfsupError, match="--encoder word-vectors"):
        build_method("word2vec", {}, transformer, info)
    table = build_encoder("word-vectors", vocab_size=20, max_length=8)
    with pytest.raises(SelfsupError, match="token counts"):
        build_method("word2vec", {}, table, DataInfo(modality="text", vocab_size=20))
    with pytest.raises(SelfsupError, match="window"):
        build_method("word2vec", {"window": 0}, table, info)
    assert main(["word-vectors", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_benchmark_scores_match_gensims_own_evaluation():
    """Our Spearman and 3CosAdd on random vectors for the benchmarks' words (a quarter of them
    left out, to exercise the coverage) agree with gensim's evaluate_word_pairs and
    evaluate_word_analogies."""
    gensim = pytest.importorskip("gensim")
    pairs, analogies = (
        read_pairs(benchmark_file("simlex999")),
        read_analogies(benchmark_file("google_analogy")),
    )
    vocab = sorted(
        {w for a, b, _ in pairs for w in (a, b)} | {w for q in analogies[::40] for w in q}
    )
    words = [w for i, w in enumerate(vocab) if i % 4]
    vectors = torch.randn(len(words), 12, generator=torch.Generator().manual_seed(0))
    kv = gensim.models.KeyedVectors(12)
    kv.add_vectors(words, vectors.numpy())
    ours = pair_spearman(words, vectors, pairs)
    _, (rho, _), oov = kv.evaluate_word_pairs(str(benchmark_file("simlex999")))
    assert ours["spearman"] == pytest.approx(rho, abs=1e-6)
    assert ours["coverage"] == pytest.approx(1 - oov / 100, abs=1e-6)
    subset = Path(__file__).parent / "_questions.txt"
    try:
        subset.write_text(": all\n" + "\n".join(" ".join(q) for q in analogies[::40]) + "\n")
        theirs, _ = kv.evaluate_word_analogies(str(subset))
        got = analogy_accuracy(words, vectors, analogies[::40])
    finally:
        subset.unlink(missing_ok=True)
    assert got["accuracy"] == pytest.approx(theirs, abs=1e-9)
    assert 0 < got["coverage"] < 1


def test_word_tokenizer_keeps_whole_words_seen_five_times():
    corpus = ["Café, CAFÉ! café's cafe-au-lait; 42 apples"] * 5 + ["rare words here"] * 4
    tok = train_tokenizer(corpus, "word", vocab_size=100)
    ids = tok.encode("The café's APPLES, rare", add_special_tokens=False).ids
    vocab = tok.get_vocab()
    assert set(vocab) - {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"} == {
        "cafe", "s", "au", "lait", "42", "apples"
    }  # fmt: skip
    assert ids == [1, vocab["cafe"], vocab["s"], vocab["apples"], 1]  # 1: [UNK]
    from selfsup.data.tokenizer import word_start_table

    assert word_start_table(tok).all()


def test_word_vectors_encoder_pools_words_and_masks_tokens():
    from selfsup.encoders import build_encoder

    table = build_encoder("word-vectors", vocab_size=12, max_length=5, embed_dim=3)
    tokens = torch.tensor([[2, 7, 9, 3, 0], [2, 3, 0, 0, 0]])  # the second row has no words
    w = table.vectors.weight
    torch.testing.assert_close(table(tokens)[0], (w[7] + w[9]) / 2)
    assert torch.equal(table(tokens)[1], torch.zeros(3))
    mask = torch.tensor([[False, True, False, False, True], [True, False, False, True, False]])
    assert torch.equal(table.forward_tokens(tokens, mask)[0, 1], torch.zeros(3))
    dropped = table.forward_tokens(tokens, mask, keep_masked=False)
    assert torch.equal(dropped[0], w[[2, 9, 3]]) and dropped.shape == (2, 3, 3)
