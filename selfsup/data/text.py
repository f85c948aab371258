"""Text data sources: a spec string in, a corpus of strings out; a dataset of token ids on top.

    corpus = load_texts("fortunes", "train")                 # TextCorpus: texts, labels, ...
    tok = train_tokenizer(corpus.texts)                      # selfsup.data.tokenizer
    dataset = TextDataset(corpus, tok, max_length=128)
    dataset[0]  # {"tokens": int64 (L,), "label": int64 scalar}

Specs:
    fortunes[:FOLDER]   fortune cookies, one sample per fortune, label = category file
    gcide[:FILE]        the GCIDE dictionary's entries as plain text, unlabelled
    text:PATH           the user's own text: a .txt file (one sample a line), a .jsonl file
                        (``text`` and optional ``label`` fields), or a folder of .txt files
                        (class subfolders give labels, one sample a file)
    python-stdlib, code:PATH[:ext=py,js]
                        source code split into functions and classes (``selfsup.data.code``)

Splits are fixed, so every run sees the same test set: fortunes by a stratified 80/20 split
with seed 0; GCIDE and user text by a hash of each entry (2% and 20% to test), which keeps a
sample in its split when others are added and sends duplicates to the same side.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.code import CODE_SOURCES, code_split, is_code_spec
from selfsup.data.images import UNLABELLED, Sample
from selfsup.data.split import in_test_split
from selfsup.data.tokenizer import encode_batch
from selfsup.errors import SelfsupError

Split = Literal["train", "test"]

TEXT_DATASETS: dict[str, str] = {
    "fortunes": (
        "fortune cookies: 14,691 quips, quotes and jokes in 32 categories (files with >= 100 "
        "fortunes; stratified 80/20 split, seed 0); `sudo apt-get install fortunes fortunes-min`, "
        "or fortunes:FOLDER"
    ),
    "gcide": (
        "GCIDE, the Collaborative International Dictionary of English (Webster 1913 + WordNet): "
        "~147k unlabelled samples, 28 MB (one entry each, long ones in ~512-character chunks), "
        "a pretraining corpus, 2% to test by hash; `sudo apt-get install dict-gcide`, or "
        "gcide:FILE.dict.dz"
    ),
    "text": (
        "your own text, text:PATH: a .txt (one sample a line), a .jsonl (`text`, optional "
        "`label`) or a folder of .txt files (class subfolders give labels); ~20% go to test "
        "by a hash of the text (folder: of the path)"
    ),
    **CODE_SOURCES,
}
"""Every text source ``load_texts`` knows, with a one-line description for ``selfsup list``."""

_USAGE = "fortunes[:FOLDER], gcide[:FILE], text:PATH, python-stdlib, code:PATH"

FORTUNES_FOLDER = Path("/usr/share/games/fortunes")
FORTUNES_MIN_PER_CLASS = 100
"""A fortune file becomes a class only with at least this many fortunes (32 of 43 files)."""
FORTUNES_TEST_FRACTION = 0.2
FORTUNES_SPLIT_SEED = 0

GCIDE_FILE = Path("/usr/share/dictd/gcide.dict.dz")
GCIDE_TEST_FRACTION = 0.02
GCIDE_CHUNK_CHARS = 512
"""Paragraphs of one entry are packed into samples of about this many characters (~128
wordpiece tokens), so long entries become several samples and short ones stay whole."""

USER_TEST_FRACTION = 0.2
"""Share of user samples that the hash puts in the test split (as for image folders)."""

TEXT_EXTENSIONS = (".txt",)
"""Files read from a ``text:FOLDER`` tree, compared case-insensitively."""


@dataclass
class TextCorpus:
    """One split of a text source: the raw strings and, when the source has them, labels.

    Attributes:
        texts: one string per sample.
        labels: one class id per sample (indices into ``class_names``), or None when the
            source is unlabelled.
        class_names: one name per class id (empty when unlabelled); the same for both splits.
        name: the spec it was loaded from, e.g. ``"fortunes"`` or ``"text:notes.jsonl"``.
        split: ``"train"`` or ``"test"``.
        skipped: files left out as unreadable (``skip_bad``), for the run to report.
    """

    texts: list[str]
    labels: list[int] | None
    class_names: list[str]
    name: str
    split: str
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.labels)} labels for {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)


def load_texts(spec: str, split: Split = "train", *, skip_bad: bool = False) -> TextCorpus:
    """Load one split of the text source that ``spec`` names (see ``TEXT_DATASETS``);
    ``skip_bad`` skips (and counts) source files that do not read or parse.

    Raises:
        SelfsupError: unknown spec, missing or malformed data; the message says how to fix it.
    """
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split {split!r}; use 'train' or 'test'")
    name, colon, argument = spec.partition(":")
    name = name.strip().lower()
    argument = argument.strip()
    if name == "fortunes":
        folder = Path(argument).expanduser() if argument else FORTUNES_FOLDER
        texts, labels, class_names = _fortunes(folder, split)
        return TextCorpus(texts, labels, class_names, spec, split)
    if name == "gcide":
        path = Path(argument).expanduser() if argument else GCIDE_FILE
        chunks, in_test = _gcide_all(*_gcide_files(path))
        texts = [c for c, t in zip(chunks, in_test) if t == (split == "test")]
        return TextCorpus(texts, None, [], spec, split)
    if name == "text":
        if not argument:
            raise SelfsupError("text needs a path: --data text:PATH (a .txt, .jsonl or folder)")
        return _user_text(Path(argument).expanduser(), split, spec)
    if is_code_spec(spec):
        return _code(spec, split, skip_bad)
    if name == "wds":  # WebDataset shards of {"txt", "cls"} samples
        from selfsup.data.webdataset import read_texts

        return TextCorpus(*read_texts(argument, split), spec, split)
    raise SelfsupError(_unknown(spec, name))


def _unknown(spec: str, name: str) -> str:
    """The message for a spec naming no text source: a close name, or text: for a path."""
    if Path(spec).expanduser().exists():
        hint = f"did you mean text:{spec}?"
    else:
        close = difflib.get_close_matches(name, TEXT_DATASETS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see `selfsup list`"
    return f"unknown text data {spec!r}; {hint} Known: {_USAGE}"


# --- fortunes ------------------------------------------------------------------------------

_FORTUNE_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)


def read_fortune_file(path: Path) -> list[str]:
    """The fortunes of one strfile source: text blocks between lines holding only ``%``,
    stripped, empty ones dropped."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [f for f in (p.strip() for p in _FORTUNE_SEPARATOR.split(text)) if f]


def _fortunes(folder: Path, split: Split) -> tuple[list[str], list[int], list[str]]:
    """One split of the fortunes in ``folder``: categories with enough fortunes, sorted by name,
    split 80/20 stratified by category with seed 0 (each split in file order)."""
    from sklearn.model_selection import train_test_split

    if not folder.is_dir():
        raise SelfsupError(
            f"fortunes not found in {folder}: `sudo apt-get install fortunes fortunes-min`, "
            "or fortunes:FOLDER"
        )
    # Category files have no extension; .dat/.u8 are strfile indexes, off/ a subfolder.
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.suffix and not p.name.startswith(".")
    )
    by_class = {p.name: read_fortune_file(p) for p in files}
    class_names = sorted(c for c, f in by_class.items() if len(f) >= FORTUNES_MIN_PER_CLASS)
    if not class_names:
        raise SelfsupError(
            f"no fortune file in {folder} holds {FORTUNES_MIN_PER_CLASS} or more fortunes "
            f"({len(files)} files); point fortunes:FOLDER at the strfile sources"
        )
    texts = [f for c in class_names for f in by_class[c]]
    labels = np.array([i for i, c in enumerate(class_names) for _ in by_class[c]])
    train, test = train_test_split(
        np.arange(len(texts)),
        test_size=FORTUNES_TEST_FRACTION,
        stratify=labels,
        random_state=FORTUNES_SPLIT_SEED,
    )
    keep = np.sort(test if split == "test" else train)
    return [texts[i] for i in keep], labels[keep].tolist(), class_names


# --- GCIDE ---------------------------------------------------------------------------------

# A dictd index number is base64, most significant digit first; one base64 digit is two octal
# digits, so translating each to those two makes a string that int(..., 8) reads.
_B64_AS_OCTAL = {
    ord(c): f"{i:02o}"
    for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
# \Pro*nun"ci*a`tion\ marks, and source tags such as [1913 Webster], [WordNet 1.5 +PJC],
# [Century Dict. 1906], [AS]; on bytes, which is several times faster than on str here.
_PRONUNCIATION = re.compile(rb"\\[^\\]{0,200}\\")
_SOURCE_TAG = re.compile(rb"\[[^\]\n]*(?:Webster|WordNet|PJC|Century Dict|RDH)[^\]\n]*\]|\[AS\]")
_PARAGRAPH_BREAK = re.compile(rb"\n[ \t]*\n")
_ENTRY, _PARAGRAPH = "\x00", "\x01"  # separators that no markup rule touches


def _gcide_files(path: Path) -> tuple[Path, Path]:
    """The dictionary file (``.dict.dz`` or ``.dict``) and its ``.index``, checked to exist."""
    hint = "`sudo apt-get install dict-gcide`, or gcide:FILE naming a .dict.dz file"
    if path.is_dir():
        found = [path / n for n in ("gcide.dict.dz", "gcide.dict") if (path / n).is_file()]
        if not found:
            raise SelfsupError(f"GCIDE not found in {path} (no gcide.dict.dz): {hint}")
        path = found[0]
    if not path.is_file():
        raise SelfsupError(f"GCIDE not found at {path}: {hint}")
    stem = path.name.removesuffix(".dz").removesuffix(".dict")
    index = path.with_name(stem + ".index")
    if not index.is_file():
        raise SelfsupError(f"GCIDE index {index} not found beside {path}: {hint}")
    return path, index


@functools.lru_cache(maxsize=1)
def _gcide_all(path: Path, index: Path) -> tuple[list[str], list[bool]]:
    """Every sample of the dictionary and whether it is in the test split (~3 s; cached for
    the other split).

    The index lists (headword, offset, length) with base64 numbers; its distinct
    (offset, length) pairs are the entries (many headwords share one). Markup is stripped:
    pronunciations, source tags and the braces of cross references; whitespace is collapsed.
    Each entry's paragraphs are then packed greedily into samples of up to
    ``GCIDE_CHUNK_CHARS`` characters (a longer paragraph stands alone). The split is by a hash
    of the entry's first chunk, so all chunks of an entry fall on the same side.
    """
    coded: set[tuple[str, str]] = set()
    try:
        for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
            word, offset, length = line.split("\t")[:3]
            if not word.startswith("00-"):  # 00-database-info etc.: licence and metadata
                coded.add((offset, length))
        spans = sorted((_b64(offset), _b64(length)) for offset, length in coded)
        opener = gzip.open if path.suffix == ".dz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, ValueError, zlib.error) as e:  # missing, truncated, garbled
        raise SelfsupError(
            f"cannot read GCIDE {path} with {index} ({e}); reinstall: "
            "`sudo apt-get install --reinstall dict-gcide`"
        ) from None
    # Clean every entry at once (~1.5 s for 40 MB): join them with separators the rules keep.
    raw = _ENTRY.encode().join(data[o : o + n] for o, n in spans)
    raw = _SOURCE_TAG.sub(b"", _PRONUNCIATION.sub(b"", raw)).translate(None, b"{}")
    raw = _PARAGRAPH_BREAK.sub(_PARAGRAPH.encode(), raw)
    # Collapse whitespace (bytes.split keeps the separators), then close the gap that a
    # removed pronunciation leaves before a comma: "Cockle , v. t." -> "Cockle, v. t.".
    text = b" ".join(raw.split()).decode("utf-8", "replace").replace(" ,", ",")
    chunks: list[str] = []
    in_test: list[bool] = []
    for entry in text.split(_ENTRY):
        packed = _pack(
            [p for p in (q.strip() for q in entry.split(_PARAGRAPH)) if p], GCIDE_CHUNK_CHARS
        )
        if packed:
            test = in_test_split(packed[0], GCIDE_TEST_FRACTION)
            chunks += packed
            in_test += [test] * len(packed)
    if not chunks:
        raise SelfsupError(f"no entries found in GCIDE {path}; reinstall dict-gcide")
    return chunks, in_test


def _b64(text: str) -> int:
    """A dictd index number: base64 digits, most significant first."""
    return int(text.translate(_B64_AS_OCTAL), 8)


def _pack(paragraphs: list[str], limit: int) -> list[str]:
    """Join consecutive paragraphs with spaces into pieces of at most ``limit`` characters
    (a paragraph longer than ``limit`` becomes a piece of its own)."""
    pieces: list[str] = []
    current = ""
    for p in paragraphs:
        if current and len(current) + 1 + len(p) > limit:
            pieces.append(current)
            current = p
        else:
            current = f"{current} {p}" if current else p
    if current:
        pieces.append(current)
    return pieces


# --- source code ---------------------------------------------------------------------------


def _code(spec: str, split: Split, skip_bad: bool) -> TextCorpus:
    """One split of a code source: its units' code (docstrings removed), labelled by the
    top-level package."""
    tree, keep = code_split(spec, split, skip_bad)
    class_names = sorted(set(tree.labels))
    ids = {c: i for i, c in enumerate(class_names)}
    return TextCorpus(
        [tree.units[i].code for i in keep],
        [ids[tree.labels[i]] for i in keep],
        class_names,
        spec,
        split,
        skipped=list(tree.skipped),
    )


# --- the user's own text -------------------------------------------------------------------


def _user_text(path: Path, split: Split, spec: str) -> TextCorpus:
    """``text:PATH``: a folder of .txt files, a .jsonl file, or a plain text file."""
    if not path.exists():
        raise SelfsupError(f"{path} does not exist; check the path after text:")
    if path.is_dir():
        keys, texts, labels, class_names = _text_folder(path)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        texts, labels, class_names = _jsonl(path)
        keys = texts
    elif path.suffix.lower() == ".json":
        raise SelfsupError(
            f"{path} is a .json file; write one JSON object per line as a .jsonl "
            '(e.g. {"text": "...", "label": "spam"})'
        )
    else:
        texts, labels, class_names = _lines(path), None, []
        keys = texts
    if not texts:
        raise SelfsupError(f"{path} holds no text samples; add some non-empty lines or files")
    want_test = split == "test"
    keep = [i for i, k in enumerate(keys) if in_test_split(k, USER_TEST_FRACTION) == want_test]
    if not keep:
        raise SelfsupError(
            f"{path} has no samples in the {split} split ({len(texts)} samples, "
            f"~{USER_TEST_FRACTION:.0%} go to test by a hash of the text); add more samples"
        )
    return TextCorpus(
        [texts[i] for i in keep],
        [labels[i] for i in keep] if labels is not None else None,
        class_names,
        spec,
        split,
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SelfsupError(
            f"{path} is not UTF-8 text (byte {e.start}); convert it, e.g. "
            f"`iconv -f latin1 -t utf-8 {path}`"
        ) from None


def _lines(path: Path) -> list[str]:
    """One sample per non-empty line, stripped."""
    return [s for s in (line.strip() for line in _read_text(path).splitlines()) if s]


def _jsonl(path: Path) -> tuple[list[str], list[int] | None, list[str]]:
    """Samples from JSON lines ``{"text": str, "label": str | int (optional)}``; blank lines are
    skipped. Labels, when present, must be on every line and all strings or all integers;
    class ids follow their sorted order."""
    texts: list[str] = []
    raw_labels: list[str | int] = []
    labelled: bool | None = None
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SelfsupError(
                f"{where} is not JSON ({e.msg}); write one object per line"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SelfsupError(f'{where} has no "text" string field; write {{"text": "..."}}')
        label = record.get("label")
        if labelled is None:
            labelled = label is not None
        if (label is not None) != labelled:
            raise SelfsupError(
                f'{where} {"lacks" if labelled else "has"} a "label" field unlike the first '
                "line; give every line a label or none"
            )
        if label is not None:
            if not isinstance(label, str | int) or (
                raw_labels and isinstance(label, str) != isinstance(raw_labels[0], str)
            ):
                raise SelfsupError(
                    f"{where}: label {label!r} must be a string or an integer like the first "
                    "line's; use one type for every label"
                )
            raw_labels.append(label)
        texts.append(record["text"].strip())
    # Lines whose text is empty are dropped (with their labels).
    kept = [i for i, t in enumerate(texts) if t]
    texts = [texts[i] for i in kept]
    if not labelled:
        return texts, None, []
    values = [raw_labels[i] for i in kept]
    classes = sorted(set(values))  # type: ignore[type-var]
    ids = {c: i for i, c in enumerate(classes)}
    return texts, [ids[v] for v in values], [str(c) for c in classes]


def _text_folder(root: Path) -> tuple[list[str], list[str], list[int] | None, list[str]]:
    """Every .txt file under ``root`` as one sample: relative paths (the split keys), texts,
    labels from first-level subfolders (flat = unlabelled), class names. Empty files are
    skipped; hidden files and folders ignored."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        files += [
            (rel / f).as_posix()
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(TEXT_EXTENSIONS)
        ]
    files.sort()
    if not files:
        raise SelfsupError(
            f"no .txt files found in {root} or its subfolders; point text:PATH at the folder "
            "that holds them (or at a .txt/.jsonl file)"
        )
    flat = sum("/" not in f for f in files)
    if 0 < flat < len(files):
        raise SelfsupError(
            f"{root} mixes {flat} .txt files at the top level with {len(files) - flat} in "
            "subfolders; put every file in a class subfolder (labelled) or all at the top level"
        )
    labelled = flat == 0
    class_names = sorted({f.split("/", 1)[0] for f in files}) if labelled else []
    ids = {c: i for i, c in enumerate(class_names)}
    keys, texts, labels = [], [], []
    for f in files:
        text = _read_text(root / f).strip()
        if text:
            keys.append(f)
            texts.append(text)
            labels.append(ids[f.split("/", 1)[0]] if labelled else UNLABELLED)
    return keys, texts, labels if labelled else None, class_names


# --- the dataset ---------------------------------------------------------------------------


class TextDataset(Dataset[Sample]):
    """A text corpus tokenized once, at construction, into one int64 tensor (N, L) in memory.

    Samples are ``{"tokens": int64 (L,), "label": int64 scalar}`` (label -1 when unlabelled);
    each row is ``[CLS] tokens [SEP] [PAD]..`` (see ``selfsup.data.tokenizer.encode_batch``).

    Attributes:
        name, split, num_classes, class_names, has_labels, in_memory, skipped: as for
            ``ImageDataset`` (always in memory; skipped: the source files a code source left out).
        input_key: ``"tokens"``, the batch key of the input.
        modality: ``"text"``.
        max_length: L, the length of every row.
        vocab_size: the tokenizer's vocabulary size (token ids are below it).
        tokenizer: the ``tokenizers.Tokenizer`` that made the ids.
    """

    in_memory = True
    input_key = "tokens"
    modality = "text"

    def __init__(self, corpus: TextCorpus, tokenizer: Tokenizer, max_length: int = 128) -> None:
        """Tokenize every text of ``corpus`` with ``tokenizer`` into rows of ``max_length`` ids."""
        self.name = corpus.name
        self.split = corpus.split
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._texts = corpus.texts
        self._tokens = encode_batch(tokenizer, corpus.texts, max_length)  # (N, L)
        self.has_labels = corpus.labels is not None
        if corpus.labels is not None:
            self._labels = torch.tensor(corpus.labels, dtype=torch.int64).reshape(-1)  # (N,)
            self.class_names = list(corpus.class_names)
        else:
            self._labels = torch.full((len(corpus.texts),), UNLABELLED, dtype=torch.int64)
            self.class_names = []
        self.num_classes = len(self.class_names)
        self.skipped: list[str] = list(corpus.skipped)

    def __len__(self) -> int:
        return self._tokens.shape[0]

    def __getitem__(self, index: int) -> Sample:
        return {"tokens": self._tokens[index], "label": self._labels[index]}

    def labels(self) -> Tensor:
        """Every label, int64 (N,); -1 everywhere when unlabelled."""
        return self._labels

    def as_tensor(self) -> Tensor:
        """Every row of ids, int64 (N, L): shared with the dataset, so don't modify it in place."""
        return self._tokens

    def texts(self) -> list[str]:
        """The raw texts, in sample order."""
        return self._texts

    def __repr__(self) -> str:
        labels = f"{self.num_classes} classes" if self.has_labels else "unlabelled"
        return (
            f"TextDataset({self.name!r}, {self.split}, {len(self)} x {self.max_length} tokens, "
            f"vocab {self.vocab_size}, {labels})"
        )
