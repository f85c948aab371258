"""Text sources and tokenizers: layouts, splits and errors against slow references."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from selfsup.data.text import (
    FORTUNES_FOLDER,
    GCIDE_FILE,
    TEXT_DATASETS,
    TextCorpus,
    TextDataset,
    load_texts,
)
from selfsup.data.tokenizer import (
    SPECIAL_TOKENS,
    decode,
    encode_batch,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
    word_start_table,
)
from selfsup.errors import SelfsupError

KINDS = ("wordpiece", "bpe", "byte-bpe")

WORDS = (
    "the quick brown fox jumps over lazy dog cat sat on mat hello world jumping jumped "
    "foxes dogs running runner unbelievable believe able table tables stable"
).split()


def make_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Sentences of 3-12 random words, some capitalised, some with punctuation."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        out.append(" ".join(words) + rng.choice([".", "", "!", ", indeed."]))
    return out


CORPUS = make_corpus()


@pytest.fixture(scope="module", params=KINDS)
def tok(request: pytest.FixtureRequest):
    return train_tokenizer(CORPUS, request.param, vocab_size=300)


# --- tokenizers ----------------------------------------------------------------------------


def test_specials_at_fixed_ids(tok) -> None:
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == i
    assert tok.get_vocab_size() <= 300 or tok.get_vocab_size() == 256 + len(SPECIAL_TOKENS)


def test_save_load_round_trip(tok, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tok.json"
    save_tokenizer(tok, path)
    again = load_tokenizer(path)
    assert again.get_vocab() == tok.get_vocab()
    assert torch.equal(encode_batch(again, CORPUS[:50], 16), encode_batch(tok, CORPUS[:50], 16))
    assert not list(tmp_path.glob("sub/*.partial"))


def test_encode_batch_layout_matches_a_loop(tok) -> None:
    texts = ["", "hello", CORPUS[0], " ".join(CORPUS[:20]), "dog cat"]
    length = 12
    got = encode_batch(tok, texts, length)
    assert got.dtype == torch.int64 and got.shape == (len(texts), length)
    for row, text in zip(got.tolist(), texts):
        ids = tok.encode(text, add_special_tokens=False).ids[: length - 2]
        expected = [2, *ids, 3] + [0] * (length - 2 - len(ids))
        assert row == expected
    assert got[3, -1] == 3  # the long text is truncated so [SEP] is last
    assert got[0].tolist() == [2, 3] + [0] * (length - 2)


def test_encode_batch_ignores_a_tokenizers_own_padding(tok) -> None:
    copy = type(tok).from_str(tok.to_str())
    copy.enable_padding(length=40)
    copy.enable_truncation(3)
    assert torch.equal(encode_batch(copy, CORPUS[:10], 20), encode_batch(tok, CORPUS[:10], 20))
    assert copy.padding is not None  # the caller's tokenizer is left as it was


@pytest.mark.parametrize(
    ("kind", "text", "words"),
    [
        ("wordpiece", "the quick brown fox", 4),
        ("bpe", "the quick brown fox", 4),
        ("byte-bpe", "the quick brown fox", 4),
        ("wordpiece", "unbelievable tables, hello", 4),  # BERT splits "," off as a word
        ("bpe", "unbelievable tables, hello", 4),
        ("byte-bpe", "unbelievable tables, hello", 3),  # GPT-2 glues "," to the word before
        ("wordpiece", "zqxv jumping", 2),
    ],
)
def test_word_start_table_counts_words(kind: str, text: str, words: int) -> None:
    tok = train_tokenizer(CORPUS, kind, vocab_size=300)  # type: ignore[arg-type]
    table = word_start_table(tok)
    assert table.dtype == torch.bool and table.shape == (tok.get_vocab_size(),)
    assert table[: len(SPECIAL_TOKENS)].all()
    enc = tok.encode(text, add_special_tokens=False)
    assert int(table[enc.ids].sum()) == words, enc.tokens


def test_word_start_table_by_hand() -> None:
    """A word the small vocabulary must split: its first piece starts a word, the rest don't."""
    corpus = CORPUS + ["unbelievably"] * 3
    for kind, marker in (("wordpiece", "##"), ("bpe", "##"), ("byte-bpe", "\u0120")):
        tok = train_tokenizer(corpus, kind, vocab_size=120)  # type: ignore[arg-type]
        enc = tok.encode("unbelievably", add_special_tokens=False)
        assert len(enc.tokens) > 1, enc.tokens
        table = word_start_table(tok)
        got = [bool(table[i]) for i in enc.ids]
        assert got == [True] + [False] * (len(enc.ids) - 1), (kind, enc.tokens)
        if marker == "##":
            assert all(t.startswith("##") for t in enc.tokens[1:])
        else:
            assert enc.tokens[0].startswith(marker)


def test_decode_skips_specials() -> None:
    wp = train_tokenizer(CORPUS, "wordpiece", vocab_size=300)
    row = encode_batch(wp, ["The quick brown fox!"], 16)[0]
    assert decode(wp, row) == "the quick brown fox!"
    bb = train_tokenizer(CORPUS, "byte-bpe", vocab_size=300)
    row = encode_batch(bb, ["The Quick fox, naïve"], 32)[0]
    assert decode(bb, row) == "The Quick fox, naïve"  # bytes: case and accents kept
    assert decode(bb, row.tolist()) == "The Quick fox, naïve"


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(SelfsupError, match="unknown tokenizer kind"):
        train_tokenizer(CORPUS, "sentencepiece")  # type: ignore[arg-type]
    with pytest.raises(SelfsupError, match="empty"):
        train_tokenizer([], "wordpiece")
    with pytest.raises(SelfsupError, match="vocab size"):
        train_tokenizer(CORPUS, "bpe", vocab_size=5)
    missing = tmp_path / "nope.json"
    with pytest.raises(SelfsupError, match=re.escape(str(missing))):
        load_tokenizer(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not a tokenizer")
    with pytest.raises(SelfsupError, match=re.escape(str(bad))):
        load_tokenizer(bad)


# --- the user's own text -------------------------------------------------------------------


def hashed_to_test(key: str) -> bool:
    """The split rule written out: blake2b-64 of the key, mod 10,000, below 2,000."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h % 10_000 < 2_000


def test_txt_file_one_sample_a_line(tmp_path: Path) -> None:
    lines = [f"  sentence number {i} about {WORDS[i % len(WORDS)]}  " for i in range(500)]
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(lines[:250]) + "\n\n   \n" + "\n".join(lines[250:]) + "\n")
    train, test = load_texts(f"text:{path}", "train"), load_texts(f"text:{path}", "test")
    stripped = [s.strip() for s in lines]
    assert test.texts == [s for s in stripped if hashed_to_test(s)]
    assert train.texts == [s for s in stripped if not hashed_to_test(s)]
    assert 0.15 < len(test) / 500 < 0.25
    assert train.labels is None and train.class_names == [] and test.split == "test"


def test_jsonl_labels_sorted(tmp_path: Path) -> None:
    names = ["spam", "ham", "eggs"]
    records = [{"text": f"message {i}", "label": names[i % 3]} for i in range(300)]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    both = [load_texts(f"text:{path}", s) for s in ("train", "test")]
    for corpus in both:
        assert corpus.class_names == ["eggs", "ham", "spam"]
        assert corpus.labels is not None
        for text, label in zip(corpus.texts, corpus.labels):
            i = int(text.split()[1])
            assert corpus.class_names[label] == names[i % 3]
    assert sorted(both[0].texts + both[1].texts) == sorted(r["text"] for r in records)
    # integer labels keep their order; names are their text
    path.write_text(
        "\n".join(json.dumps({"text": f"t{i}", "label": 5 * (i % 2)}) for i in range(50))
    )
    corpus = load_texts(f"text:{path}", "train")
    assert corpus.class_names == ["0", "5"]
    assert corpus.labels == [int(t[1:]) % 2 for t in corpus.texts]


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": oops}\n')
    with pytest.raises(SelfsupError, match=rf"{re.escape(str(path))} line 3 is not JSON"):
        load_texts(f"text:{path}", "train")
    path.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(SelfsupError, match=r"line 2 has no \"text\""):
        load_texts(f"text:{path}", "train")
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(SelfsupError, match='line 2 lacks a "label"'):
        load_texts(f"text:{path}", "train")
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": 1}\n')
    with pytest.raises(SelfsupError, match="line 2"):
        load_texts(f"text:{path}", "train")


def test_text_folder_subfolders_are_classes(tmp_path: Path) -> None:
    for c in ("neg", "pos"):
        (tmp_path / c).mkdir()
        for i in range(40):
            (tmp_path / c / f"{i}.txt").write_text(f"\n {c} review {i}\n")
    (tmp_path / "pos" / "empty.txt").write_text("  \n")
    (tmp_path / "pos" / "notes.md").write_text("ignored")
    train, test = (load_texts(f"text:{tmp_path}", s) for s in ("train", "test"))
    assert train.class_names == test.class_names == ["neg", "pos"]
    assert len(train) + len(test) == 80
    assert {t.split()[0] for t in train.texts} == {"neg", "pos"}
    for corpus in (train, test):
        assert corpus.labels == [corpus.class_names.index(t.split()[0]) for t in corpus.texts]
    expected_test = {
        f"{c} review {i}"
        for c in ("neg", "pos")
        for i in range(40)
        if hashed_to_test(f"{c}/{i}.txt")
    }
    assert set(test.texts) == expected_test
    (tmp_path / "loose.txt").write_text("top level")
    with pytest.raises(SelfsupError, match="mixes"):
        load_texts(f"text:{tmp_path}", "train")


def test_flat_text_folder_is_unlabelled(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"{i}.txt").write_text(f"doc {i}")
    corpus = load_texts(f"text:{tmp_path}", "train")
    assert corpus.labels is None and corpus.class_names == []


def test_user_text_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(SelfsupError, match=re.escape(str(empty))):
        load_texts(f"text:{empty}", "train")
    with pytest.raises(SelfsupError, match="does not exist"):
        load_texts(f"text:{tmp_path / 'missing.txt'}", "train")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SelfsupError, match="no .txt files"):
        load_texts(f"text:{tmp_path / 'nothing'}", "train")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(SelfsupError, match="not UTF-8"):
        load_texts(f"text:{latin}", "train")
    with pytest.raises(SelfsupError, match="did you mean 'fortunes'"):
        load_texts("fortune", "train")
    with pytest.raises(SelfsupError, match="text needs a path"):
        load_texts("text", "train")
    with pytest.raises(SelfsupError, match="unknown split"):
        load_texts("fortunes", "val")  # type: ignore[arg-type]


def test_text_datasets_registry() -> None:
    assert set(TEXT_DATASETS) == {"fortunes", "gcide", "text", "python-stdlib", "code"}
    assert "apt-get install fortunes" in TEXT_DATASETS["fortunes"]
    assert "apt-get install dict-gcide" in TEXT_DATASETS["gcide"]


# --- the dataset ---------------------------------------------------------------------------


def test_text_dataset_contract() -> None:
    tok = train_tokenizer(CORPUS, "wordpiece", vocab_size=300)
    labels = [i % 3 for i in range(len(CORPUS))]
    corpus = TextCorpus(CORPUS, labels, ["a", "b", "c"], "text:x.jsonl", "train")
    ds = TextDataset(corpus, tok, 24)
    assert len(ds) == len(CORPUS)
    assert (ds.input_key, ds.modality, ds.in_memory, ds.skipped) == ("tokens", "text", True, [])
    assert ds.num_classes == 3 and ds.has_labels and ds.class_names == ["a", "b", "c"]
    assert ds.max_length == 24 and ds.vocab_size == tok.get_vocab_size()
    sample = ds[5]
    assert set(sample) == {"tokens", "label"}
    assert sample["tokens"].dtype == torch.int64 and sample["tokens"].shape == (24,)
    assert sample["label"].dtype == torch.int64 and sample["label"].dim() == 0
    assert int(sample["label"]) == 2
    assert torch.equal(ds.as_tensor(), encode_batch(tok, CORPUS, 24))
    assert ds.labels().tolist() == labels
    assert ds.texts() == CORPUS
    assert int(ds.as_tensor().max()) < ds.vocab_size
    unlabelled = TextDataset(TextCorpus(CORPUS[:7], None, [], "gcide", "test"), tok, 8)
    assert unlabelled.labels().tolist() == [-1] * 7
    assert not unlabelled.has_labels and unlabelled.num_classes == 0
    assert "unlabelled" in repr(unlabelled)


# --- fortunes ------------------------------------------------------------------------------


def reference_fortunes(folder: Path) -> dict[str, list[str]]:
    """Every category file's fortunes, read line by line."""
    out = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or "." in path.name:
            continue
        fortunes, block = [], []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.rstrip(" \t") == "%":
                fortunes.append("\n".join(block).strip())
                block = []
            else:
                block.append(line)
        fortunes.append("\n".join(block).strip())
        out[path.name] = [f for f in fortunes if f]
    return out


@pytest.mark.skipif(not FORTUNES_FOLDER.is_dir(), reason="Debian fortunes not installed")
def test_fortunes_32_classes_stratified() -> None:
    train, test = load_texts("fortunes", "train"), load_texts("fortunes", "test")
    ref = reference_fortunes(FORTUNES_FOLDER)
    kept = sorted(c for c, f in ref.items() if len(f) >= 100)
    assert len(kept) == 32
    assert train.class_names == test.class_names == kept
    assert train.labels is not None and test.labels is not None
    n_train, n_test = Counter(train.labels), Counter(test.labels)
    for i, c in enumerate(kept):
        n = len(ref[c])
        assert n_train[i] + n_test[i] == n
        assert abs(n_test[i] - 0.2 * n) <= 1, (c, n_test[i], n)
    # a partition: together they are exactly the reference, class by class
    pairs = Counter(zip(train.texts, train.labels)) + Counter(zip(test.texts, test.labels))
    assert pairs == Counter((f, i) for i, c in enumerate(kept) for f in ref[c])
    unique = {f for f, k in Counter(f for c in kept for f in ref[c]).items() if k == 1}
    assert not (set(train.texts) & set(test.texts) & unique)
    print(f"\nfortunes: {len(kept)} classes, {len(train)} train / {len(test)} test")


def test_fortunes_folder_and_missing(tmp_path: Path) -> None:
    for name, n in (("big", 150), ("also", 100), ("small", 99)):
        (tmp_path / name).write_text(
            "\n%\n".join(f"  {name} saying {i}\n -- someone" for i in range(n)) + "\n%\n"
        )
        (tmp_path / f"{name}.dat").write_bytes(b"\x00\x01")
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "rude").write_text("x\n%\n" * 500)
    train, test = (load_texts(f"fortunes:{tmp_path}", s) for s in ("train", "test"))
    assert train.class_names == ["also", "big"]
    assert (len(train), len(test)) == (200, 50)
    assert Counter(test.labels or []) == {0: 20, 1: 30}
    assert test.texts[0].startswith("also saying") and test.texts[0].endswith("-- someone")
    with pytest.raises(SelfsupError, match="apt-get install fortunes fortunes-min"):
        load_texts(f"fortunes:{tmp_path / 'none'}", "train")


# --- GCIDE ---------------------------------------------------------------------------------


def _b64(n: int) -> str:
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = digits[n % 64] + out
        n //= 64
        if not n:
            return out


def test_gcide_markup_and_chunks(tmp_path: Path) -> None:
    entries = [
        'Cockle \\Coc"kle\\, v. t. [Of uncertain origin.]\n   To cause to contract into '
        "wrinkles.\n   [1913 Webster]\n\n   {Cockling sea}, waves dashing against each other.\n"
        "      [1913 Webster]\n",
        "Wier \\Wier\\, n.\n   Same as {Weir}.\n   [WordNet 1.5 +PJC]\n",
        "Long \\Long\\, a.\n"
        + "\n\n".join(f"   {i}. sense {'word ' * 40}" for i in range(1, 6))
        + "\n",
    ]
    header = "00-database-info\n   licence text\n"
    blobs = [header.encode()] + [e.encode() for e in entries]
    data, index, offset = b"", [], 0
    for word, blob in zip(["00-database-info", "Cockle", "Wier", "Long"], blobs):
        index.append(f"{word}\t{_b64(offset)}\t{_b64(len(blob))}")
        data += blob + b"\n"
        offset += len(blob) + 1
    index.append(f"Cockling sea\t{_b64(len(blobs[0]) + 1)}\t{_b64(len(blobs[1]))}")  # shared entry
    (tmp_path / "mini.dict.dz").write_bytes(gzip.compress(data))
    (tmp_path / "mini.index").write_text("\n".join(sorted(index)) + "\n")
    texts = load_texts(f"gcide:{tmp_path / 'mini.dict.dz'}", "train").texts
    texts += load_texts(f"gcide:{tmp_path / 'mini.dict.dz'}", "test").texts
    assert (
        "Cockle, v. t. [Of uncertain origin.] To cause to contract into wrinkles. "
        "Cockling sea, waves dashing against each other." in texts
    )
    assert "Wier, n. Same as Weir." in texts
    long_chunks = [t for t in texts if "sense" in t]
    assert len(long_chunks) >= 2 and all(len(t) <= 512 for t in long_chunks)
    assert " ".join(long_chunks).count("sense") == 5
    assert not any("licence" in t or "\\" in t or "[1913" in t for t in texts)
    assert len(texts) == 2 + len(long_chunks)
    with pytest.raises(SelfsupError, match="apt-get install dict-gcide"):
        load_texts(f"gcide:{tmp_path / 'missing.dict.dz'}", "train")


@pytest.mark.skipif(not GCIDE_FILE.is_file(), reason="Debian dict-gcide not installed")
def test_gcide_loads() -> None:
    start = time.perf_counter()
    train = load_texts("gcide", "train")
    seconds = time.perf_counter() - start
    test = load_texts("gcide", "test")
    n = len(train) + len(test)
    assert n > 100_000 and train.labels is None
    assert 0.015 < len(test) / n < 0.025
    assert not set(train.texts[:5000]) & set(test.texts)
    sample = train.texts[:: max(1, len(train) // 2000)]
    assert not any("[1913 Webster]" in t or "{" in t or "\n" in t for t in sample)
    print(f"\ngcide: {len(train)} train / {len(test)} test samples, loaded in {seconds:.1f} s")
