"""Continual pretraining on a stream of data: ``selfsup pretrain --resume RUN --data NEW``.

When the data a resume names differs from RUN's (another source, or other ``data.classes``),
the resume is not the exact continuation of an interrupted run but a new task of a stream:

- a new run folder (``--out``, else a fresh ``runs/<method>-<data>-<time>``); RUN is never
  written to. Its ``config.yaml`` records the lineage in ``continual``: the parent run, the
  checkpoint loaded, and the ``data`` sections of every earlier task (``stream``);
- it starts from the whole method state of RUN's latest checkpoint (the encoder, and the
  heads, predictor, EMA teacher, queues and BatchNorm statistics that belong to the recipe),
  so the objective continues where it stopped rather than meeting new random heads;
- with a fresh optimizer and a fresh schedule (warm-up, cosine over this run's own
  ``--max-steps``), step 0: AdamW's moments estimate the old data's gradients, and the
  warm-up keeps the first updates on the shifted data small, as each task of the continual
  SSL literature starts (CaSSLe, Fini et al. 2022; LUMP, Madaan et al. 2022);
- each batch mixes new samples with replayed ones from a reservoir of the earlier tasks
  (``selfsup.data.replay``; ``continual.replay`` samples, 0 = none, ``replay_ratio`` of the
  batch);
- the encoder it started from is exported to ``RUN_NEW/start/``, and its evaluation probes
  that encoder and the new one on every task's labelled data: accuracy on the old and the
  new data, and forgetting (``selfsup.evaluate.continual``).

The method, encoder and modality stay RUN's (their weights are what is continued). An
interrupted continual run resumes exactly with ``--resume RUN_NEW``, like any run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from selfsup.config import DataConfig, RunConfig, from_dict, make_config, to_dict
from selfsup.data.replay import ReplayMix, replay_share, reservoir_sample
from selfsup.data.subset import keep_classes
from selfsup.errors import SelfsupError
from selfsup.export import SPEC, read_spec
from selfsup.modalities import modality_of_data

START = "start"
"""The sub-folder of a continual run holding the encoder it started from."""


def continual_config(
    parent_dir: Path,
    checkpoint: Path,
    config: Any,
    overrides: list[str] | tuple[str, ...],
    sections: dict[str, Any],
) -> RunConfig | None:
    """The config of a continual run that continues ``parent_dir`` from ``checkpoint`` on the
    data the arguments name, or None when they name the parent's own data (an exact resume)."""
    if not (parent_dir / "config.yaml").is_file():
        return None  # a bare checkpoint resumes with the config given beside it
    parent = make_config(parent_dir / "config.yaml")
    given = _given_data(sections, overrides)
    new_name = given.get("name", parent.data.name)
    was, now = modality_of_data(parent.data.name), modality_of_data(new_name)
    if now is not was:
        raise SelfsupError(
            f"{parent_dir} learned from {was.name} data ({parent.data.name!r}) but "
            f"{new_name!r} is {now.name} data: a continual run goes on with data of the same "
            "modality"
        )
    cfg = make_config(config, overrides, **sections)
    if new_name != parent.data.name and "classes" not in given:
        cfg.data.classes = None  # a new source starts with all its classes
    if (cfg.data.name, cfg.data.classes) == (parent.data.name, parent.data.classes):
        return None
    for key in ("method", "encoder", "encoder_args"):
        if getattr(cfg, key) != getattr(parent, key):
            raise SelfsupError(
                f"a continual run keeps {parent_dir}'s {key} ({getattr(parent, key)!r}), whose "
                f"weights it continues: drop --{key.replace('_', '-')}"
            )
    if not (parent_dir / SPEC).is_file():
        raise SelfsupError(
            f"{parent_dir} has not finished (no {SPEC}): finish it with `selfsup pretrain "
            f"--resume {parent_dir}` before continuing it on new data"
        )
    if cfg.out is not None and Path(cfg.out).resolve() == parent_dir.resolve():
        raise SelfsupError(
            f"a continual run writes a new run folder, not into {parent_dir}: choose another --out"
        )
    cfg.continual.parent = str(parent_dir)
    cfg.continual.parent_checkpoint = str(checkpoint)
    cfg.continual.stream = [*parent.continual.stream, _data_section(parent.data)]
    return cfg


def _given_data(sections: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict:
    """The data fields the arguments set (``data=`` and ``--set data.KEY=...``), by name."""
    data = sections.get("data")
    given = dict(data) if isinstance(data, dict) else ({"name": data} if data else {})
    for assignment in overrides:
        key, _, value = assignment.partition("=")
        if key.strip().startswith("data."):
            given[key.strip()[len("data.") :]] = value
    return given


def _data_section(data: DataConfig) -> dict[str, Any]:
    """What names a task's samples: the source and its class subset (the decoding options
    are the run's, which a continual run inherits)."""
    return {"name": data.name, "classes": to_dict(data.classes)}


def copy_parent_inputs(cfg: RunConfig, run_dir: Path) -> None:
    """Copy the files that feed the parent's encoder (a tokenizer) into the new run folder, so
    the new data is read as the encoder was trained to read it."""
    parent = Path(str(cfg.continual.parent))
    named = read_spec(parent).get("input", {})
    for file_name in named.values() if isinstance(named, dict) else ():
        source = parent / str(file_name)
        if source.is_file() and not (run_dir / source.name).exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, run_dir / source.name)


def load_parent_state(fabric: Any, method: nn.Module, cfg: RunConfig) -> int:
    """Load the parent checkpoint's method state (not its optimizer: see the module
    docstring) into ``method``; returns the parent's step."""
    from selfsup.engine import checkpoint

    extra = checkpoint.load(fabric, Path(str(cfg.continual.parent_checkpoint)), {"method": method})
    return int(extra.get("step", -1))


def task_split(section: dict[str, Any], cfg: RunConfig, folder: Path, split: str) -> Any:
    """The ``split`` of one task of the stream, decoded with the run's options."""
    data = from_dict(DataConfig, {**to_dict(cfg.data), **section}, prefix="continual.stream.")
    modality = modality_of_data(data.name)
    dataset = modality.load(data.name, split, folder=folder, **modality.run_options(data))  # type: ignore[arg-type]
    return keep_classes(dataset, data.classes, data.name)


def with_replay(new: Any, cfg: RunConfig, folder: Path, world: int) -> Any:
    """The new task's training data with the replay buffer of the earlier tasks mixed in, or
    ``new`` alone when the run continues nothing or replays nothing."""
    c = cfg.continual
    replay = replay_share(c.replay_ratio, cfg.train.batch_size)
    if c.parent is None or not c.stream or c.replay == 0 or replay == 0:
        return new
    sources = [task_split(section, cfg, folder, "train") for section in c.stream]
    sizes = np.array([len(s) for s in sources])
    positions = reservoir_sample(int(sizes.sum()), c.replay, cfg.train.seed)  # (M,)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    task = np.searchsorted(np.cumsum(sizes), positions, side="right")  # (M,)
    buffer = np.stack([task, positions - starts[task]], axis=1)  # (M, 2): task, index
    return ReplayMix(new, sources, buffer, replay, cfg.train.batch_size, world)
