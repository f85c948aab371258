"""Image–text pairs: batches ``{"image": uint8 (B, 3, S, S), "tokens": int64 (B, L)}``.

A pairs run trains two towers (``selfsup.encoders.dual``) and owns a tokenizer trained on the
training captions, saved as ``tokenizer.json`` in the run folder and beside the export, as a
text run does. The input a probe reads is the image: linear probe, kNN and the pixel baseline
measure the image tower; ``extra_evaluation`` adds what only two towers can do, on the
held-out pairs: zero-shot classification by class-name prompts (against chance, the majority
class and a TF-IDF caption baseline) and image→text / text→image retrieval recall@1/5/10.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from selfsup.data.loader import collate_samples
from selfsup.data.pairs import PAIR_DATASETS, PairDataset, load_pairs
from selfsup.data.tokenizer import PAD_ID, TOKENIZER_FILE, find_tokenizer, run_tokenizer
from selfsup.errors import SelfsupError
from selfsup.modalities.image import IMAGE
from selfsup.modalities.text import MAX_TOKENS

if TYPE_CHECKING:
    from selfsup.config import DataConfig, EvalConfig, RunConfig
    from selfsup.data.info import DataInfo
    from selfsup.recipe import Choice


class PairsModality:
    name = "pairs"
    input_key = "image"
    corruptions: tuple[str, ...] = ()
    sources = PAIR_DATASETS
    default_encoder = "clip-tiny"
    finetune_augment = IMAGE.finetune_augment

    def owns(self, spec: str) -> bool:
        return spec.partition(":")[0].strip().lower() in self.sources

    def guess(self, spec: str) -> str | None:
        return None  # folders and shards of images are the image modality's guess

    def check_data(self, data: DataConfig) -> None:
        IMAGE.check_data(data)
        if not 3 <= data.max_length <= MAX_TOKENS:
            raise SelfsupError(
                f"data.max_length must lie between 3 and {MAX_TOKENS} tokens, got {data.max_length}"
            )

    def prepare_run(self, data: DataConfig, run_dir: Path) -> None:
        from selfsup.engine.progress import console

        def captions() -> list[str]:
            return load_pairs(data.name, "train", data.skip_bad, data.image_size).captions

        with console.status("training the tokenizer on the captions"):
            run_tokenizer(
                data.name, run_dir, kind=data.tokenizer, vocab_size=data.vocab_size, texts=captions
            )

    def load(self, spec: str, split: Any, *, folder: Path | None = None, **options: Any) -> Any:
        """Decoded and tokenized with the tokenizer in ``folder`` (the run or export folder)."""
        if folder is None:
            raise SelfsupError(
                f"pair data {spec!r} needs a tokenizer: evaluate a pair encoder from its run "
                f"or export folder (it holds {TOKENIZER_FILE})"
            )
        skip_bad = bool(options.get("skip_bad", False))
        image_size = options.get("image_size")
        corpus = load_pairs(spec, split, skip_bad, image_size)
        return PairDataset(
            corpus,
            find_tokenizer(folder),
            max_length=int(options.get("max_length") or 32),
            image_size=image_size,
            skip_bad=skip_bad,
        )

    def run_options(self, data: DataConfig) -> dict[str, Any]:
        return {
            "skip_bad": data.skip_bad,
            "image_size": data.image_size,
            "max_length": data.max_length,
        }

    def eval_options(self, export: dict[str, Any], data: DataConfig | None) -> dict[str, Any]:
        if data is not None:
            return {"image_size": data.image_size, "max_length": data.max_length}
        return {"image_size": export.get("image_size"), "max_length": export.get("max_length")}

    def data_info(self, dataset: Any, cfg: RunConfig, folder: Path) -> dict[str, Any]:
        return {
            "channels": dataset.channels,
            "image_size": dataset.image_size[0],
            "channels_last": cfg.train.channels_last,
            "vocab_size": dataset.vocab_size,
            "max_length": dataset.max_length,
            "tokenizer": dataset.tokenizer,
        }

    def fitted_defaults(self, cfg: RunConfig, info: DataInfo) -> list[Choice]:
        """Crop scale and blur of every view recipe of the method, from the image size."""
        from selfsup.views.image import fitted_augments

        return fitted_augments(cfg.method_args, info.image_size)

    def encoder_inputs(self, info: DataInfo) -> dict[str, Any]:
        return {
            "in_channels": info.channels,
            "image_size": info.image_size,
            "vocab_size": info.vocab_size,
            "max_length": info.max_length,
            "pad_id": PAD_ID,
        }

    def export(self, info: DataInfo, folder: Path) -> dict[str, Any]:
        from selfsup.data.tokenizer import save_tokenizer

        fields = IMAGE.export(info, folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_tokenizer(info.tokenizer, folder / TOKENIZER_FILE)
        text_input = f"int64 token ids: [CLS] caption [SEP] then [PAD] (id {PAD_ID})"
        return {
            **fields,
            "max_length": info.max_length,
            "input": {**fields["input"], "text": text_input, "tokenizer": TOKENIZER_FILE},
        }

    def to_input(self, encoder: nn.Module) -> Callable[[Tensor], Tensor]:
        return IMAGE.to_input(encoder)

    def check_encoder(self, encoder: nn.Module, dataset: Any, spec: str) -> None:
        IMAGE.check_encoder(encoder, dataset, spec)

    def collate(self, samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return collate_samples(samples)

    def raw_features(self, train: Any, test: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        """The pixels, as for images (the probes read the image tower)."""
        return IMAGE.raw_features(train, test, ev)

    def decoder(self, info: DataInfo, embed_dim: int) -> nn.Module | None:
        return None  # two inputs, no single one to reconstruct

    def example_input(self, encoder: nn.Module, batch_size: int, seed: int = 0) -> Tensor:
        """Images for the image tower, which is what the two-tower encoder's ``forward`` reads."""
        return IMAGE.example_input(encoder, batch_size, seed)

    def corrupted(self, dataset: Any, kind: str, severity: int, seed: int = 0) -> Any:
        from selfsup.modalities import no_shifts

        raise no_shifts(self.name)

    def raw_baseline(
        self,
        train: Any,
        test: Any,
        ev: EvalConfig,
        probes: list[str],
        progress: Callable[[str], None],
    ) -> list[dict[str, Any]]:
        """The pixels, as for images: the probes read the image tower."""
        return IMAGE.raw_baseline(train, test, ev, probes, progress)

    def extra_evaluation(
        self,
        models: dict[str, nn.Module],
        spec: str,
        folder: Path | None,
        options: dict[str, Any],
        ev: EvalConfig,
    ) -> dict[str, list[dict[str, Any]]]:
        """Zero-shot accuracy and retrieval recall of each two-tower model on the held-out
        pairs of ``spec``, plus the TF-IDF caption baseline of zero-shot."""
        from selfsup.evaluate.retrieval import tfidf_zero_shot

        first = next(iter(models.values()))
        if not callable(getattr(first, "encode_text", None)) or folder is None:
            return {}
        test = self.load(spec, "test", folder=folder, **options)
        zero_shot, retrieval = [], []
        for label, model in models.items():
            zero, both = pair_scores(model, test, ev.batch_size)
            if zero is not None:
                zero_shot.append({"encoder": label, "data": spec, **zero})
            retrieval.append({"encoder": label, "data": spec, **both})
        if test.has_labels:
            labels = test.labels()
            train_captions = load_pairs(spec, "train", True, options.get("image_size")).captions
            guessed = tfidf_zero_shot(train_captions, test.texts(), test.class_names)
            zero_shot.append(
                {
                    "encoder": "tf-idf caption → class name",
                    "data": spec,
                    **_zero_row(torch.as_tensor(guessed), labels, len(test.class_names)),
                }
            )
        return {"zero_shot.json": zero_shot, "retrieval.json": retrieval}

    def tiny_batch(self, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        batch = IMAGE.tiny_batch(batch_size, seed)
        from selfsup.modalities.text import TEXT

        tokens = TEXT.tiny_batch(batch_size, seed)["tokens"]
        return {
            "image": batch["image"].expand(-1, 3, -1, -1).contiguous(),
            "tokens": tokens,
            "label": batch["label"],
        }


def _zero_row(predicted: Tensor, labels: Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy and mean per-class accuracy of zero-shot predictions, beside what chance and
    always answering the largest class give (the latter's mean per-class accuracy is chance's
    over the classes present)."""
    from selfsup.evaluate.retrieval import accuracy, balanced_accuracy

    majority = float(torch.bincount(labels, minlength=num_classes).max()) / len(labels) * 100
    return {
        "zero_shot_accuracy": accuracy(predicted, labels),
        "zero_shot_balanced_accuracy": balanced_accuracy(predicted, labels),
        "chance": 100 / num_classes,
        "majority": majority,
        "classes": num_classes,
        "num_test": len(labels),
    }


@torch.no_grad()
def pair_embeddings(
    model: nn.Module, dataset: PairDataset, batch_size: int, texts: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Projected image embeddings of ``dataset`` (N, P) and text embeddings (M, P) of its
    captions' tokens (or of ``texts``, token ids (M, L)), in eval mode."""
    from selfsup.evaluate.features import map_batches

    model.eval()
    prepare = IMAGE.to_input(model)
    images, _ = map_batches(
        lambda x: model.encode_image(prepare(x)), dataset, batch_size=batch_size, input_key="image"
    )
    tokens = dataset.tokens if texts is None else texts
    text = torch.cat(
        [
            model.encode_text(tokens[i : i + batch_size]).float()
            for i in range(0, len(tokens), batch_size)
        ]
    )
    return images, text


@torch.no_grad()
def class_embeddings(
    model: nn.Module, tokenizer: Any, class_names: Sequence[str], max_length: int, batch_size: int
) -> Tensor:
    """(K, P) zero-shot classifier: each class name in every prompt template, embedded by the
    text tower, averaged per class (the prompt ensemble)."""
    from selfsup.data.tokenizer import encode_batch
    from selfsup.evaluate.retrieval import ensemble_classifier, prompts_for

    model.eval()
    prompts = encode_batch(tokenizer, prompts_for(class_names), max_length)
    prompt_z = torch.cat(
        [model.encode_text(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
    )
    return ensemble_classifier(prompt_z, len(class_names))


def pair_scores(
    model: nn.Module, dataset: PairDataset, batch_size: int
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Zero-shot accuracy (None without labels) and retrieval recall@1/5/10 both ways."""
    from selfsup.evaluate.retrieval import recall_at_k, zero_shot_predict

    images, captions = pair_embeddings(model, dataset, batch_size)
    both = {"num_test": len(dataset)}
    for direction, (queries, gallery) in {
        "image_to_text": (images, captions),
        "text_to_image": (captions, images),
    }.items():
        both.update({f"{direction}_r{k}": v for k, v in recall_at_k(queries, gallery).items()})
    if not dataset.has_labels:
        return None, both
    classifier = class_embeddings(
        model, dataset.tokenizer, dataset.class_names, dataset.max_length, batch_size
    )
    labels = dataset.labels()
    return _zero_row(zero_shot_predict(images, classifier), labels, len(dataset.class_names)), both


PAIRS = PairsModality()


def zero_shot_images(
    run: str | Path,
    data: str,
    *,
    classes: Sequence[str] | None = None,
    split: str = "all",
    batch_size: int = 256,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Classify the images of ``data`` (any image source: ``folder:PATH``, ``fashion-mnist``,
    ...) by class-name prompts with the two towers of an image–text run (clip, siglip,
    align). The classes are ``classes`` or, by default, the data's own class names (a
    folder's subfolders). ``split`` is ``train``, ``test`` or ``all`` (both). With ``out``,
    writes a CSV of each image, its predicted class and the cosine score. Returns the
    prediction counts per class and, where the images carry labels named among the classes,
    the accuracy against chance."""
    import csv

    import torch.nn.functional as F

    from selfsup.data.sources import load_images
    from selfsup.evaluate.features import map_batches
    from selfsup.evaluate.retrieval import accuracy, balanced_accuracy
    from selfsup.export import load_encoder, read_spec

    folder = Path(run).parent if Path(run).is_file() else Path(run)
    model = load_encoder(folder)
    if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
        raise SelfsupError(
            f"{str(run)!r} holds no image–text towers: zero-shot needs a clip, siglip or align run"
        )
    if split not in ("train", "test", "all"):
        raise SelfsupError(f"unknown split {split!r}; use train, test or all")
    spec = read_spec(folder)
    image_size = spec.get("image_size")
    datasets = [
        load_images(data, part, image_size=image_size)
        for part in (("train", "test") if split == "all" else (split,))
    ]
    own = datasets[0].class_names if datasets[0].has_labels else []
    names = [c.strip() for c in classes if c.strip()] if classes else list(own)
    if len(names) < 2:
        raise SelfsupError(
            f"{data} names no classes: pass at least two with --classes, e.g. --classes cat,dog"
        )
    classifier = class_embeddings(
        model, find_tokenizer(folder), names, int(spec.get("max_length") or 32), batch_size
    )  # (K, P)
    prepare = IMAGE.to_input(model)
    scores, items, truth = [], [], []
    for dataset in datasets:
        z, _ = map_batches(
            lambda x: model.encode_image(prepare(x)),
            dataset,
            batch_size=batch_size,
            input_key="image",
        )
        scores.append(F.normalize(z.float(), dim=1) @ classifier.T)  # (N, K) cosines
        files = getattr(dataset, "files", None)
        items += (
            list(files) if files is not None else [f"{dataset.split}:{i}" for i in range(len(z))]
        )
        if dataset.has_labels:  # the data's own label, as an index into ``names`` (-1: absent)
            where = {n: i for i, n in enumerate(names)}
            truth += [where.get(dataset.class_names[int(y)], -1) for y in dataset.labels()]
    cosines = torch.cat(scores)
    best, predicted = cosines.max(dim=1)
    result: dict[str, Any] = {
        "images": len(items),
        "classes": names,
        "predicted_counts": {n: int((predicted == i).sum()) for i, n in enumerate(names)},
        "chance": 100 / len(names),
    }
    known = torch.tensor(truth) if truth else torch.empty(0, dtype=torch.int64)
    if len(known) and bool((known >= 0).any()):
        keep = known >= 0
        result["labelled"] = int(keep.sum())
        result["accuracy"] = accuracy(predicted[keep], known[keep])
        result["balanced_accuracy"] = balanced_accuracy(predicted[keep], known[keep])
    if out is not None:
        with Path(out).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "predicted", "score"])
            for item, k, s in zip(items, predicted.tolist(), best.tolist(), strict=True):
                writer.writerow([item, names[k], f"{s:.4f}"])
    return result
