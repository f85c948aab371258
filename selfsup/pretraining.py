"""Pretraining orchestration: data, encoder and method from a config, the engine's loop, the
export, and the evaluation run at the end.

Everything that differs between kinds of data is asked of the data's modality
(``selfsup.modalities``); nothing here names one.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from selfsup.config import RunConfig, dump_yaml, make_config, to_dict
from selfsup.continual import (
    START,
    continual_config,
    copy_parent_inputs,
    load_parent_state,
    with_replay,
)
from selfsup.data.info import DataInfo
from selfsup.data.subset import keep_classes
from selfsup.encoders import build_encoder, encoder_modality
from selfsup.engine.checkpoint import latest_checkpoint
from selfsup.engine.progress import console
from selfsup.engine.sharding import full_state_dict
from selfsup.errors import SelfsupError
from selfsup.export import export_encoder, load_encoder
from selfsup.methods import build_method, method_spec
from selfsup.modalities import get_modality, modality_of_data
from selfsup.recipe import fit_to_data, say_choices

if TYPE_CHECKING:
    from selfsup.engine import TrainResult

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
    ``resume`` takes a run folder or a checkpoint file and continues it exactly; given with
    other data than the run's, it starts a continual run from it (``selfsup.continual``).
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
        continued = continual_config(run_dir, resume_from, config, overrides, sections)
        if continued is not None:  # new data: a new run that starts from this one
            run_dir, resume_from = _fresh_run_dir(continued), None
            copy_parent_inputs(continued, run_dir)
        cfg = continued or make_config(config, overrides, **sections)
    else:
        cfg = make_config(config, overrides, **sections)
        run_dir = _fresh_run_dir(cfg)
    # before the workers start, so that all of them read one tokenizer file
    modality_of_data(cfg.data.name).prepare_run(cfg.data, run_dir)
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
    if evaluate and has_labels(cfg.eval.data or cfg.data.name, cfg, run_dir):
        from selfsup.evaluate.run import evaluate_run

        run.eval_rows = evaluate_run(run_dir, cfg=cfg)
        if cfg.continual.parent is not None:
            from selfsup.evaluate.continual import evaluate_continual

            evaluate_continual(run_dir, cfg)
    return run


def has_labels(spec: str, cfg: RunConfig, run_dir: Path) -> bool:
    """Whether the test split of ``spec`` carries labels to evaluate on."""
    modality = modality_of_data(spec)
    options = modality.run_options(cfg.data) if modality_of_data(cfg.data.name) is modality else {}
    return bool(modality.load(spec, "test", folder=run_dir, **options).has_labels)


def _fresh_run_dir(cfg: RunConfig) -> Path:
    """The folder of a new run, which must not hold one already."""
    run_dir = _new_run_dir(cfg)
    if latest_checkpoint(run_dir) is not None and not os.environ.get(RUN_DIR_ENV):
        raise SelfsupError(
            f"{run_dir} already holds a run: pass --resume {run_dir} to continue it, or choose another --out"
        )
    return run_dir


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
    dataset, info = training_data(cfg, run_dir, fabric.world_size)
    cfg, choices = fit_to_data(cfg, info)  # what config.yaml records, below
    if fabric.is_global_zero:
        say_choices(choices)
    if getattr(dataset, "skipped", None) and fabric.is_global_zero:
        console.print(
            f"[yellow]skipped {len(dataset.skipped)} unreadable samples[/] (first: {dataset.skipped[0]})"
        )
    fabric.seed_everything(cfg.train.seed, verbose=False)  # encoder and head weights follow
    if encoder is None:
        encoder = build_run_encoder(cfg, info)
    # FSDP turns the parameters into shards: export from a copy made before
    template = copy.deepcopy(encoder) if cfg.train.strategy == "fsdp" else None
    method = build_method(cfg.method, cfg.method_args, encoder, info)
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml({**to_dict(cfg), "out": None}))
    if cfg.continual.parent is not None and resume_from is None:
        parent_step = load_parent_state(fabric, method, cfg)
        if fabric.is_global_zero:  # the encoder before this task, for the forgetting
            export_run_encoder(method.encoder, run_dir / START, cfg, info, step=parent_step)
    from selfsup.engine import train  # Lightning Fabric loads here, not on `import selfsup`

    result = train(fabric, cfg, method, dataset, run_dir, resume_from=resume_from)
    trained = method.encoder
    if template is not None:
        whole = full_state_dict(method.encoder)  # every process takes part in the gather
        template.load_state_dict(whole)
        trained = template
    if fabric.is_global_zero:
        export_run_encoder(trained, run_dir, cfg, info, step=result.steps)
    return result


def training_data(cfg: RunConfig, run_dir: Path, world: int) -> tuple[Any, DataInfo]:
    """The training split of ``cfg.data`` and what the method must know of it (a text run
    reads the tokenizer that ``pretrain`` trained, or found, in the run folder)."""
    modality = modality_of_data(cfg.data.name)
    dataset = modality.load(
        cfg.data.name, "train", folder=run_dir, **modality.run_options(cfg.data)
    )
    dataset = with_replay(
        keep_classes(dataset, cfg.data.classes, cfg.data.name), cfg, run_dir, world
    )
    info = DataInfo(
        modality=modality.name,
        steps_per_epoch=len(dataset) // (cfg.train.batch_size * world),  # as the engine's sampler
        **modality.data_info(dataset, cfg, run_dir),
    )
    return dataset, info


def build_run_encoder(cfg: RunConfig, info: DataInfo) -> nn.Module:
    """The registered encoder ``cfg.encoder`` built for the data, with the inputs the data's
    modality gives and any the method asks for instead (colorization encodes 1 channel)."""
    assert cfg.encoder is not None  # make_config fills it in
    reads = encoder_modality(cfg.encoder)
    if reads != info.modality:
        default = get_modality(info.modality).default_encoder
        raise SelfsupError(
            f"encoder {cfg.encoder!r} reads {reads} but {cfg.data.name!r} is {info.modality} "
            f"data: pass --encoder {default} (see `selfsup list`)"
        )
    inputs = get_modality(info.modality).encoder_inputs(info)
    asks = method_spec(cfg.method).encoder_inputs
    if asks is not None:
        inputs.update(asks(info))
    return build_encoder(cfg.encoder, **inputs, **cfg.encoder_args)


def export_run_encoder(
    encoder: nn.Module, folder: Path, cfg: RunConfig, info: DataInfo, step: int
) -> Path:
    """Export ``encoder`` with what feeding it takes (the modality's fields and files, such
    as the tokenizer)."""
    fields = get_modality(info.modality).export(info, Path(folder))
    return export_encoder(
        encoder, folder, method=cfg.method, data=cfg.data.name, step=step, **fields
    )


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
    _, info = training_data(cfg, run_dir, world=1)
    method = build_method(cfg.method, cfg.method_args, build_run_encoder(cfg, info), info)
    fabric = Fabric(accelerator="cpu", devices=1)
    extra = checkpoint.load(fabric, path, {"method": method})
    step = int(extra.get("step", -1))
    return export_run_encoder(method.encoder, Path(out or run_dir), cfg, info, step=step)
