"""Text: strings tokenized by the run's own tokenizer, batches ``{"tokens": int64 (B, L)}``.

A text run owns its tokenizer: trained once on the training texts before the worker
processes start and saved as ``tokenizer.json`` in the run folder (and beside the exported
encoder), so evaluation, ``embed`` and ``generate`` tokenize exactly as pretraining did.
Rows are ``[CLS] tokens [SEP] [PAD]...`` padded to ``max_length``; the raw-input baseline is
TF-IDF; a causal language model also earns its perplexity on the held-out text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from selfsup.data.code import is_code_spec
from selfsup.data.text import TEXT_DATASETS, TextDataset, load_texts
from selfsup.data.tokenizer import (
    CLS_ID,
    PAD_ID,
    SEP_ID,
    TOKENIZER_FILE,
    find_tokenizer,
    run_tokenizer,
    special_ids,
)
from selfsup.errors import SelfsupError
from selfsup.views.text_corruptions import TEXT_CORRUPTIONS

if TYPE_CHECKING:
    from selfsup.config import DataConfig, EvalConfig, RunConfig
    from selfsup.data.info import DataInfo
    from selfsup.recipe import Choice

MAX_TOKENS = 65536


class TextModality:
    name = "text"
    input_key = "tokens"
    sources = TEXT_DATASETS
    default_encoder = "transformer-tiny"
    finetune_augment: Callable[[Tensor], Tensor] | None = None
    corruptions = tuple(TEXT_CORRUPTIONS)

    def owns(self, spec: str) -> bool:
        from selfsup.data.webdataset import holds

        return holds(spec, self.sources, self.name, unreadable=False)

    def guess(self, spec: str) -> str | None:
        path = Path(spec).expanduser()
        return f"did you mean text:{spec}?" if path.is_file() else None

    def check_data(self, data: DataConfig) -> None:
        if not 3 <= data.max_length <= MAX_TOKENS:
            raise SelfsupError(
                f"data.max_length must lie between 3 and {MAX_TOKENS} tokens, got {data.max_length}"
            )
        if data.vocab_size < 16:
            raise SelfsupError(f"data.vocab_size must be at least 16, got {data.vocab_size}")

    def prepare_run(self, data: DataConfig, run_dir: Path) -> None:
        from selfsup.engine.progress import console

        with console.status("training the tokenizer"):
            run_tokenizer(
                data.name,
                run_dir,
                kind=data.tokenizer,
                vocab_size=data.vocab_size,
                texts=lambda: load_texts(data.name, "train", skip_bad=data.skip_bad).texts,
            )

    def load(self, spec: str, split: Any, *, folder: Path | None = None, **options: Any) -> Any:
        """Tokenized with the tokenizer in ``folder`` (the run or export folder)."""
        skip_bad = bool(options.pop("skip_bad", False))  # code sources skip bad files
        if folder is None:
            raise SelfsupError(
                f"text data {spec!r} needs a tokenizer: evaluate a text encoder from its run "
                f"or export folder (it holds {TOKENIZER_FILE})"
            )
        corpus = load_texts(spec, split, skip_bad=skip_bad)
        return TextDataset(corpus, find_tokenizer(folder), **options)

    def run_options(self, data: DataConfig) -> dict[str, Any]:
        return {"max_length": data.max_length, "skip_bad": data.skip_bad}

    def eval_options(self, export: dict[str, Any], data: DataConfig | None) -> dict[str, Any]:
        max_length = export.get("max_length") or (data.max_length if data else None)
        return {"max_length": max_length or 128, "skip_bad": bool(data and data.skip_bad)}

    def data_info(self, dataset: Any, cfg: RunConfig, folder: Path) -> dict[str, Any]:
        vocab = dataset.tokenizer.get_vocab_size()
        return {
            "vocab_size": vocab,
            "max_length": cfg.data.max_length,
            "tokenizer": dataset.tokenizer,
            "token_counts": torch.bincount(dataset.as_tensor().flatten(), minlength=vocab),
        }

    def fitted_defaults(self, cfg: RunConfig, info: DataInfo) -> list[Choice]:
        return []  # no option of its methods depends on the data yet

    def encoder_inputs(self, info: DataInfo) -> dict[str, Any]:
        return {"vocab_size": info.vocab_size, "max_length": info.max_length, "pad_id": PAD_ID}

    def export(self, info: DataInfo, folder: Path) -> dict[str, Any]:
        from selfsup.data.tokenizer import save_tokenizer

        folder.mkdir(parents=True, exist_ok=True)
        save_tokenizer(info.tokenizer, folder / TOKENIZER_FILE)
        return {
            "max_length": info.max_length,
            "input": {
                "dtype": f"int64 token ids: [CLS] text [SEP] then [PAD] (id {PAD_ID})",
                "tokenizer": TOKENIZER_FILE,
            },
        }

    def to_input(self, encoder: nn.Module) -> Callable[[Tensor], Tensor]:
        return lambda tokens: tokens

    def check_encoder(self, encoder: nn.Module, dataset: Any, spec: str) -> None:
        vocab = (getattr(encoder, "build_args", None) or {}).get("vocab_size")
        if vocab is not None and dataset.vocab_size > vocab:
            raise SelfsupError(
                f"{spec!r} was tokenized with {dataset.vocab_size} ids but the encoder knows "
                f"{vocab}: use the tokenizer.json of the encoder's run"
            )

    def collate(self, samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Rows are padded to ``max_length`` when tokenized; the mask marks the [PAD]s."""
        batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
        batch["padding"] = batch[self.input_key] == PAD_ID  # (B, L)
        return batch

    def raw_baseline(
        self,
        train: Any,
        test: Any,
        ev: EvalConfig,
        probes: list[str],
        progress: Callable[[str], None],
    ) -> list[dict[str, Any]]:
        """TF-IDF (uni- and bigrams) + logistic regression with C chosen on held-out labels,
        and TF-IDF kNN; rows marked ``features: tf-idf``."""
        from selfsup.evaluate.features import texts_and_labels
        from selfsup.evaluate.text import tfidf_label_efficiency

        train_texts, train_y = texts_and_labels(train)
        test_texts, test_y = texts_and_labels(test)
        rows = tfidf_label_efficiency(
            train_texts,
            train_y,
            test_texts,
            test_y,
            fractions=ev.label_fractions,
            seeds=ev.seeds,
            protocols=probes,
            encoder="raw",
            k=ev.knn_k,
            temperature=ev.knn_temperature,
            progress=lambda text: progress(f"TF-IDF baseline: {text}"),
        )
        return [{**row, "features": "tf-idf"} for row in rows]

    def raw_features(self, train: Any, test: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        """Dense TF-IDF (uni- and bigrams) of the 4,096 most frequent n-grams of the training
        texts, rows L2-normalised: (N, F) and (Q, F)."""
        from selfsup.evaluate.features import texts_and_labels
        from selfsup.evaluate.text import tfidf_features

        return tfidf_features(texts_and_labels(train)[0], texts_and_labels(test)[0])

    def extra_evaluation(
        self,
        models: dict[str, nn.Module],
        spec: str,
        folder: Path | None,
        options: dict[str, Any],
        ev: EvalConfig,
    ) -> dict[str, list[dict[str, Any]]]:
        """Perplexity of a causal language model (and of its random init) on the held-out
        split of ``spec``; for a code source, docstring→code retrieval on its held-out
        modules (``retrieval.json``)."""
        from selfsup.encoders.transformer import lm_logits
        from selfsup.evaluate.text import perplexity

        if folder is None:
            return {}
        results = {}
        if is_code_spec(spec):
            results["retrieval.json"] = code_retrieval(models, spec, folder, options, ev)
        first = next(iter(models.values()))
        if not getattr(first, "causal", False):
            return results
        tokens = self.load(spec, "test", folder=folder, **options).as_tensor()
        rows = []
        for label, model in models.items():
            model.eval()
            with torch.no_grad():
                result = perplexity(
                    lambda t, model=model: lm_logits(model, t),
                    tokens,
                    pad_id=PAD_ID,
                    batch_size=max(1, ev.batch_size // 4),
                )
            rows.append({"encoder": label, "data": spec, **result})
        return {**results, "perplexity.json": rows}

    def corrupted(self, dataset: Any, kind: str, severity: int, seed: int = 0) -> Any:
        """The raw texts perturbed (`corrupt_texts`) and tokenized again with the data set's
        own tokenizer and length."""
        from selfsup.data.text import TextCorpus
        from selfsup.evaluate.features import root_dataset, texts_and_labels
        from selfsup.views.text_corruptions import corrupt_texts

        texts, labels = texts_and_labels(dataset)
        root = root_dataset(dataset)
        corpus = TextCorpus(
            texts=corrupt_texts(texts, kind, severity, seed),
            labels=labels.tolist(),
            class_names=list(root.class_names),
            name=root.name,
            split="test",
        )
        return TextDataset(corpus, root.tokenizer, max_length=root.max_length)

    def decoder(self, info: DataInfo, embed_dim: int) -> nn.Module | None:
        return None  # tokens are ids, not values a decoder regresses

    def example_input(self, encoder: nn.Module, batch_size: int, seed: int = 0) -> Tensor:
        """Random token rows ``[CLS] ids [SEP] [PAD]...`` of the encoder's ``max_length``, each
        row a different length, so padding is exercised: (B, L) int64."""
        build = getattr(encoder, "build_args", None) or {}
        g = torch.Generator().manual_seed(seed)
        length, vocab = int(build.get("max_length", 16)), int(build.get("vocab_size", 64))
        tokens = torch.randint(5, max(6, vocab), (batch_size, length), generator=g)
        tokens[:, 0] = CLS_ID
        for row in range(batch_size):
            end = max(2, length - 1 - (row * length) // (2 * batch_size))
            tokens[row, end] = SEP_ID
            tokens[row, end + 1 :] = PAD_ID
        return tokens

    def tiny_batch(self, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(5, 64, (batch_size, 12), generator=g)  # ids above the specials
        tokens[:, 0], tokens[:, -1] = 2, 3  # [CLS] ... [SEP]
        tokens[: batch_size // 2, 8:11] = PAD_ID
        tokens[: batch_size // 2, 8] = 3
        return {"tokens": tokens, "label": torch.arange(batch_size) % 2}


def code_retrieval(
    models: dict[str, nn.Module],
    spec: str,
    folder: Path,
    options: dict[str, Any],
    ev: EvalConfig,
) -> list[dict[str, Any]]:
    """Docstring→code retrieval on the held-out modules of the code source ``spec`` (the
    CodeSearchNet task): each docstring's first paragraph is a query, every held-out unit with
    a docstring (its code given without the docstring) is the gallery; queries and code are
    embedded by the same frozen encoder (mean-pooled, as the probes read it) and ranked by
    cosine. One row per encoder (MRR, recall@1/10) and one for TF-IDF over identifier words."""
    from selfsup.data.code import docstring_pairs
    from selfsup.data.tokenizer import encode_batch
    from selfsup.evaluate.features import extract_features
    from selfsup.evaluate.retrieval import cosine_ranks, ranking_row, tfidf_code_ranks

    queries, codes = docstring_pairs(spec, "test", bool(options.get("skip_bad")))
    tokenizer = find_tokenizer(folder)
    max_length = int(options.get("max_length") or 128)
    query_ids = encode_batch(tokenizer, queries, max_length)  # (N, L)
    code_ids = encode_batch(tokenizer, codes, max_length)  # (N, L)
    rows = []
    for label, model in models.items():
        embed = [
            extract_features(model, ids, ev.batch_size, to_input=lambda t: t)
            for ids in (query_ids, code_ids)
        ]
        rows.append({"encoder": label, "data": spec, **ranking_row(cosine_ranks(*embed))})
    tfidf = ranking_row(tfidf_code_ranks(queries, codes))
    rows.append({"encoder": "tf-idf (identifier words)", "data": spec, **tfidf})
    return rows


def generate_text(
    run: str | Path,
    prompt: str = "",
    *,
    num: int = 1,
    max_new_tokens: int = 60,
    temperature: float = 0.8,
    top_k: int | None = 40,
    seed: int = 0,
) -> list[str]:
    """``num`` continuations of ``prompt`` sampled from a causal language model (a ``clm``
    run): temperature 0 is greedy, ``top_k`` keeps the k likeliest tokens at each step."""
    from selfsup.data.tokenizer import decode
    from selfsup.encoders.transformer import lm_logits
    from selfsup.evaluate.generate import generate
    from selfsup.export import load_encoder

    for label, value, low in [("num", num, 1), ("max_new_tokens", max_new_tokens, 1)]:
        if value < low:
            raise SelfsupError(f"{label} must be a positive number, got {value}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise SelfsupError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise SelfsupError(f"top_k must be a positive number (or 0/None for all), got {top_k}")
    folder = Path(run).parent if Path(run).is_file() else Path(run)
    encoder = load_encoder(folder)
    if not getattr(encoder, "causal", False):
        raise SelfsupError(
            f"{str(run)!r} holds a bidirectional encoder, not a language model that can write: "
            "train one with --method clm --encoder gpt-tiny"
        )
    tokenizer = find_tokenizer(folder)
    ids = special_ids(tokenizer)
    prompt_ids = [ids["[CLS]"], *tokenizer.encode(prompt, add_special_tokens=False).ids]
    max_length = int(encoder.build_args["max_length"])
    start = torch.tensor([prompt_ids[-max_length:]] * num)  # (num, L0)
    with torch.no_grad():
        out = generate(
            lambda tokens: lm_logits(encoder, tokens),
            start,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            eos_id=ids["[SEP]"],
            max_length=max_length,
            generator=torch.Generator().manual_seed(seed),
        )
    return [decode(tokenizer, row.tolist()) for row in out]


TEXT = TextModality()
