"""One training loop for every method, on Lightning Fabric.

Fabric owns devices, the distributed strategy, precision and checkpoint I/O; this file owns
the order of things: schedule, step, NaN guard, logging, collapse monitor, checkpoints,
stopping rules and exact resume.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor, nn

from selfsup import distributed
from selfsup.config import RunConfig, parse_duration
from selfsup.engine import checkpoint
from selfsup.engine.optim import RECOMMENDED, cosine_lr, make_optimizer
from selfsup.engine.precision import resolve_accelerator, resolve_precision
from selfsup.engine.progress import TrainProgress, console
from selfsup.engine.sampler import ResumableSampler
from selfsup.errors import SelfsupError
from selfsup.evaluate.collapse import effective_rank, embedding_std

log = logging.getLogger("selfsup")
warnings.filterwarnings("ignore", message="Experiment logs directory")

CALIBRATION_STEPS = 10
"""A run limited only by time measures its speed over this many steps (after 2 warm-up
steps), then fixes its horizon for the cosine schedule."""
WARM_STEPS = 2


class TrainingDiverged(SelfsupError):
    """The loss became NaN or Inf and the run was stopped."""


@dataclass
class TrainResult:
    run_dir: Path
    start_step: int
    steps: int
    stopped_by: str
    losses: dict[int, float] = field(default_factory=dict)
    """Loss of every step this process ran (mean over processes), keyed by step number."""
    seconds: float = 0.0
    precision: str = "32-true"


def peak_lr(cfg: RunConfig, world: int) -> tuple[float, float]:
    """The run's peak learning rate and weight decay: the config's, else the optimizer's
    recommendation scaled linearly with the global batch size (lr = base × batch / 256)."""
    base_lr, base_wd = RECOMMENDED[cfg.train.optimizer]
    batch = cfg.train.batch_size * world
    lr = cfg.train.lr if cfg.train.lr is not None else base_lr * batch / 256
    wd = cfg.train.weight_decay if cfg.train.weight_decay is not None else base_wd
    return lr, wd


def _planned_steps(cfg: RunConfig, steps_per_epoch: int) -> int | None:
    limits = []
    if cfg.train.max_steps is not None:
        limits.append(cfg.train.max_steps)
    if cfg.train.max_epochs is not None:
        limits.append(cfg.train.max_epochs * steps_per_epoch)
    return min(limits) if limits else None


def _batches(
    dataset: Any, sampler: ResumableSampler, batch_size: int, num_workers: int
) -> Iterator[dict[str, Tensor]]:
    """Batches of one epoch in the sampler's order. In-memory sources are sliced as whole
    tensors; file sources go through a DataLoader whose workers decode."""
    if getattr(dataset, "in_memory", False):
        images = dataset.as_tensor()
        indices = torch.tensor(list(iter(sampler)), dtype=torch.long)
        for start in range(0, len(indices) - batch_size + 1, batch_size):
            yield {"image": images[indices[start : start + batch_size]]}
        return
    from selfsup.data import make_loader

    yield from make_loader(
        dataset, batch_size, sampler=sampler, num_workers=num_workers, drop_last=True
    )


def _replay_metrics(fabric: Fabric, run_dir: Path, upto_step: int) -> None:
    """On resume, carry the logged rows up to the checkpoint into the new log (Fabric's CSV
    writer starts a fresh file), so curves are whole and have no doubled steps."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return
    with path.open() as f:
        rows = [
            r for r in csv.DictReader(f) if r.get("step") and int(float(r["step"])) <= upto_step
        ]
    csv_logger = next((lg for lg in fabric.loggers if isinstance(lg, CSVLogger)), None)
    if csv_logger is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writer = csv_logger.experiment  # opening it clears the old file
    for row in rows:
        values = {k: float(v) for k, v in row.items() if k != "step" and v not in ("", None)}
        writer.log_metrics(values, int(float(row["step"])))
    writer.save()


def make_fabric(cfg: RunConfig, run_dir: Path | None) -> Fabric:
    accelerator = resolve_accelerator(cfg.train.accelerator)
    precision = resolve_precision(cfg.train.precision, accelerator)
    loggers = []
    if run_dir is not None:
        loggers = [
            CSVLogger(str(run_dir), name="", version="", flush_logs_every_n_steps=1),
            TensorBoardLogger(str(run_dir), name="tensorboard", version=""),
        ]
    strategy = cfg.train.strategy
    if strategy == "auto" and cfg.train.devices * cfg.train.num_nodes > 1:
        strategy = "ddp"
    return Fabric(
        accelerator=accelerator,
        devices=cfg.train.devices,
        num_nodes=cfg.train.num_nodes,
        strategy=strategy,
        precision=precision,  # type: ignore[arg-type]
        loggers=loggers,
    )


def train(
    fabric: Fabric,
    cfg: RunConfig,
    method: nn.Module,
    dataset: Any,
    run_dir: Path,
    *,
    resume_from: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Pretrain ``method`` on ``dataset`` under ``fabric``; see the module docstring.

    ``on_step(step, loss)`` is called after every optimizer step (tests use it to interrupt).
    """
    t = cfg.train
    fabric.seed_everything(t.seed, verbose=False)
    world = fabric.world_size
    if fabric.device.type == "cpu" and fabric.world_size > 1:
        # processes on one CPU share its cores; oversubscribed OpenMP threads spin and crawl
        local = max(1, fabric.world_size // max(1, cfg.train.num_nodes))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    sampler = ResumableSampler(
        len(dataset), t.batch_size, seed=t.seed, rank=fabric.global_rank, world=world
    )
    steps_per_epoch = sampler.batches_per_epoch
    if steps_per_epoch == 0:
        raise SelfsupError(
            f"the data set has {len(dataset)} samples, fewer than one batch of {t.batch_size} per process: "
            "lower --batch-size"
        )
    max_seconds = parse_duration(t.max_time) if t.max_time else None
    horizon = _planned_steps(cfg, steps_per_epoch)
    if horizon is None and max_seconds is None:
        raise SelfsupError("the run has no end: give --max-steps, --max-epochs or --max-time")

    lr_peak, weight_decay = peak_lr(cfg, world)
    if t.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(t.optimizer, method, lr_peak, weight_decay)
    model, optimizer = fabric.setup(method, optimizer)
    model.mark_forward_method("training_step")

    step, elapsed_before = 0, 0.0
    if resume_from is not None:
        state: dict[str, Any] = {"method": model, "optimizer": optimizer}
        extra = checkpoint.load(fabric, resume_from, state)
        step = int(extra["step"])
        elapsed_before = float(extra.get("elapsed", 0.0))
        saved_horizon = int(extra.get("horizon", -1))
        if saved_horizon > 0 and _planned_steps(cfg, steps_per_epoch) is None:
            horizon = saved_horizon
        torch.set_rng_state(extra["rng_cpu"])
        if torch.cuda.is_available() and "rng_cuda" in extra:
            torch.cuda.set_rng_state(extra["rng_cuda"], fabric.device)
        if fabric.is_global_zero:
            _replay_metrics(fabric, run_dir, step)
            console.print(f"[green]resumed[/] from {resume_from} at step {step}")

    def state_at(step_done: int) -> dict[str, Any]:
        s: dict[str, Any] = {
            "method": model,
            "optimizer": optimizer,
            "step": step_done,
            "horizon": horizon or -1,
            "elapsed": elapsed_before + time.perf_counter() - started,
            "rng_cpu": torch.get_rng_state(),
        }
        if fabric.device.type == "cuda":
            s["rng_cuda"] = torch.cuda.get_rng_state(fabric.device)
        return s

    def warmup_steps() -> int:
        if horizon is None:
            return 100  # provisional, until a time-limited run has measured its speed
        return max(1, round(t.warmup_fraction * horizon))

    precision = resolve_precision(t.precision, resolve_accelerator(t.accelerator))
    result = TrainResult(run_dir, step, step, "max_steps", precision=precision)
    started = time.perf_counter()
    calib_start: float | None = None
    model.train()
    last_log = time.perf_counter()
    samples_since_log = 0
    start_step = step
    stopped_by = "max_steps" if _planned_steps(cfg, steps_per_epoch) is not None else "max_time"
    with TrainProgress(horizon or 0, step, enabled=t.progress and fabric.is_global_zero) as bar:
        while True:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            sampler.set_position(epoch, in_epoch)
            for batch in _batches(dataset, sampler, t.batch_size, cfg.data.num_workers):
                if horizon is not None and step >= horizon:
                    break
                batch = fabric.to_device(batch)
                lr = cosine_lr(step, horizon or 10**9, lr_peak, warmup_steps(), t.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr

                out = model.training_step(batch)
                loss = out["loss"]
                loss_mean = distributed.all_reduce_mean(loss.detach().float())
                if not torch.isfinite(loss_mean):
                    if t.on_nan == "skip":
                        optimizer.zero_grad(set_to_none=True)
                        log.warning(
                            "loss is %s at step %d: step skipped", loss_mean.item(), step + 1
                        )
                        step += 1
                        continue
                    last = checkpoint.latest_checkpoint(run_dir)
                    kept = (
                        f"the last good checkpoint is {last}"
                        if last
                        else "no checkpoint was written before it"
                    )
                    raise TrainingDiverged(
                        f"loss became {loss_mean.item()} at step {step + 1}; {kept}. Lower train.lr, "
                        "set train.grad_clip, or pass --set train.on_nan=skip"
                    )
                fabric.backward(loss)
                if t.grad_clip is not None:
                    fabric.clip_gradients(
                        model, optimizer, max_norm=t.grad_clip, error_if_nonfinite=False
                    )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                progress = step / horizon if horizon else 0.0
                model.on_step_end(min(1.0, progress))
                value = loss_mean.item()
                result.losses[step] = value
                samples_since_log += t.batch_size * world

                # A time-limited run fixes its horizon once it knows its speed.
                if horizon is None and max_seconds is not None:
                    if step == WARM_STEPS:
                        calib_start = time.perf_counter()
                    elif step == WARM_STEPS + CALIBRATION_STEPS and calib_start is not None:
                        per_step = (time.perf_counter() - calib_start) / CALIBRATION_STEPS
                        left = max_seconds - elapsed_before - (time.perf_counter() - started)
                        horizon = step + max(1, int(left / per_step))
                        horizon = int(distributed_min(fabric, horizon))
                        bar.set_total(horizon)

                now = time.perf_counter()
                if step % t.log_every == 0 or step == horizon:
                    sps = samples_since_log / max(1e-9, now - last_log)
                    fabric.log_dict(
                        {"loss": value, "lr": lr, "samples_per_s": sps, "epoch": epoch}, step=step
                    )
                    bar.update(step, value, lr, sps)
                    last_log, samples_since_log = now, 0
                if "features" in out and (step % t.collapse_every == 0 or step == 1):
                    _monitor_collapse(fabric, out["features"], step, t.collapse_rank_min)
                for key, metric in out.items():
                    if key not in ("loss", "features") and step % t.log_every == 0:
                        fabric.log_dict({key: float(metric)}, step=step)
                if on_step is not None:
                    on_step(step, value)

                out_of_time = _any_process(
                    fabric,
                    max_seconds is not None and elapsed_before + now - started >= max_seconds,
                )
                if out_of_time:
                    stopped_by = "max_time"
                if step % t.checkpoint_every == 0 or out_of_time or step == horizon:
                    checkpoint.save(fabric, run_dir, step, state_at(step))
                if out_of_time:
                    break
            else:
                continue  # epoch finished: next epoch
            break
    if step > start_step and checkpoint.latest_checkpoint(run_dir) != checkpoint.checkpoint_path(
        run_dir, step
    ):
        checkpoint.save(fabric, run_dir, step, state_at(step))
    for logger in fabric.loggers:
        logger.finalize("success")
    result.steps = step
    result.stopped_by = stopped_by
    result.seconds = elapsed_before + time.perf_counter() - started
    return result


def _any_process(fabric: Fabric, flag: bool) -> bool:
    """True if ``flag`` is true in any process: clocks differ, and all must stop at one step."""
    if fabric.world_size == 1:
        return flag
    tensor = torch.tensor(float(flag), device=fabric.device)
    return bool(fabric.all_reduce(tensor, reduce_op="sum").item() > 0)


def distributed_min(fabric: Fabric, value: int) -> int:
    """The smallest ``value`` over processes, so every process agrees on a time-based horizon."""
    if fabric.world_size == 1:
        return value
    tensor = torch.tensor(float(value), device=fabric.device)
    gathered = fabric.all_gather(tensor)
    return int(gathered.min().item())


def _monitor_collapse(fabric: Fabric, features: Tensor, step: int, rank_min: float) -> None:
    """Log the effective rank and embedding std of this batch's features; warn on collapse."""
    z = features.detach().float()
    rank = effective_rank(z)
    std = embedding_std(z)
    fabric.log_dict({"rankme": rank, "emb_std": std}, step=step)
    if fabric.is_global_zero and (rank < rank_min or not math.isfinite(rank)):
        console.print(
            f"[bold red]collapse warning[/] at step {step}: effective rank {rank:.2f} "
            f"(of {z.shape[1]}), embedding std {std:.4f}; the encoder maps images to nearly one point"
        )
