"""The Python API: ``pretrain``, ``evaluate``, ``embed`` and ``load_encoder``.

The command line is a thin layer over these functions; everything it does can be done from
Python, with any ``nn.Module`` as the encoder.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from selfsup.encoders import build_encoder
from selfsup.engine import TrainResult, make_fabric, train
from selfsup.engine.checkpoint import latest_checkpoint
from selfsup.engine.precision import resolve_accelerator
from selfsup.engine.progress import console
from selfsup.errors import SelfsupError
from selfsup.evaluate import (
    FeatureSet,
    evaluate_features,
    rows_table,
    write_eval_json,
    write_report,
)
from selfsup.export import export_encoder, load_encoder, read_spec
from selfsup.methods import DataInfo, build_method, encoder_channels, method_config
from selfsup.views import prepare

log = logging.getLogger("selfsup")

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
    if t.strategy == "fsdp" and on_cpu:
        raise SelfsupError(
            "--strategy fsdp needs GPUs (Lightning Fabric shards models on CUDA only); on CPUs "
            "use --strategy ddp"
        )
    if t.lr is not None and not t.lr > 0:
        raise SelfsupError(f"train.lr must be positive, got {t.lr}")
    if cfg.data.num_workers < 0:
        raise SelfsupError(f"data.num_workers must be 0 or more, got {cfg.data.num_workers}")
    for fraction in cfg.eval.label_fractions:
        if not 0 < fraction <= 1:
            raise SelfsupError(f"eval.label_fractions must lie in (0, 1], got {fraction}")
    unknown = set(cfg.eval.protocols) - {"linear", "knn"}
    if unknown:
        raise SelfsupError(
            f"unknown evaluation protocol {sorted(unknown)[0]!r}; choose from linear, knn"
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
    dataset = load_images(
        cfg.data.name, "train", skip_bad=cfg.data.skip_bad, image_size=cfg.data.image_size
    )
    if dataset.skipped and fabric.is_global_zero:
        console.print(
            f"[yellow]skipped {len(dataset.skipped)} unreadable files[/] (first: {dataset.skipped[0]})"
        )
    height, width = dataset.image_size
    fabric.seed_everything(
        cfg.train.seed, verbose=False
    )  # encoder and head weights follow from the seed
    world = fabric.world_size  # devices × num_nodes
    info = DataInfo(
        channels=dataset.channels,
        image_size=height,
        channels_last=cfg.train.channels_last,
        steps_per_epoch=len(dataset) // (cfg.train.batch_size * world),  # as the engine's sampler
    )
    if encoder is None:  # with the channels the method asks for (colorization: 1, lightness)
        encoder = build_encoder(
            cfg.encoder,
            in_channels=encoder_channels(cfg.method, info),
            image_size=height,
            **cfg.encoder_args,
        )
    method = build_method(cfg.method, cfg.method_args, encoder, info)
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml({**to_dict(cfg), "out": None}))
    result = train(fabric, cfg, method, dataset, run_dir, resume_from=resume_from)
    if fabric.is_global_zero:
        export_encoder(
            method.encoder,
            run_dir,
            method=cfg.method,
            data=cfg.data.name,
            step=result.steps,
            image_size=height,
            channels=dataset.channels,
        )
    return result


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
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        fabric = make_fabric(cfg, run_dir)
        result = fabric.launch(_pretrain_worker, cfg, run_dir, resume_from, module)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    run = Run(run_dir, result, rank=fabric.global_rank)
    if fabric.global_rank != 0:
        return run
    if (
        evaluate
        and load_images(
            cfg.eval.data or cfg.data.name, "test", image_size=cfg.data.image_size
        ).has_labels
    ):
        run.eval_rows = evaluate_run(run_dir, cfg=cfg)
    return run


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def extract_features(
    encoder: nn.Module, images: torch.Tensor, batch_size: int = 512, device: str | None = None
) -> torch.Tensor:
    """Frozen features (N, D) of uint8 images (N, C, H, W), batched, in eval mode, float32."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = encoder.to(device).eval()
    out = []
    channels = (getattr(encoder, "build_args", None) or {}).get("in_channels")
    for start in range(0, len(images), batch_size):
        x = prepare(images[start : start + batch_size].to(device), channels=channels)
        out.append(encoder(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, getattr(encoder, "embed_dim", 0))


def _labelled(spec: str, split: str, image_size: int | None) -> Any:
    dataset = load_images(spec, split, image_size=image_size)  # type: ignore[arg-type]
    if not dataset.has_labels:
        raise SelfsupError(
            f"data set {spec!r} has no labels, so it cannot be evaluated: pass --data with a labelled set "
            "(a folder with one subfolder per class, an npz with 'labels', digits or fashion-mnist)"
        )
    return dataset


def evaluate_run(
    run: str | Path | nn.Module,
    data: str | None = None,
    *,
    cfg: RunConfig | None = None,
    eval_cfg: EvalConfig | None = None,
    name: str | None = None,
    out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Linear probe and kNN at several label fractions for the encoder and the two baselines
    (raw input, the same encoder at random init); prints a table, writes eval.json and
    report.html into the run folder (or ``out``)."""
    run_dir: Path | None = None
    if isinstance(run, nn.Module):
        encoder = run
        spec: dict[str, Any] = {}
    else:
        run_dir = Path(run)
        encoder = load_encoder(run_dir)
        spec = read_spec(run_dir)
        if cfg is None and (run_dir / "config.yaml").is_file():
            cfg = make_config(run_dir / "config.yaml")
    ev = eval_cfg or (cfg.eval if cfg else EvalConfig())
    data_spec = data or ev.data or (cfg.data.name if cfg else None)
    if data_spec is None:
        raise SelfsupError("no labelled data to evaluate on: pass --data")
    image_size = cfg.data.image_size if cfg else spec.get("image_size")
    train_set, test_set = (
        _labelled(data_spec, "train", image_size),
        _labelled(data_spec, "test", image_size),
    )
    name = name or spec.get("method") or (cfg.method if cfg else "encoder")
    seed = cfg.train.seed if cfg else 0

    train_images, train_y = train_set.as_tensor(), train_set.labels()
    if ev.max_train is not None and len(train_y) > ev.max_train:
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))[
            : ev.max_train
        ]
        train_images, train_y = train_images[keep], train_y[keep]
    test_images, test_y = test_set.as_tensor(), test_set.labels()

    with console.status("extracting features"):
        sets = {
            name: FeatureSet(
                extract_features(encoder, train_images, ev.batch_size),
                train_y,
                extract_features(encoder, test_images, ev.batch_size),
                test_y,
            )
        }
        if ev.baselines:
            sets["random-init"] = _random_init_features(
                encoder, seed, train_images, test_images, train_y, test_y, ev
            )
            sets["raw"] = FeatureSet(
                train_images.flatten(1).float() / 255,
                train_y,
                test_images.flatten(1).float() / 255,
                test_y,
            )

    with console.status("evaluating") as status:
        rows = evaluate_features(
            sets,
            fractions=ev.label_fractions,
            seeds=ev.seeds,
            protocols=ev.protocols,
            k=ev.knn_k,
            temperature=ev.knn_temperature,
            progress=lambda text: status.update(f"evaluating: {text}"),
        )
    console.print(rows_table(rows, title=f"{name} on {data_spec} (test accuracy, %)"))
    target = Path(out) if out else run_dir
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


def _random_init_features(
    encoder: nn.Module, seed: int, train_images, test_images, train_y, test_y, ev: EvalConfig
) -> FeatureSet:
    build_args = getattr(encoder, "build_args", None)
    if build_args is None:
        import copy

        fresh = copy.deepcopy(encoder)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fresh = build_encoder(**build_args)
    return FeatureSet(
        extract_features(fresh, train_images, ev.batch_size),
        train_y,
        extract_features(fresh, test_images, ev.batch_size),
        test_y,
    )


def embed(
    run: str | Path,
    data: str,
    split: str = "test",
    out: str | Path | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Features (N, D) of a data set under an exported encoder; saved as ``.npy`` when ``out`` is given."""
    spec = read_spec(run)
    dataset = load_images(data, split, image_size=spec.get("image_size"))  # type: ignore[arg-type]
    encoder = load_encoder(run)
    if dataset.channels != spec.get("channels", dataset.channels):
        raise SelfsupError(
            f"{data!r} has {dataset.channels}-channel images but the encoder expects {spec['channels']}"
        )
    features = extract_features(encoder, dataset.as_tensor(), batch_size).numpy()
    if out is not None:
        np.save(out, features)
        if dataset.has_labels:
            np.save(Path(out).with_suffix(".labels.npy"), dataset.labels().numpy())
    return features


__all__ = [
    "Run",
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
    dataset = load_images(
        cfg.data.name, "train", skip_bad=cfg.data.skip_bad, image_size=cfg.data.image_size
    )
    height = dataset.image_size[0]
    info = DataInfo(dataset.channels, height)
    encoder = build_encoder(
        cfg.encoder,
        in_channels=encoder_channels(cfg.method, info),
        image_size=height,
        **cfg.encoder_args,
    )
    method = build_method(cfg.method, cfg.method_args, encoder, info)
    fabric = Fabric(accelerator="cpu", devices=1)
    extra = checkpoint.load(fabric, path, {"method": method})
    return export_encoder(
        method.encoder,
        out or run_dir,
        method=cfg.method,
        data=cfg.data.name,
        step=int(extra.get("step", -1)),
        image_size=height,
        channels=dataset.channels,
    )
