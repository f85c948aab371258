"""Subword tokenizers trained on the user's own corpus, built on Hugging Face ``tokenizers``.

    tok = train_tokenizer(corpus.texts, kind="wordpiece", vocab_size=8000)
    tokens = encode_batch(tok, corpus.texts, max_length=128)   # int64 (N, L)
    starts = word_start_table(tok)                             # bool (vocab,), whole-word masking

Three kinds, all with the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0..4:

* ``wordpiece``: BERT's. Unicode clean-up (+ lowercase and accent stripping), split on
  whitespace and punctuation, pieces inside a word carry the prefix ``##``.
* ``bpe``: Sennrich et al.'s merges over whitespace/punctuation-split words (+ NFKC and
  lowercase); pieces inside a word carry the same ``##`` prefix as WordPiece, so a token
  alone says whether it starts a word.
* ``byte-bpe``: GPT-2's byte-level BPE: every byte is in the alphabet (no ``[UNK]`` ever), a
  word's first piece starts with ``Ġ`` (the space, written as a visible byte); case is kept.
* ``word``: whole words, as word2vec sees them: accents stripped, lowercased, every run of
  letters and digits a word (punctuation dropped), the words seen at least
  ``WORD_MIN_COUNT`` times kept and the rest ``[UNK]``.

A row of ``encode_batch`` is ``[CLS] t_1 .. t_k [SEP] [PAD] ..`` with k <= L - 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from torch import Tensor

from selfsup.errors import SelfsupError

TokenizerKind = Literal["wordpiece", "bpe", "byte-bpe", "word"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

TOKENIZER_FILE = "tokenizer.json"
"""A text run's tokenizer, in its run folder and beside its exported encoder."""
TOKENIZER_KINDS = ("wordpiece", "bpe", "byte-bpe", "word")
"""The special tokens of every kind, at ids 0..4 in this order."""

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
FIRST_WORD_ID = len(SPECIAL_TOKENS)
"""The first id after the special tokens: the ids a text's own tokens get."""

CONTINUATION_PREFIX = "##"
"""Marks a wordpiece/bpe token that continues a word (BERT's convention)."""

BYTE_LEVEL_SPACE = "\u0120"
"""``Ġ``: how byte-level BPE writes the space that opens a word."""

_KINDS = TOKENIZER_KINDS

WORD_MIN_COUNT = 5
"""A ``word`` tokenizer keeps the words seen at least this often (word2vec's ``min_count``)."""


def train_tokenizer(
    texts: Iterable[str],
    kind: TokenizerKind = "wordpiece",
    vocab_size: int = 8000,
    lowercase: bool = True,
    min_frequency: int | None = None,
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``texts`` (one pass, streamed to the Rust trainer).

    Args:
        texts: the training corpus, any iterable of strings (a list, a generator).
        kind: ``wordpiece`` (BERT; a good default for masked language modelling), ``bpe``,
            or ``byte-bpe`` (GPT-2; never produces ``[UNK]``, the usual choice for next-token
            prediction).
        vocab_size: the most tokens, specials included. 8000 suits corpora of a few MB;
            use 16k-32k for hundreds of MB. byte-bpe always holds its 256 bytes on top of
            the specials. The result may be smaller when the corpus has too few merges.
        lowercase: lowercase (and, for wordpiece, strip accents) before splitting; ignored
            by byte-bpe, which keeps every byte.
        min_frequency: a merge (or piece, or word) must occur at least this often to enter
            the vocabulary; None is 2 for subwords, which drops one-off noise (raise it for
            large noisy corpora), and word2vec's 5 for words.

    Raises:
        SelfsupError: unknown kind, too small a vocabulary, or no text at all.
    """
    if kind not in _KINDS:
        raise SelfsupError(f"unknown tokenizer kind {kind!r}; use one of {', '.join(_KINDS)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise SelfsupError(f"vocab size must be an integer, got {vocab_size!r}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise SelfsupError(
            f"vocab size {vocab_size} leaves no room beside the {len(SPECIAL_TOKENS)} special "
            "tokens; 8000 works well for a few MB of text"
        )
    if min_frequency is None:
        min_frequency = WORD_MIN_COUNT if kind == "word" else 2
    if min_frequency < 1:
        raise SelfsupError(f"min_frequency must be at least 1, got {min_frequency}")

    specials = list(SPECIAL_TOKENS)
    trainer: trainers.Trainer
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            continuing_subword_prefix=CONTINUATION_PREFIX,
            show_progress=False,
        )
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
        steps: list[normalizers.Normalizer] = [normalizers.NFKC()]
        if lowercase:
            steps.append(normalizers.Lowercase())
        tok.normalizer = normalizers.Sequence(steps)
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)  # joins "##" pieces
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            continuing_subword_prefix=CONTINUATION_PREFIX,
            show_progress=False,
        )
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence(
            [
                normalizers.NFKD(),
                normalizers.StripAccents(),
                normalizers.Lowercase(),
                normalizers.Replace(Regex(r"[^a-z0-9]+"), " "),
            ]
        )
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            show_progress=False,
        )
    else:  # byte-bpe
        tok = Tokenizer(models.BPE())
        # A prefix space gives the first word its "Ġ" too, so every word starts alike.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )

    counted = _Counted(texts)
    tok.train_from_iterator(counted, trainer=trainer)
    if counted.n == 0:
        raise SelfsupError("no text to train the tokenizer on: the corpus is empty")
    _check_specials(tok, "the trained tokenizer")
    return tok


class _Counted:
    """Iterate over strings while counting them (to tell an empty corpus apart)."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        self.n = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if not isinstance(text, str):
                raise SelfsupError(
                    f"tokenizer training needs strings, got {type(text).__name__}: {text!r:.60}"
                )
            self.n += 1
            yield text


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """Write ``tok`` as one JSON file (the format ``tokenizers`` and ``transformers`` read)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    tok.save(str(partial))
    partial.replace(path)  # atomic: a crash never leaves half a file under the real name


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer JSON written by ``save_tokenizer``.

    Raises:
        SelfsupError: the file is missing, is not a tokenizer, or lacks the special tokens
            at ids 0..4.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SelfsupError(f"tokenizer file {path} not found; train one or check the path")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception on bad JSON
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SelfsupError(
            f"cannot read tokenizer file {path} ({reason}); it is corrupt or not a tokenizer "
            "JSON: train a new one"
        ) from None
    _check_specials(tok, f"tokenizer file {path}")
    return tok


def _check_specials(tok: Tokenizer, what: str) -> None:
    for i, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != i:
            raise SelfsupError(
                f"{what} does not hold {token} at id {i} (it has {tok.token_to_id(token)}); "
                "selfsup needs [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0..4: train it with "
                "selfsup.data.tokenizer.train_tokenizer"
            )


def encode_batch(tok: Tokenizer, texts: Sequence[str], max_length: int) -> Tensor:
    """Tokenize ``texts`` into one padded int64 tensor (N, L), L = ``max_length``.

    Row i is ``[CLS] t_1 .. t_k [SEP] [PAD] .. [PAD]`` with k = min(len(tokens_i), L - 2): a
    long text is cut at the end so ``[SEP]`` stays the last real token; ``[PAD]`` is id 0.
    The texts are tokenized in parallel by the Rust batch encoder.
    """
    if max_length < 2:
        raise SelfsupError(f"max_length must leave room for [CLS] and [SEP]: got {max_length}")
    if isinstance(texts, str):
        raise SelfsupError("encode_batch takes a list of texts, got one string; wrap it in [...]")
    if tok.truncation is not None or tok.padding is not None:
        tok = Tokenizer.from_str(tok.to_str())  # a copy, so the caller's settings stay
        tok.no_truncation()
        tok.no_padding()
    n, body = len(texts), max_length - 2
    encodings = tok.encode_batch_fast(list(texts), add_special_tokens=False)
    rows = [e.ids[:body] for e in encodings]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n)  # (N,)
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    out = np.full((n, max_length), PAD_ID, dtype=np.int64)  # (N, L)
    out[:, 0] = CLS_ID
    # The body positions 1..k_i of every row, in row-major order, are exactly ``flat``.
    body_mask = np.arange(body)[None, :] < lengths[:, None]  # (N, L - 2)
    out[:, 1 : 1 + body][body_mask] = flat
    out[np.arange(n), lengths + 1] = SEP_ID
    return torch.from_numpy(out)


def word_start_table(tok: Tokenizer) -> Tensor:
    """bool (V,): True where token id v begins a word, for whole-word masking.

    wordpiece and bpe: the token does not start with ``##``; byte-bpe: it starts with ``Ġ``
    (a punctuation piece glued to the word before it counts as that word's continuation, as
    in GPT-2); a Metaspace (SentencePiece) tokenizer: it starts with ``▁``. Special and
    added tokens always start a word.
    """
    model = tok.model
    prefix = getattr(model, "continuing_subword_prefix", None)
    vocab = tok.get_vocab(with_added_tokens=True)
    table = torch.zeros(tok.get_vocab_size(with_added_tokens=True), dtype=torch.bool)
    if isinstance(model, models.WordLevel):
        starts = set(vocab.values())  # every token is a whole word
    elif prefix:
        starts = {i for t, i in vocab.items() if not t.startswith(prefix)}
    elif isinstance(tok.pre_tokenizer, pre_tokenizers.ByteLevel):
        starts = {i for t, i in vocab.items() if t.startswith(BYTE_LEVEL_SPACE)}
    elif isinstance(tok.pre_tokenizer, pre_tokenizers.Metaspace):
        starts = {i for t, i in vocab.items() if t.startswith("\u2581")}
    else:
        raise SelfsupError(
            f"cannot tell word starts for this {type(model).__name__} tokenizer (no '##' "
            "prefix, byte-level or metaspace pre-tokenizer); train it with train_tokenizer"
        )
    starts |= {i for i in tok.get_added_tokens_decoder()}
    table[torch.tensor(sorted(i for i in starts if i < len(table)), dtype=torch.long)] = True
    return table


def decode(tok: Tokenizer, ids: Sequence[int] | Tensor) -> str:
    """The text of one row of token ids (L,), without ``[CLS]``/``[SEP]``/``[PAD]``/``[MASK]``."""
    if isinstance(ids, Tensor):
        if ids.dim() != 1:
            raise SelfsupError(f"decode takes one row of ids (L,), got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    return tok.decode(list(ids), skip_special_tokens=True).strip()


PAD_ID = SPECIAL_TOKENS.index("[PAD]")
"""The id of [PAD] in every tokenizer selfsup trains (0): batches are padded with it."""


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Ids of [PAD], [UNK], [CLS], [SEP] and [MASK] in a selfsup tokenizer (0-4)."""
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    missing = [token for token, i in ids.items() if i is None]
    if missing:
        raise SelfsupError(
            f"the tokenizer lacks the special tokens {missing}: train it with selfsup "
            "(--set data.tokenizer=wordpiece) or add them"
        )
    return ids


def run_tokenizer(
    spec: str,
    run_dir: Path,
    *,
    kind: str = "wordpiece",
    vocab_size: int = 8000,
    write: bool = True,
    texts: Callable[[], list[str]] | None = None,
) -> Any:
    """The tokenizer of a text run: the run folder's ``tokenizer.json`` when it exists
    (resume), else the file ``kind`` names, else a new one of that kind trained on the
    training split of ``spec`` (or on ``texts()``, the captions of pairs); written into
    ``run_dir`` when ``write``."""
    from selfsup.data.text import load_texts

    saved = run_dir / TOKENIZER_FILE
    if saved.is_file():
        return load_tokenizer(saved)
    if kind in TOKENIZER_KINDS:
        corpus = texts() if texts is not None else load_texts(spec, "train").texts
        tokenizer = train_tokenizer(corpus, kind, vocab_size)  # type: ignore[arg-type]
    elif Path(kind).is_file():
        tokenizer = load_tokenizer(kind)
    else:
        raise SelfsupError(
            f"data.tokenizer {kind!r} is neither a kind ({', '.join(TOKENIZER_KINDS)}) nor a "
            "tokenizer.json file"
        )
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        partial = saved.with_name(f".{TOKENIZER_FILE}.{os.getpid()}")
        save_tokenizer(tokenizer, partial)
        os.replace(partial, saved)  # every process of a DDP run writes the same file
    return tokenizer


def find_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved in a run or export folder; a clear error when there is none."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise SelfsupError(
            f"no {TOKENIZER_FILE} in {str(folder)!r}: a text encoder needs the tokenizer it "
            "was trained with; copy it from the run folder"
        )
    return load_tokenizer(path)
