"""The Python API: ``pretrain``, ``evaluate``, ``embed`` and ``load_encoder``.

The command line is a thin layer over these functions; everything it does can be done from
Python, with any ``nn.Module`` as the encoder.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from selfsup.config import (
    EvalConfig,
    RunConfig,
    apply_override,
    dump_yaml,
    from_dict,
    load_yaml,
    to_dict,
)
from selfsup.data import load_images
from selfsup.data.dataset import (
    find_tokenizer,
    load_dataset,
    modality_of,
    run_tokenizer,
)
from selfsup.encoders import build_encoder, encoder_modality
from selfsup.engine.accumulate import supports_gradient_cache
from selfsup.engine.checkpoint import latest_checkpoint
from selfsup.engine.precision import resolve_accelerator
from selfsup.engine.progress import console
from selfsup.engine.sharding import CACHE_REFUSED, full_state_dict
from selfsup.errors import SelfsupError
from selfsup.evaluate import (
    FeatureSet,
    evaluate_features,
    rows_table,
    write_eval_json,
    write_report,
)
from selfsup.export import export_encoder, load_encoder, read_spec
from selfsup.methods import DataInfo, build_method, encoder_channels, method_config, method_spec
from selfsup.views import prepare

if TYPE_CHECKING:
    from selfsup.engine import TrainResult

log = logging.getLogger("selfsup")

PAD_ID = 0
"""The id of [PAD] in every tokenizer selfsup trains (see ``selfsup.data.tokenizer``)."""

RUN_DIR_ENV = "SELFSUP_RUN_DIR"
"""Set by the launching process so that DDP worker processes write to the same run folder."""


@dataclass
class Run:
    """What ``pretrain`` returns: where the run lives and what it measured."""

    run_dir: Path
    train: TrainResult
    eval_rows: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0
    """This process's global rank: under DDP every process returns a ``Run``; rank 0 evaluates."""

    @property
    def encoder(self) -> nn.Module:
        return load_encoder(self.run_dir)


def make_config(
    config: RunConfig | dict | str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **sections: Any,
) -> RunConfig:
    """A checked ``RunConfig`` from a preset/run YAML, a mapping or a config object, then
    keyword sections (``train={"max_steps": 100}``, ``data="fashion-mnist"``), then
    ``key.path=value`` overrides. The method's own arguments are filled with its defaults."""
    if isinstance(config, RunConfig):
        data: dict[str, Any] = to_dict(config)
    elif isinstance(config, (str, Path)):
        data = load_yaml(config)
        if sections.get("out") is None and not any(o.startswith("out=") for o in overrides):
            _check_config_file_out(config, data.get("out"))
    else:
        data = dict(config or {})
    for key, value in sections.items():
        if value is None:
            continue
        if key == "data" and isinstance(value, str):
            value = {"name": value}
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    for assignment in overrides:
        apply_override(data, assignment)
    cfg = from_dict(RunConfig, data)
    cfg.method_args = to_dict(method_config(cfg.method, cfg.method_args))
    _check(cfg)
    return cfg


def _check(cfg: RunConfig) -> None:
    t = cfg.train
    positive = {
        "train.batch_size": t.batch_size,
        "train.devices": t.devices,
        "train.num_nodes": t.num_nodes,
        "train.log_every": t.log_every,
        "train.collapse_every": t.collapse_every,
        "train.checkpoint_every": t.checkpoint_every,
        "eval.batch_size": cfg.eval.batch_size,
        "eval.finetune_batch_size": cfg.eval.finetune_batch_size,
        "eval.finetune_epochs": cfg.eval.finetune_epochs,
    }
    for key, value in [
        ("train.max_steps", t.max_steps),
        ("train.max_epochs", t.max_epochs),
        ("train.micro_batch_size", t.micro_batch_size),
    ]:
        if value is not None:
            positive[key] = value
    for key, value in positive.items():
        if value < 1:
            raise SelfsupError(f"{key} must be a positive integer, got {value}")
    on_cpu = resolve_accelerator(t.accelerator) == "cpu"
    if t.sync_batchnorm and t.devices * t.num_nodes > 1 and on_cpu:
        raise SelfsupError(
            "train.sync_batchnorm needs GPUs: PyTorch synchronises BatchNorm on CUDA only; "
            "drop --sync-batchnorm for CPU runs"
        )
    if t.num_nodes > 1 and not cfg.out:
        raise SelfsupError(
            "a multi-node run needs --out: a folder on a filesystem every node shares, so that all "
            "nodes write to the same run"
        )
    if (
        t.strategy == "fsdp"
        and t.micro_batch_size is not None
        and t.gradient_cache
        and supports_gradient_cache(method_spec(cfg.method).build)
    ):
        raise SelfsupError(CACHE_REFUSED)
    if t.lr is not None and not t.lr > 0:
        raise SelfsupError(f"train.lr must be positive, got {t.lr}")
    data_modality = modality_of(cfg.data.name)
    method_modality = method_spec(cfg.method).modality
    if method_modality not in ("any", data_modality):
        hint = (
            "fortunes, gcide or text:PATH"
            if method_modality == "text"
            else "digits, fashion-mnist or folder:PATH"
        )
        raise SelfsupError(
            f"method {cfg.method!r} learns from {method_modality} but {cfg.data.name!r} is "
            f"{data_modality} data: pass --data with {method_modality} ({hint})"
        )
    if data_modality == "text":
        if not 3 <= cfg.data.max_length <= 65536:
            raise SelfsupError(
                f"data.max_length must lie between 3 and 65536 tokens, got {cfg.data.max_length}"
            )
        if cfg.data.vocab_size < 16:
            raise SelfsupError(f"data.vocab_size must be at least 16, got {cfg.data.vocab_size}")
    if cfg.data.num_workers < 0:
        raise SelfsupError(f"data.num_workers must be 0 or more, got {cfg.data.num_workers}")
    for fraction in cfg.eval.label_fractions:
        if not 0 < fraction <= 1:
            raise SelfsupError(f"eval.label_fractions must lie in (0, 1], got {fraction}")
    unknown = set(cfg.eval.protocols) - {"linear", "knn", "finetune"}
    if unknown:
        raise SelfsupError(
            f"unknown evaluation protocol {sorted(unknown)[0]!r}; choose from linear, knn, finetune"
        )
    if t.max_time is not None:
        from selfsup.config import parse_duration

        if not parse_duration(t.max_time) > 0:
            raise SelfsupError(f"train.max_time must be longer than 0 s, got {t.max_time!r}")
    _check_ranges(cfg)


MAX_IMAGE_SIZE = 4096
"""Largest ``data.image_size``: every image is decoded at this size, so a typo such as
100000 would ask for terabytes before the first step."""


def _check_ranges(cfg: RunConfig) -> None:
    """The numeric fields outside ``_check``'s positive integers: ranges, NaN and infinity."""
    t, ev = cfg.train, cfg.eval
    if t.lr is not None and not math.isfinite(t.lr):
        raise SelfsupError(f"train.lr must be a finite number, got {t.lr}")
    ranges: list[tuple[str, float | None, float, float]] = [
        ("train.warmup_fraction", t.warmup_fraction, 0.0, 1.0),
        ("train.min_lr_ratio", t.min_lr_ratio, 0.0, 1.0),
        ("train.weight_decay", t.weight_decay, 0.0, math.inf),
        ("train.collapse_rank_min", t.collapse_rank_min, 0.0, math.inf),
    ]
    for key, value, lo, hi in ranges:
        if value is not None and not (lo <= value <= hi and math.isfinite(value)):
            upper = f" and {hi:g}" if math.isfinite(hi) else ""
            raise SelfsupError(f"{key} must lie between {lo:g}{upper}, got {value}")
    if t.grad_clip is not None and not (t.grad_clip > 0 and math.isfinite(t.grad_clip)):
        raise SelfsupError(
            f"train.grad_clip must be a positive norm (or null to turn clipping off), got {t.grad_clip}"
        )
    if not 0 <= t.seed < 2**32:
        raise SelfsupError(f"train.seed must lie between 0 and 2**32 - 1, got {t.seed}")
    size = cfg.data.image_size
    if size is not None and not 1 <= size <= MAX_IMAGE_SIZE:
        raise SelfsupError(
            f"data.image_size must lie between 1 and {MAX_IMAGE_SIZE} pixels, got {size}"
        )
    if ev.knn_k < 1:
        raise SelfsupError(f"eval.knn_k must be a positive integer, got {ev.knn_k}")
    if not (ev.knn_temperature > 0 and math.isfinite(ev.knn_temperature)):
        raise SelfsupError(f"eval.knn_temperature must be positive, got {ev.knn_temperature}")
    if ev.max_train is not None and ev.max_train < 1:
        raise SelfsupError(f"eval.max_train must be a positive integer or null, got {ev.max_train}")
    for key, values in [
        ("eval.protocols", ev.protocols),
        ("eval.label_fractions", ev.label_fractions),
        ("eval.seeds", ev.seeds),
    ]:
        if not values:
            raise SelfsupError(f"{key} must hold at least one value, got an empty list")


def _check_config_file_out(path: str | Path, out: Any) -> None:
    """A config *file* may not send the run outside the working folder: an absolute ``out``
    or one with ``..`` must be given explicitly (``--out`` or ``out=`` in Python)."""
    if out is None or not isinstance(out, str):
        return  # a wrong type is reported by from_dict
    target = Path(out)
    if target.is_absolute() or ".." in target.parts or out.startswith("~"):
        raise SelfsupError(
            f"config file {str(path)!r} sets out: {out!r}, a folder outside the current one; "
            "a config file may only name a relative folder below it: pass --out explicitly "
            "to write elsewhere"
        )


def _new_run_dir(cfg: RunConfig) -> Path:
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    if cfg.out:
        return Path(cfg.out)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    data = re.sub(
        r"[^A-Za-z0-9]+", "-", Path(cfg.data.name.split(":")[-1]).name or cfg.data.name
    ).strip("-")
    return Path("runs") / f"{cfg.method}-{data}-{stamp}"


def _pretrain_worker(
    fabric: Any, cfg: RunConfig, run_dir: Path, resume_from: Path | None, encoder: nn.Module | None
) -> TrainResult:
    dataset, info = _training_data(cfg, run_dir, fabric.world_size)
    if getattr(dataset, "skipped", None) and fabric.is_global_zero:
        console.print(
            f"[yellow]skipped {len(dataset.skipped)} unreadable files[/] (first: {dataset.skipped[0]})"
        )
    fabric.seed_everything(
        cfg.train.seed, verbose=False
    )  # encoder and head weights follow from the seed
    if encoder is None:
        encoder = build_run_encoder(cfg, info)
    # FSDP turns the parameters into shards: export from a copy made before
    template = copy.deepcopy(encoder) if cfg.train.strategy == "fsdp" else None
    method = build_method(cfg.method, cfg.method_args, encoder, info)
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml({**to_dict(cfg), "out": None}))
    from selfsup.engine import train  # Lightning Fabric loads here, not on `import selfsup`

    result = train(fabric, cfg, method, dataset, run_dir, resume_from=resume_from)
    trained = method.encoder
    if template is not None:
        whole = full_state_dict(method.encoder)  # every process takes part in the gather
        template.load_state_dict(whole)
        trained = template
    if fabric.is_global_zero:
        _export(trained, run_dir, cfg, info, step=result.steps)
    return result


def _training_data(cfg: RunConfig, run_dir: Path, world: int) -> tuple[Any, DataInfo]:
    """The training split of ``cfg.data`` and what the method must know of it. A text run
    reads the tokenizer that ``pretrain`` trained (or found) in the run folder."""
    d = cfg.data
    if modality_of(d.name) == "text":
        tokenizer = find_tokenizer(run_dir)
        dataset = load_dataset(d.name, "train", tokenizer=tokenizer, max_length=d.max_length)
        info = DataInfo(
            modality="text",
            vocab_size=tokenizer.get_vocab_size(),
            max_length=d.max_length,
            tokenizer=tokenizer,
            steps_per_epoch=len(dataset) // (cfg.train.batch_size * world),
        )
        return dataset, info
    dataset = load_images(d.name, "train", skip_bad=d.skip_bad, image_size=d.image_size)
    info = DataInfo(
        channels=dataset.channels,
        image_size=dataset.image_size[0],
        channels_last=cfg.train.channels_last,
        steps_per_epoch=len(dataset) // (cfg.train.batch_size * world),  # as the engine's sampler
    )
    return dataset, info


def build_run_encoder(cfg: RunConfig, info: DataInfo) -> nn.Module:
    """The registered encoder ``cfg.encoder`` built for the data: token ids for text, images
    with the channels the method asks for (colorization encodes lightness: 1 channel)."""
    modality = encoder_modality(cfg.encoder)
    if modality != info.modality:
        hint = "transformer-tiny" if info.modality == "text" else "convnet or vit-tiny"
        raise SelfsupError(
            f"encoder {cfg.encoder!r} reads {modality} but {cfg.data.name!r} is {info.modality} "
            f"data: pass --encoder {hint} (see `selfsup list`)"
        )
    if info.modality == "text":
        return build_encoder(
            cfg.encoder,
            vocab_size=info.vocab_size,
            max_length=info.max_length,
            pad_id=PAD_ID,
            **cfg.encoder_args,
        )
    return build_encoder(
        cfg.encoder,
        in_channels=encoder_channels(cfg.method, info),
        image_size=info.image_size,
        **cfg.encoder_args,
    )


def _export(encoder: nn.Module, folder: Path, cfg: RunConfig, info: DataInfo, step: int) -> Path:
    """Export ``encoder`` with what feeding it takes: the tokenizer (text) or image size and channels."""
    feed: dict[str, Any] = (
        {"max_length": info.max_length, "tokenizer": info.tokenizer}
        if info.modality == "text"
        else {"image_size": info.image_size, "channels": info.channels}
    )
    return export_encoder(encoder, folder, method=cfg.method, data=cfg.data.name, step=step, **feed)


def pretrain(
    config: RunConfig | dict | str | Path | None = None,
    *,
    encoder: str | nn.Module | None = None,
    resume: str | Path | None = None,
    evaluate: bool = True,
    overrides: list[str] | tuple[str, ...] = (),
    **sections: Any,
) -> Run:
    """Pretrain an encoder, export it, and (if the data has labels) evaluate it.

    ``pretrain(method="simclr", data="fashion-mnist", train={"max_time": "15m"})``;
    ``resume`` takes a run folder or a checkpoint file and continues it exactly.
    """
    module = encoder if isinstance(encoder, nn.Module) else None
    if isinstance(encoder, str):
        sections["encoder"] = encoder
    resume_from: Path | None = None
    if resume is not None:
        resume_path = Path(resume)
        run_dir = resume_path if resume_path.is_dir() else resume_path.parent.parent
        if config is None:
            config = run_dir / "config.yaml"
        resume_from = resume_path if resume_path.is_file() else latest_checkpoint(run_dir)
        if resume_from is None:
            raise SelfsupError(f"{resume_path} holds no checkpoint to resume from")
        cfg = make_config(config, overrides, **sections)
    else:
        cfg = make_config(config, overrides, **sections)
        run_dir = _new_run_dir(cfg)
        if latest_checkpoint(run_dir) is not None and not os.environ.get(RUN_DIR_ENV):
            raise SelfsupError(
                f"{run_dir} already holds a run: pass --resume {run_dir} to continue it, or choose another --out"
            )
    if modality_of(cfg.data.name) == "text":  # before the workers start, so all read one file
        with console.status("training the tokenizer"):
            run_tokenizer(
                cfg.data.name, run_dir, kind=cfg.data.tokenizer, vocab_size=cfg.data.vocab_size
            )
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        from selfsup.engine import make_fabric

        fabric = make_fabric(cfg, run_dir)
        result = fabric.launch(_pretrain_worker, cfg, run_dir, resume_from, module)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    run = Run(run_dir, result, rank=fabric.global_rank)
    if fabric.global_rank != 0:
        return run
    if evaluate and _has_labels(cfg.eval.data or cfg.data.name, cfg):
        run.eval_rows = evaluate_run(run_dir, cfg=cfg)
    return run


def _has_labels(spec: str, cfg: RunConfig) -> bool:
    if modality_of(spec) == "text":
        from selfsup.data.text import load_texts

        return load_texts(spec, "test").labels is not None
    return load_images(spec, "test", image_size=cfg.data.image_size).has_labels


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    data: torch.Tensor | torch.utils.data.Dataset,
    batch_size: int = 512,
    device: str | None = None,
    *,
    to_input: Any = None,
    input_key: str | None = None,
    num_workers: int = 0,
    collate: Any = None,
) -> torch.Tensor:
    """Frozen features (N, D), float32, batched, in eval mode, in sample order.

    ``data`` is a data set of samples (``{"image": uint8 (C, H, W), ...}``,
    ``{"tokens": int64 (L,), ...}``), streamed through a DataLoader so that only one batch of
    inputs is in memory (folders and shards decode in ``num_workers`` processes; ``collate``
    pads variable-length inputs), or a tensor of inputs already in memory (uint8 images
    (N, C, H, W) or int64 token ids (N, L)). ``to_input`` maps a raw batch to encoder input
    (default `encoder_input_fn`); ``input_key`` is the samples' input key (default: the data
    set's own)."""
    from selfsup.evaluate.features import dataset_input_key, map_batches

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = encoder.to(device).eval()
    to_input = to_input or encoder_input_fn(encoder)
    if isinstance(data, torch.Tensor):
        out = [
            encoder(to_input(data[start : start + batch_size].to(device))).float().cpu()
            for start in range(0, len(data), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, getattr(encoder, "embed_dim", 0))
    features, _ = map_batches(
        lambda x: encoder(to_input(x)),
        data,
        batch_size=batch_size,
        input_key=input_key or dataset_input_key(data),
        device=device,
        num_workers=num_workers,
        collate=collate,
    )  # (N, D)
    return features if len(features) else torch.empty(0, getattr(encoder, "embed_dim", 0))


def encoder_input_fn(encoder: nn.Module) -> Any:
    """What turns a raw batch into ``encoder``'s input: images are scaled and normalised
    (to the channels the encoder was built for), token ids go in as they are."""
    build_args = getattr(encoder, "build_args", None) or {}
    if "vocab_size" in build_args:
        return lambda tokens: tokens
    channels = build_args.get("in_channels")

    def to_input(x: torch.Tensor) -> torch.Tensor:
        return x if x.is_floating_point() else prepare(x, channels=channels)

    return to_input


def _labelled(spec: str, split: str, **options: Any) -> Any:
    dataset = load_dataset(spec, split, **options)  # type: ignore[arg-type]
    if not dataset.has_labels:
        raise SelfsupError(
            f"data set {spec!r} has no labels, so it cannot be evaluated: pass --data with a "
            "labelled set (images: a folder with one subfolder per class, an npz with 'labels', "
            "digits or fashion-mnist; text: fortunes, or text:FILE.jsonl with a label field)"
        )
    return dataset


def _data_options(
    encoder: nn.Module, data_spec: str, folder: Path | None, cfg: RunConfig | None, spec: dict
) -> dict[str, Any]:
    """How to load evaluation data for ``encoder``: image size, or tokenizer and length."""
    build_args = getattr(encoder, "build_args", None) or {}
    data_modality = modality_of(data_spec)
    encoder_reads = "text" if "vocab_size" in build_args else "image"
    if build_args and data_modality != encoder_reads:
        raise SelfsupError(
            f"the encoder reads {encoder_reads} but {data_spec!r} is {data_modality} data: "
            f"pass --data with {encoder_reads} data"
        )
    if data_modality == "image":
        return {"image_size": cfg.data.image_size if cfg else spec.get("image_size")}
    if folder is None:
        raise SelfsupError("a text encoder is evaluated from its run folder (for the tokenizer)")
    max_length = spec.get("max_length") or (cfg.data.max_length if cfg else None)
    return {"tokenizer": find_tokenizer(folder), "max_length": max_length or 128}


def evaluate_run(
    run: str | Path | nn.Module,
    data: str | None = None,
    *,
    cfg: RunConfig | None = None,
    eval_cfg: EvalConfig | None = None,
    name: str | None = None,
    out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Linear probe and kNN at several label fractions (and fine-tuning, if asked) for the
    encoder and the two baselines (raw input: pixels or TF-IDF; the same encoder at random
    init); a causal language model also gets its perplexity on held-out text. Prints a table,
    writes eval.json and report.html into the run folder (or ``out``)."""
    run_dir: Path | None = None
    if isinstance(run, nn.Module):
        encoder = run
        spec: dict[str, Any] = {}
    else:
        run_dir = Path(run).parent if Path(run).is_file() else Path(run)
        encoder = load_encoder(run_dir)
        spec = read_spec(run_dir)
        if cfg is None and (run_dir / "config.yaml").is_file():
            cfg = make_config(run_dir / "config.yaml")
    ev = eval_cfg or (cfg.eval if cfg else EvalConfig())
    data_spec = data or ev.data or (cfg.data.name if cfg else None)
    if data_spec is None:
        raise SelfsupError("no labelled data to evaluate on: pass --data")
    options = _data_options(encoder, data_spec, run_dir, cfg, spec)
    train_set, test_set = (
        _labelled(data_spec, "train", **options),
        _labelled(data_spec, "test", **options),
    )
    name = name or spec.get("method") or (cfg.method if cfg else "encoder")
    seed = cfg.train.seed if cfg else 0
    text = modality_of(data_spec) == "text"

    # Inputs are streamed batch by batch (a DataLoader over each split), never held whole.
    from torch.utils.data import Subset

    from selfsup.evaluate.features import dataset_input_key, map_batches

    train_y = train_set.labels()
    keep = torch.arange(len(train_y))
    if ev.max_train is not None and len(train_y) > ev.max_train:
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
        keep = keep[: ev.max_train]
    train_part, train_y = Subset(train_set, keep.tolist()), train_y[keep]
    test_y = test_set.labels()
    fresh = _random_init_encoder(encoder, seed) if ev.baselines else None
    workers = cfg.data.num_workers if cfg else 0

    def features(model: nn.Module, split: Any) -> torch.Tensor:
        return extract_features(model, split, ev.batch_size, num_workers=workers)

    def pixels(split: Any) -> torch.Tensor:
        return map_batches(
            lambda x: x.flatten(1).float() / 255,
            split,
            batch_size=ev.batch_size,
            input_key=dataset_input_key(split),
            num_workers=workers,
        )[0]  # (N, C·H·W)

    with console.status("extracting features"):
        sets = {
            name: FeatureSet(
                features(encoder, train_part), train_y, features(encoder, test_set), test_y
            )
        }
        if fresh is not None:
            sets["random-init"] = FeatureSet(
                features(fresh, train_part), train_y, features(fresh, test_set), test_y
            )
            if not text:  # text's raw input is TF-IDF, probed below with sparse LR
                sets["raw"] = FeatureSet(pixels(train_part), train_y, pixels(test_set), test_y)

    probes = [p for p in ev.protocols if p != "finetune"]
    with console.status("evaluating") as status:
        rows = (
            evaluate_features(
                sets,
                fractions=ev.label_fractions,
                seeds=ev.seeds,
                protocols=probes,  # type: ignore[arg-type]
                k=ev.knn_k,
                temperature=ev.knn_temperature,
                progress=lambda text: status.update(f"evaluating: {text}"),
            )
            if probes
            else []
        )
    if text and ev.baselines and probes:
        with console.status("TF-IDF baseline") as status:
            texts = train_set.texts()
            rows += _tfidf_rows(
                [texts[i] for i in keep], train_y, test_set.texts(), test_y, ev, probes, status
            )
    if "finetune" in ev.protocols:
        models = {name: encoder, **({"random-init": fresh} if fresh is not None else {})}
        precision = cfg.train.precision if cfg else "auto"
        rows += _finetune_rows(models, train_part, train_y, test_set, ev, seed, precision, workers)
    console.print(rows_table(rows, title=f"{name} on {data_spec} (test accuracy, %)"))
    target = Path(out) if out else run_dir
    if getattr(encoder, "causal", False) and run_dir is not None:
        lm = _perplexity_rows(name, encoder, fresh, cfg, options, data_spec, ev)
        for row in lm:
            console.print(f"{row['encoder']}: perplexity {row['perplexity']:.1f} on {row['data']}")
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
            (target / "perplexity.json").write_text(json.dumps(lm, indent=2))
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        write_eval_json(rows, target / "eval.json")
        if ev.report:
            with console.status("writing report.html (t-SNE map)"):
                config_text = (
                    (run_dir / "config.yaml").read_text()
                    if run_dir and (run_dir / "config.yaml").is_file()
                    else None
                )
                metrics = (
                    run_dir / "metrics.csv"
                    if run_dir and (run_dir / "metrics.csv").is_file()
                    else None
                )
                path = write_report(
                    target / "report.html",
                    title=f"selfsup: {name} on {data_spec}",
                    rows=rows,
                    metrics_csv=metrics,
                    embeddings=sets[name].test_x.numpy(),
                    embedding_labels=test_y.numpy(),
                    class_names=test_set.class_names,
                    config_text=config_text,
                )
            console.print(f"report: {path}")
    return rows


def _tfidf_rows(
    train_texts: list[str],
    train_y: torch.Tensor,
    test_texts: list[str],
    test_y: torch.Tensor,
    ev: EvalConfig,
    probes: list[str],
    status: Any,
) -> list[dict[str, Any]]:
    """The raw-input baseline of text: TF-IDF + logistic regression (sparse, uni- and
    bigrams, C chosen on held-out labels) and TF-IDF kNN, rows marked ``features: tf-idf``."""
    from selfsup.evaluate.text import tfidf_label_efficiency

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
        progress=lambda text: status.update(f"TF-IDF baseline: {text}"),
    )
    return [{**row, "features": "tf-idf"} for row in rows]


def _finetune_rows(
    models: dict[str, nn.Module],
    train_set: Any,
    train_y: torch.Tensor,
    test_set: Any,
    ev: EvalConfig,
    seed: int,
    precision: str = "auto",
    num_workers: int = 0,
) -> list[dict[str, Any]]:
    """Fine-tune each encoder with a linear head at each of ``ev.finetune_fractions`` (a
    class-balanced ``Subset`` of ``train_set``, whose labels are ``train_y``), on the engine."""
    from torch.utils.data import Subset

    from selfsup.config import parse_duration
    from selfsup.evaluate.finetune import FinetuneConfig, finetune, image_finetune_augment
    from selfsup.evaluate.protocol import class_balanced_subset, result_row

    ft = FinetuneConfig(
        epochs=ev.finetune_epochs,
        max_time=parse_duration(ev.finetune_max_time) if ev.finetune_max_time else None,
        batch_size=ev.finetune_batch_size,
        lr=ev.finetune_lr,
        layer_decay=ev.finetune_layer_decay if ev.finetune_layer_decay < 1 else None,
        head_init=ev.finetune_head,
        seed=seed,
        precision=precision,  # type: ignore[arg-type]
    )
    rows = []
    for name, model in models.items():
        text = "vocab_size" in (getattr(model, "build_args", None) or {})
        for fraction in ev.finetune_fractions:
            subset = Subset(
                train_set, class_balanced_subset(train_y.numpy(), fraction, seed).tolist()
            )
            console.print(f"fine-tuning {name} on {fraction:.0%} of the labels")
            result = finetune(
                model,
                subset,
                test_set,
                ft,
                to_input=encoder_input_fn(model),
                augment=None if text else image_finetune_augment,
                num_classes=int(train_y.max()) + 1,
                num_workers=num_workers,
                description=f"fine-tune {name}",
            )
            rows.append(
                result_row(
                    name,
                    "finetune",
                    fraction,
                    [result["accuracy"]],
                    num_train=len(subset),
                    num_test=result["num_test"],
                    epochs=result["epochs"],
                    seconds=result["seconds"],
                )
            )
    return rows


def _perplexity_rows(
    name: str,
    encoder: nn.Module,
    fresh: nn.Module | None,
    cfg: RunConfig | None,
    options: dict[str, Any],
    data_spec: str,
    ev: EvalConfig,
) -> list[dict[str, Any]]:
    """Perplexity of a causal LM (and of its random init) on the held-out split of the text
    it was pretrained on."""
    from selfsup.evaluate.text import perplexity
    from selfsup.methods.clm import lm_logits

    text_spec = cfg.data.name if cfg else data_spec
    tokens = load_dataset(text_spec, "test", **options).as_tensor()
    rows = []
    for label, model in [(name, encoder), ("random-init", fresh)]:
        if model is None:
            continue
        model.eval()
        with torch.no_grad():
            result = perplexity(
                lambda t, model=model: lm_logits(model, t),
                tokens,
                pad_id=PAD_ID,
                batch_size=max(1, ev.batch_size // 4),
            )
        rows.append({"encoder": label, "data": text_spec, **result})
    return rows


def _random_init_encoder(encoder: nn.Module, seed: int) -> nn.Module:
    """The same architecture at the initialisation a fresh run with ``seed`` would draw."""
    build_args = getattr(encoder, "build_args", None)
    if build_args is None:
        import copy

        fresh = copy.deepcopy(encoder)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return fresh
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_encoder(**build_args).eval()


def embed(
    run: str | Path,
    data: str,
    split: str = "test",
    out: str | Path | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Features (N, D) of a data set under an exported encoder; saved as ``.npy`` when ``out`` is given."""
    spec = read_spec(run)
    encoder = load_encoder(run)
    folder = Path(run).parent if Path(run).is_file() else Path(run)
    dataset = load_dataset(data, split, **_data_options(encoder, data, folder, None, spec))  # type: ignore[arg-type]
    channels = getattr(dataset, "channels", None)
    if channels is not None and channels != spec.get("channels", channels):
        raise SelfsupError(
            f"{data!r} has {channels}-channel images but the encoder expects {spec['channels']}"
        )
    features = extract_features(encoder, dataset.as_tensor(), batch_size).numpy()
    if out is not None:
        np.save(out, features)
        if dataset.has_labels:
            np.save(Path(out).with_suffix(".labels.npy"), dataset.labels().numpy())
    return features


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
    from selfsup.evaluate.generate import generate
    from selfsup.methods.text import lm_logits, special_ids

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


__all__ = [
    "Run",
    "generate_text",
    "embed",
    "evaluate_run",
    "extract_features",
    "load_encoder",
    "make_config",
    "pretrain",
]


def export_checkpoint(
    run: str | Path, checkpoint_file: str | Path | None = None, out: str | Path | None = None
) -> Path:
    """Re-export the encoder of a run from one of its checkpoints (default: the latest)."""
    from lightning_fabric import Fabric

    from selfsup.engine import checkpoint

    run_dir = Path(run)
    cfg = make_config(run_dir / "config.yaml")
    path = Path(checkpoint_file) if checkpoint_file else latest_checkpoint(run_dir)
    if path is None:
        raise SelfsupError(f"{run_dir} holds no checkpoint to export")
    _, info = _training_data(cfg, run_dir, world=1)
    method = build_method(cfg.method, cfg.method_args, build_run_encoder(cfg, info), info)
    fabric = Fabric(accelerator="cpu", devices=1)
    extra = checkpoint.load(fabric, path, {"method": method})
    return _export(method.encoder, Path(out or run_dir), cfg, info, step=int(extra.get("step", -1)))
