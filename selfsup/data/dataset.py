"""One entry point for every modality: a data spec in, a dataset out.

Image specs (``digits``, ``fashion-mnist``, ``folder:PATH``, ...) give an ``ImageDataset``
whose batches are ``{"image": uint8 (B, C, H, W)}``; text specs (``fortunes``, ``gcide``,
``text:PATH``) give a ``TextDataset`` whose batches are ``{"tokens": int64 (B, L)}``. Each
dataset names its batch key in ``input_key``; the engine and evaluation read nothing else.

A text run owns its tokenizer: trained once on the training texts and saved as
``tokenizer.json`` in the run folder (and beside the exported encoder), so evaluation,
``embed`` and ``generate`` tokenize exactly as pretraining did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from selfsup.data.sources import load_images
from selfsup.errors import SelfsupError

Modality = Literal["image", "text"]

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_KINDS = ("wordpiece", "bpe", "byte-bpe")
TEXT_SOURCES = ("fortunes", "gcide", "text")
"""Spec prefixes (before ``:``) that name text sources; everything else is an image source."""


def modality_of(spec: str) -> Modality:
    """``"text"`` for ``fortunes``, ``gcide`` and ``text:PATH``; ``"image"`` otherwise;
    ``wds:`` shards say what they hold."""
    prefix, _, argument = spec.partition(":")
    if prefix.strip().lower() == "wds":
        from selfsup.data.webdataset import modality

        return modality(argument.strip())
    return "text" if prefix in TEXT_SOURCES else "image"


def input_key(dataset: Any) -> str:
    """The batch key a dataset's samples carry their input under (``image`` or ``tokens``)."""
    return getattr(dataset, "input_key", "image")


def load_dataset(
    spec: str,
    split: Literal["train", "test"] = "train",
    *,
    skip_bad: bool = False,
    image_size: int | None = None,
    tokenizer: Any = None,
    max_length: int = 128,
) -> Any:
    """Load one split of any source: images as ``load_images`` does; text tokenized with
    ``tokenizer`` (a ``tokenizers.Tokenizer``) into rows of ``max_length`` ids."""
    if modality_of(spec) == "image":
        return load_images(spec, split, skip_bad=skip_bad, image_size=image_size)
    from selfsup.data.text import TextDataset, load_texts

    if tokenizer is None:
        raise SelfsupError(
            f"text data {spec!r} needs a tokenizer: pretrain trains one (--set "
            "data.tokenizer=wordpiece), evaluation reads the run's tokenizer.json"
        )
    return TextDataset(load_texts(spec, split), tokenizer, max_length)


def run_tokenizer(
    spec: str,
    run_dir: Path,
    *,
    kind: str = "wordpiece",
    vocab_size: int = 8000,
    write: bool = True,
) -> Any:
    """The tokenizer of a text run: the run folder's ``tokenizer.json`` when it exists
    (resume), else the file ``kind`` names, else a new one of that kind trained on the
    training split of ``spec``; written into ``run_dir`` when ``write``."""
    from selfsup.data.text import load_texts
    from selfsup.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    saved = run_dir / TOKENIZER_FILE
    if saved.is_file():
        return load_tokenizer(saved)
    if kind in TOKENIZER_KINDS:
        tokenizer = train_tokenizer(load_texts(spec, "train").texts, kind, vocab_size)  # type: ignore[arg-type]
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
    from selfsup.data.tokenizer import load_tokenizer

    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise SelfsupError(
            f"no {TOKENIZER_FILE} in {str(folder)!r}: a text encoder needs the tokenizer it "
            "was trained with; copy it from the run folder"
        )
    return load_tokenizer(path)
