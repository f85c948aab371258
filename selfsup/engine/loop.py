"""One training loop for every method, on Lightning Fabric.

Fabric owns devices, the distributed strategy, precision and checkpoint I/O; this file owns
the order of things: schedule, step, NaN guard, logging, collapse monitor, checkpoints,
stopping rules and exact resume.

Fine-tuning runs through the same loop (``selfsup.evaluate.finetune``): its module offers
``param_groups`` with per-group ``lr_scale`` (layer-wise lr decay), and it trains without a
run folder (``run_dir=None``: no checkpoints, no logs).
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor, nn

from selfsup import distributed
from selfsup.config import RunConfig, parse_duration
from selfsup.engine import checkpoint
from selfsup.engine.accumulate import accumulated_step, cached_step, supports_gradient_cache
from selfsup.engine.optim import (
    CALIBRATION_STEPS,
    RECOMMENDED,
    REFIT_AT,
    WARM_STEPS,
    cosine_lr,
    linear_lr,
    make_optimizer,
)
from selfsup.engine.precision import resolve_accelerator, resolve_precision
from selfsup.engine.progress import TrainProgress, console
from selfsup.engine.sampler import ResumableSampler
from selfsup.engine.sharding import CACHE_REFUSED, fsdp_strategy
from selfsup.errors import SelfsupError
from selfsup.evaluate.collapse import effective_rank, embedding_std

if TYPE_CHECKING:
    from selfsup.data.loader import Collate

log = logging.getLogger("selfsup")
warnings.filterwarnings("ignore", message="Experiment logs directory")


class TrainingDiverged(SelfsupError):
    """The loss became NaN or Inf and the run was stopped; ``step`` and ``loss`` say where."""

    def __init__(self, message: str, *, step: int = 0, loss: float = math.nan) -> None:
        super().__init__(message)
        self.step = step
        self.loss = loss


class CollapseDetected(SelfsupError):
    """The collapse monitor saw collapsed embeddings and ``train.collapse_stop`` is set."""


@dataclass
class TrainResult:
    run_dir: Path | None
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
    dataset: Any,
    sampler: ResumableSampler,
    batch_size: int,
    num_workers: int,
    collate: Collate | None = None,
) -> Iterator[dict[str, Tensor]]:
    """Batches of one epoch in the sampler's order, labels included. In-memory sources are
    sliced as whole tensors; file sources go through a DataLoader whose workers decode."""
    if getattr(dataset, "in_memory", False) and collate is None:
        inputs = dataset.as_tensor()  # uint8 (N, C, H, W) images or int64 (N, L) tokens
        labels = dataset.labels() if callable(getattr(dataset, "labels", None)) else None  # (N,)
        key = dataset.input_key  # the batch key of the data's modality
        indices = torch.tensor(list(iter(sampler)), dtype=torch.long)
        for start in range(0, len(indices) - batch_size + 1, batch_size):
            rows = indices[start : start + batch_size]  # (B,)
            yield (
                {key: inputs[rows]}
                if labels is None
                else {key: inputs[rows], "label": labels[rows]}
            )
        return
    from selfsup.data import make_loader

    yield from make_loader(
        dataset,
        batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        collate=collate,
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


def cpu_threads_per_process() -> int:
    """The intra-op threads of each process of a multi-process CPU run: the cores divided among
    the processes that really share this machine, as counted over the process group.

    Processes on one CPU share its cores, and oversubscribed OpenMP threads spin and crawl. The
    count also decides the numbers: kernels split their reductions by thread (channels-last
    BatchNorm sums its statistics per thread), and under bf16 autocast a last-bit difference of
    those sums flips the rounding of outputs to bf16. So two launches of the same processes on
    one machine (two torchrun "nodes", or one node with two processes) use the same count and
    train the same losses to the bit (``tests/test_multinode.py``).
    """
    return max(1, distributed.usable_cores() // distributed.processes_on_this_machine())


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
    processes = cfg.train.devices * cfg.train.num_nodes
    if strategy == "auto" and processes > 1:
        strategy = "ddp"
    try:
        return Fabric(
            accelerator=accelerator,
            devices=cfg.train.devices,
            num_nodes=cfg.train.num_nodes,
            strategy=fsdp_strategy(processes) if strategy == "fsdp" else strategy,
            precision=precision,  # type: ignore[arg-type]
            loggers=loggers,
        )
    except (ValueError, RuntimeError) as error:  # Fabric rejects what this machine cannot do
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise SelfsupError(
            f"cannot train with accelerator={cfg.train.accelerator}, strategy={strategy}, "
            f"devices={cfg.train.devices}, precision={precision}: {reason}"
        ) from None


def train(
    fabric: Fabric,
    cfg: RunConfig,
    method: nn.Module,
    dataset: Any,
    run_dir: Path | None,
    *,
    resume_from: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    description: str = "pretrain",
    collate: Collate | None = None,
    start_step: int = 0,
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``method`` on ``dataset`` under ``fabric``; see the module docstring.

    ``run_dir`` receives the checkpoints (and, through the fabric's loggers, the metrics);
    None trains without writing anything (fine-tuning), which also rules out ``resume_from``.
    ``on_step(step, loss)`` is called after every optimizer step (tests use it to interrupt).
    ``description`` names the run on the progress bar; ``collate`` batches the samples when
    they are read through a DataLoader (None stacks them: inputs of one shape).

    ``start_step`` and ``stop_at`` run one stretch of a longer schedule with the weights the
    module holds (a federated client's round: steps r·L to (r+1)·L of the run's cosine
    schedule, with a fresh optimizer, as FedAvg's clients have); the data order, warm-up and
    learning rate are those of that stretch of the whole run.
    """
    if run_dir is None and resume_from is not None:
        raise SelfsupError("a run without a run folder writes no checkpoints to resume from")
    t = cfg.train
    fabric.seed_everything(t.seed, verbose=False)
    world = fabric.world_size
    if fabric.device.type == "cpu" and fabric.world_size > 1:
        torch.set_num_threads(cpu_threads_per_process())
    sampler = ResumableSampler(
        len(dataset),
        t.batch_size,
        seed=t.seed,
        rank=fabric.global_rank,
        world=world,
        order=getattr(dataset, "epoch_order", None),  # sharded data: a windowed shuffle
        lengths=getattr(dataset, "sample_lengths", None),  # speech: batches of like lengths
    )
    steps_per_epoch = sampler.batches_per_epoch
    if steps_per_epoch == 0:
        raise SelfsupError(
            f"the data set has {len(dataset)} samples, fewer than one batch of {t.batch_size} per process: "
            "lower --batch-size"
        )
    max_seconds = parse_duration(t.max_time) if t.max_time is not None else None
    planned = _planned_steps(cfg, steps_per_epoch)
    horizon = planned
    fitted = max_seconds is None  # a time-limited run fits its horizon once it knows its speed
    if horizon is None and max_seconds is None:
        raise SelfsupError("the run has no end: give --max-steps, --max-epochs or --max-time")

    lr_peak, weight_decay = peak_lr(cfg, world)
    if t.grad_checkpointing:
        _enable_grad_checkpointing(method.encoder, cfg.encoder)
    if t.sync_batchnorm and world > 1:  # the config check refused it on CPUs
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if t.channels_last and t.strategy != "fsdp":  # FSDP shards contiguous parameters only
        method = method.to(memory_format=torch.channels_last)
    if t.strategy == "fsdp":  # sharding replaces the parameters: the optimizer comes after
        model = fabric.setup_module(method)
        optimizer = fabric.setup_optimizers(
            make_optimizer(t.optimizer, method, lr_peak, weight_decay, t.momentum)
        )
    else:
        optimizer = make_optimizer(t.optimizer, method, lr_peak, weight_decay, t.momentum)
        model, optimizer = fabric.setup(method, optimizer)
    model.mark_forward_method("training_step")
    step_fn, already_backward = _step_function(
        method, t.batch_size, t.micro_batch_size, t.gradient_cache
    )
    uses_cache = isinstance(step_fn, functools.partial) and step_fn.func is cached_step
    if uses_cache and t.strategy == "fsdp":
        raise SelfsupError(CACHE_REFUSED)
    if supports_gradient_cache(method):
        model.mark_forward_method("embed")

    step, elapsed_before = start_step, 0.0
    if resume_from is not None:
        state: dict[str, Any] = {"method": model, "optimizer": optimizer}
        extra = checkpoint.load(fabric, resume_from, state)
        step = int(extra["step"])
        elapsed_before = float(extra.get("elapsed", 0.0))
        saved_horizon = int(extra.get("horizon", -1))
        if saved_horizon > 0 and max_seconds is not None:
            horizon = saved_horizon if planned is None else min(planned, saved_horizon)
            fitted = True
        torch.set_rng_state(extra["rng_cpu"])
        if torch.cuda.is_available() and "rng_cuda" in extra:
            torch.cuda.set_rng_state(extra["rng_cuda"], fabric.device)
        if fabric.is_global_zero and run_dir is not None:
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
    refits = 0
    model.train()
    last_log = time.perf_counter()
    samples_since_log = 0
    start_step = step
    stopped_by = "max_steps" if planned is not None else "max_time"
    progress_on = t.progress and fabric.is_global_zero
    with TrainProgress(horizon or 0, step, enabled=progress_on, description=description) as bar:
        while True:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            sampler.set_position(epoch, in_epoch)
            for batch in _batches(dataset, sampler, t.batch_size, cfg.data.num_workers, collate):
                if (horizon is not None and step >= horizon) or step == stop_at:
                    break
                batch = fabric.to_device(batch)
                schedule = linear_lr if t.schedule == "linear" else cosine_lr
                lr = schedule(step, horizon or 10**9, lr_peak, warmup_steps(), t.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # layer-wise lr decay

                out = step_fn(fabric, model, batch)
                loss = out["loss"]
                loss_mean = _process_mean(fabric, loss.detach().float())
                if not torch.isfinite(loss_mean):
                    if t.on_nan == "skip":
                        optimizer.zero_grad(set_to_none=True)
                        log.warning(
                            "loss is %s at step %d: step skipped", loss_mean.item(), step + 1
                        )
                        step += 1
                        continue
                    last = checkpoint.latest_checkpoint(run_dir) if run_dir else None
                    kept = (
                        f"the last good checkpoint is {last}"
                        if last
                        else "no checkpoint was written before it"
                    )
                    raise TrainingDiverged(
                        f"loss became {loss_mean.item()} at step {step + 1}; {kept}. Lower train.lr, "
                        "set train.grad_clip, or pass --set train.on_nan=skip",
                        step=step + 1,
                        loss=loss_mean.item(),
                    )
                if not already_backward:
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

                # A time-limited run fixes its horizon once it knows its speed, and fits it
                # again at the REFIT_AT shares of its budget; a step or epoch limit caps it.
                if max_seconds is not None and calib_start is not None and refits < len(REFIT_AT):
                    spent = elapsed_before + time.perf_counter() - started
                    if fitted and _any_process(fabric, spent >= REFIT_AT[refits] * max_seconds):
                        per_step = (time.perf_counter() - calib_start) / (step - WARM_STEPS)
                        horizon = _fit_horizon(fabric, step, per_step, max_seconds - spent, planned)
                        bar.set_total(horizon)
                        refits += 1
                if not fitted and max_seconds is not None:
                    if step == WARM_STEPS:
                        calib_start = time.perf_counter()
                    elif step == WARM_STEPS + CALIBRATION_STEPS and calib_start is not None:
                        per_step = (time.perf_counter() - calib_start) / CALIBRATION_STEPS
                        left = max_seconds - elapsed_before - (time.perf_counter() - started)
                        horizon = _fit_horizon(fabric, step, per_step, left, planned)
                        bar.set_total(horizon)
                        fitted = True

                now = time.perf_counter()
                if step % t.log_every == 0 or step == horizon:
                    sps = samples_since_log / max(1e-9, now - last_log)
                    fabric.log_dict(
                        {"loss": value, "lr": lr, "samples_per_s": sps, "epoch": epoch}, step=step
                    )
                    bar.update(step, value, lr, sps)
                    last_log, samples_since_log = now, 0
                if "features" in out and (step % t.collapse_every == 0 or step == 1):
                    alarm = _monitor_collapse(
                        fabric, out, step, t.collapse_rank_min, t.collapse_std_min
                    )
                    if t.collapse_stop and _any_process(fabric, alarm is not None):
                        raise CollapseDetected(
                            f"{alarm or f'collapse at step {step} in another process'}; the run "
                            f"was stopped (train.collapse_stop=true) and {_kept(run_dir)}. Try a "
                            "lower train.lr, the method's paper defaults (stop-gradient, predictor, "
                            "momentum, temperature), stronger augmentation, or "
                            "train.collapse_stop=false to train on"
                        )
                if step % t.log_every == 0:  # the method's own metrics, one row per step
                    extra = {
                        k: float(v)
                        for k, v in out.items()
                        if k not in ("loss", "features", "embedding")
                    }
                    if extra:
                        fabric.log_dict(extra, step=step)
                if on_step is not None:
                    on_step(step, value)

                out_of_time = _any_process(
                    fabric,
                    max_seconds is not None and elapsed_before + now - started >= max_seconds,
                )
                if out_of_time:
                    stopped_by = "max_time"
                saving = step % t.checkpoint_every == 0 or out_of_time or step in (horizon, stop_at)
                if saving and run_dir is not None:
                    checkpoint.save(fabric, run_dir, step, state_at(step))
                if out_of_time:
                    break
            else:
                continue  # epoch finished: next epoch
            break
    if (
        run_dir is not None
        and step > start_step
        and checkpoint.latest_checkpoint(run_dir) != checkpoint.checkpoint_path(run_dir, step)
    ):
        checkpoint.save(fabric, run_dir, step, state_at(step))
    if stop_at is not None and step == stop_at:
        stopped_by = "stop_at"
    elif planned is not None and step < planned:
        stopped_by = "max_time"  # the time-fitted horizon ended before the step limit
    for logger in fabric.loggers:
        logger.finalize("success")
    result.steps = step
    result.stopped_by = stopped_by
    result.seconds = elapsed_before + time.perf_counter() - started
    return result


def _fit_horizon(
    fabric: Fabric, step: int, per_step: float, seconds_left: float, cap: int | None
) -> int:
    """The last step of a time-limited run: as many more steps as fit in ``seconds_left`` at
    ``per_step`` seconds each, the same in every process (the smallest), and at most ``cap``
    (the step or epoch limit, if any)."""
    fits = int(distributed_min(fabric, step + max(1, int(seconds_left / per_step))))
    return fits if cap is None else min(cap, fits)


def _process_mean(fabric: Fabric, value: Tensor) -> Tensor:
    """The mean of ``value`` over the fabric's processes (itself in one process)."""
    if fabric.world_size == 1:
        return value
    return fabric.all_reduce(value, reduce_op="mean")  # type: ignore[return-value]


def _enable_grad_checkpointing(encoder: nn.Module, name: str) -> None:
    if not hasattr(encoder, "grad_checkpointing"):
        raise SelfsupError(
            f"encoder {name!r} has no gradient checkpointing (the ViT encoders have it); drop "
            "--grad-checkpointing, or lower --batch-size or use --micro-batch-size"
        )
    encoder.grad_checkpointing = True


def _whole_step(fabric: Fabric, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
    """``training_step`` on the whole batch, under the precision's autocast: Fabric enters it
    for a marked method only where DDP or FSDP wraps the module, not on one device."""
    with fabric.autocast():
        return model.training_step(batch)


def _step_function(
    method: nn.Module, batch_size: int, micro_batch: int | None, use_cache: bool
) -> tuple[Callable[..., dict[str, Tensor]], bool]:
    """How one step's loss is made: whole, gradient-cached or accumulated. The second value
    says whether that function already back-propagated."""
    if micro_batch is None or micro_batch >= batch_size:
        return _whole_step, False
    if use_cache and supports_gradient_cache(method):
        return functools.partial(cached_step, micro_batch=micro_batch), True
    return functools.partial(accumulated_step, micro_batch=micro_batch), True


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


def _kept(run_dir: Path | None) -> str:
    last = checkpoint.latest_checkpoint(run_dir) if run_dir is not None else None
    return f"the last checkpoint, {last}, is kept" if last else "no checkpoint was written yet"


def _monitor_collapse(
    fabric: Fabric, out: dict[str, Tensor], step: int, rank_min: float, std_ratio_min: float
) -> str | None:
    """Log effective rank and embedding std of this batch's encoder features (``rankme``,
    ``emb_std``) and, if the method returns one, of its head output ``embedding`` (the space
    the loss sees, where collapse shows first: ``head_rankme``, ``head_emb_std``).

    Collapse is declared when a rank falls below ``rank_min`` or an embedding std falls below
    ``std_ratio_min / sqrt(D)``: L2-normalised embeddings spread like an isotropic gaussian
    have std 1/sqrt(D), healthy encoders (post-ReLU features, ViT tokens, at init or
    trained) sit at 0.2-1 times that, and 0.05 times that means every embedding lies within a
    few degrees of one direction. Returns the warning (also printed loudly) or None.
    """
    alarms = []
    for key, prefix, what in (("features", "", "encoder"), ("embedding", "head_", "head output")):
        if key not in out:
            continue
        z = out[key].detach().float()
        rank, std = effective_rank(z), embedding_std(z)
        std_min = std_ratio_min / math.sqrt(z.shape[1])
        fabric.log_dict({f"{prefix}rankme": rank, f"{prefix}emb_std": std}, step=step)
        if rank < rank_min or std < std_min or not math.isfinite(rank):
            alarms.append(
                f"{what} effective rank {rank:.2f} (of {z.shape[1]}, alarm below {rank_min:g}), "
                f"embedding std {std:.4f} (alarm below {std_min:.4f})"
            )
    if not alarms:
        return None
    message = (
        f"collapse at step {step}: {'; '.join(alarms)}: the model maps its inputs to nearly "
        "one point or one direction"
    )
    if fabric.is_global_zero:
        console.print(f"[bold red]COLLAPSE WARNING[/] {message}")
        log.warning(message)
    return message
