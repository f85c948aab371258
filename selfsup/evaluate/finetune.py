"""End-to-end fine-tuning: train a copy of the encoder and a linear head on the labels.

The recipe of MAE (He et al. 2022, appendix A.1) and BEiT (Bao et al. 2022): AdamW with a
linear-scaled learning rate (base lr per 256 samples), linear warm-up then cosine decay,
label smoothing, no weight decay on biases, norms and 1-d parameters, and layer-wise
learning-rate decay for Transformers. The caller's encoder is never touched: a deep copy
is trained. Test labels are read once, to score the final model.

Fine-tuning is not a second training loop: `Finetune` is a module the engine trains like any
method (``training_step(batch) -> {"loss"}``), so precision, devices and DDP, the cosine
schedule fitted to a time budget, the NaN guard and the progress bar are the engine's
(``selfsup.engine.train``). Data comes as map-style data sets of ``{input: tensor, "label":
int}`` samples, read batch by batch through a DataLoader, for training and for scoring.

Any encoder obeying the contract (``forward(x) -> (B, D)``, ``embed_dim``) works; an
encoder with a ``blocks`` ``nn.ModuleList`` (ViT, the text Transformer) gets layer decay.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from selfsup.config import DataConfig, Precision, RunConfig, TrainConfig
from selfsup.data.loader import Collate
from selfsup.errors import SelfsupError
from selfsup.evaluate.features import dataset_input_key, dataset_labels, map_batches
from selfsup.evaluate.linear import fit_linear_classifier

if TYPE_CHECKING:
    from lightning_fabric import Fabric

HEAD_INIT_STD = 2e-5  # MAE's fine-tuning head: trunc_normal_(head.weight, std=2e-5), zero bias

HeadInit = Literal["small", "probe"]
Accelerator = Literal["auto", "cpu", "cuda", "gpu", "mps"]


@dataclass
class FinetuneConfig:
    """Fine-tuning's hyperparameters; the defaults are MAE's recipe (He et al. 2022, A.1)
    with the epochs and warm-up of a small data set."""

    epochs: int = 10
    """Passes over the training set; MAE fine-tunes ViT-B for 100, small data sets need 10-50."""
    max_time: float | None = None
    """Seconds (the LP-FT starting probe included) after which training stops and is scored.
    The warm-up and cosine schedule are fitted to it (never beyond ``epochs``), so the lr
    reaches 0 when the time runs out instead of being cut off at its peak."""
    max_steps: int | None = None
    """Optimizer steps after which training stops (with ``epochs`` and ``max_time``, the
    first to end); the schedule is fitted to it. A step budget gives the same result on a
    fast and a slow machine, which a time cap does not."""
    batch_size: int = 128
    """Samples per step and process (a set smaller than one batch is one batch)."""
    lr: float = 1e-3
    """Base AdamW learning rate per 256 samples (peak = lr × global batch / 256); 1e-3 is
    MAE's ViT value (5e-4 BEiT's). Lower it for a pretrained CNN with BatchNorm (1e-4)."""
    weight_decay: float = 0.05
    """AdamW weight decay of weight matrices and kernels; 0.05 is MAE's."""
    layer_decay: float | None = 0.75
    """Per-layer lr factor for encoders with ``blocks`` (0.75 MAE ViT-B, 0.65 BEiT); None
    trains every layer at the same lr."""
    label_smoothing: float = 0.1
    """ε of the label-smoothed cross-entropy; 0.1 as in MAE."""
    warmup_fraction: float = 0.1
    """Share of the steps spent warming up linearly (MAE: 5 of 100 epochs)."""
    head_init: HeadInit = "small"
    """"small" starts the head at N(0, 2e-5²) (MAE); "probe" starts it at the linear probe of
    the frozen features (LP-FT, Kumar et al. 2022, arXiv:2202.10054), so a short run starts
    from the probe's accuracy instead of chance: use it when the budget allows few steps."""
    augment: bool = True
    """Apply the ``augment`` given to `finetune` to training batches (off: plain inputs)."""
    seed: int = 0
    """Seeds the data order, the head's init, augmentation and dropout."""
    precision: Precision = "auto"
    """As ``train.precision``: ``auto`` is bf16-mixed where the hardware computes bf16."""
    accelerator: Accelerator = "auto"
    """Where a fine-tuning run without a given ``fabric`` trains: CUDA when available."""
    progress: bool = True
    """Show the engine's progress bar."""

    def validate(self) -> None:
        """Raise a one-line `SelfsupError` with a working value for every bad field."""
        if self.epochs < 1 or self.batch_size < 1:
            raise SelfsupError(
                f"fine-tuning epochs and batch_size must be at least 1, got {self.epochs} and "
                f"{self.batch_size}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise SelfsupError(
                f"fine-tuning max_steps must be at least 1 (or None), got {self.max_steps}"
            )
        if self.max_time is not None and not 0 <= self.max_time < math.inf:
            raise SelfsupError(
                f"fine-tuning max_time is a number of seconds ≥ 0 (or None), got {self.max_time}"
            )
        if not 0 < self.lr < math.inf or not 0 <= self.weight_decay < math.inf:
            raise SelfsupError(
                f"fine-tuning needs lr > 0 and weight_decay ≥ 0, got {self.lr:g} and "
                f"{self.weight_decay:g}; 1e-3 and 0.05 are MAE's"
            )
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise SelfsupError(
                f"layer_decay must lie in (0, 1] or be None, got {self.layer_decay}; 0.75 is MAE's"
            )
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.warmup_fraction < 1:
            raise SelfsupError(
                f"label_smoothing and warmup_fraction must lie in [0, 1), got "
                f"{self.label_smoothing} and {self.warmup_fraction}; 0.1 and 0.1 work"
            )
        for name, value, kind in [
            ("head_init", self.head_init, HeadInit),
            ("precision", self.precision, Precision),
            ("accelerator", self.accelerator, Accelerator),
        ]:
            if value not in get_args(kind):
                raise SelfsupError(
                    f"fine-tuning {name} must be one of {', '.join(get_args(kind))}; got {value!r}"
                )
        if not 0 <= self.seed < 2**32:
            raise SelfsupError(f"fine-tuning seed must lie in [0, 2**32), got {self.seed}")


def image_finetune_augment(
    x: Tensor,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random resized crop + horizontal flip of a float batch, one bilinear resample.

    Per image, with u ~ U(0, 1): area share s ~ U(scale), aspect r = exp(U(log ratio)),
    crop side shares w = sqrt(s·r·H/W), h = sqrt(s/r·W/H) (each clamped to 1), a uniform
    centre that keeps the crop inside the image, and a flip with probability ``flip_p``.
    In the normalised coordinates of ``affine_grid`` the crop is the map

        (u, v) -> (±w·u + c_x, h·v + c_y),   c_x ~ U(-(1 - w), 1 - w), c_y ~ U(-(1 - h), 1 - h)

    sampled back to (H, W). The values stay within the input's range (bilinear weights are
    convex). ``scale=(1, 1), ratio=(1, 1)`` with ``flip_p`` 0 or 1 is the identity or an exact
    mirror.

    Args:
        x: (B, C, H, W) float images (e.g. after ``selfsup.views.prepare``).
        scale: range of the crop's share of the image area; (0.5, 1) suits fine-tuning on
            small images, where MAE's (0.08, 1) crops away too much.
        ratio: range of the crop's width / height.
        flip_p: probability of a horizontal flip.
        generator: CPU generator for the draws; the global one when None.

    Returns:
        (B, C, H, W) augmented batch, same dtype and device.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise SelfsupError(
            f"image_finetune_augment expects a float (B, C, H, W) batch, got {x.dtype} of shape "
            f"{tuple(x.shape)}; apply selfsup.views.prepare to uint8 images first"
        )
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1] or not 0 <= flip_p <= 1:
        raise SelfsupError(
            f"bad crop settings scale={scale}, ratio={ratio}, flip_p={flip_p}: need "
            "0 < scale_lo ≤ scale_hi ≤ 1, 0 < ratio_lo ≤ ratio_hi and flip_p in [0, 1]"
        )
    B, C, H, W = x.shape
    u = torch.rand(B, 5, generator=generator, dtype=torch.float64)  # (B, 5)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]  # (B,)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])  # (B,)
    w = (area * aspect * H / W).sqrt().clamp(max=1.0)  # (B,)
    h = (area / aspect * W / H).sqrt().clamp(max=1.0)  # (B,)
    cx = (2 * u[:, 2] - 1) * (1 - w)  # (B,)
    cy = (2 * u[:, 3] - 1) * (1 - h)  # (B,)
    flip = torch.where(u[:, 4] < flip_p, -1.0, 1.0).double()  # (B,)
    zero = torch.zeros_like(w)
    theta = torch.stack(
        [torch.stack([w * flip, zero, cx], dim=1), torch.stack([zero, h, cy], dim=1)], dim=1
    )  # (B, 2, 3)
    theta = theta.to(device=x.device, dtype=x.dtype if x.dtype == torch.float64 else torch.float32)
    grid = F.affine_grid(theta, [B, C, H, W], align_corners=False)  # (B, H, W, 2)
    out = F.grid_sample(
        x.to(theta.dtype), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.to(x.dtype)


def layer_ids(encoder: nn.Module) -> dict[str, int] | None:
    """Layer index of each encoder parameter for layer-wise lr decay, or None without
    ``encoder.blocks`` (an ``nn.ModuleList``).

    As in MAE/BEiT, with n = len(blocks): parameters of ``blocks.i`` are layer i + 1; the
    encoder's own parameters (CLS/mask tokens, position embeddings) and those of submodules
    registered before ``blocks`` (patch or token embeddings) are layer 0; submodules
    registered after ``blocks`` (the final norm) are layer n + 1, as is the head.
    """
    blocks = getattr(encoder, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        return None
    top = len(blocks) + 1
    children = [name for name, _ in encoder.named_children()]
    after_blocks = set(children[children.index("blocks") + 1 :])
    ids = {}
    for name, _ in encoder.named_parameters():
        first, _, rest = name.partition(".")
        if first == "blocks":
            ids[name] = int(rest.split(".", 1)[0]) + 1
        else:
            ids[name] = top if first in after_blocks else 0
    return ids


def finetune_param_groups(
    encoder: nn.Module,
    head: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float | None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr scales and weight-decay exemptions.

    Each trainable parameter gets

        lr_scale     = layer_decay ** (n + 1 - layer_id)   (see `layer_ids`; 1 for the head,
                       the final norm, and every parameter when layer_decay is None or the
                       encoder has no ``blocks``)
        weight_decay = 0 for biases, norms and other parameters with ndim ≤ 1 and for names
                       the encoder's optional ``no_weight_decay()`` returns (timm's
                       convention), ``weight_decay`` otherwise.

    Args:
        encoder: the model to fine-tune; head: the classifier on its features.
        weight_decay: decoupled AdamW weight decay of weight matrices and kernels.
        layer_decay: per-layer lr factor in (0, 1]; 0.75 is MAE's ViT-B value, 0.65 BEiT's.

    Returns:
        Groups {"params", "param_names", "lr_scale", "layer_id", "weight_decay"}, one per
        (layer, decay or not) that has parameters; the lr is set per step as
        peak_lr(t) × lr_scale. Head names carry a ``head.`` prefix.
    """
    ids = layer_ids(encoder) if layer_decay is not None else None
    top = len(encoder.blocks) + 1 if ids is not None else 0  # type: ignore[arg-type]
    skip = getattr(encoder, "no_weight_decay", None)
    exempt = set(skip()) if callable(skip) else set()
    named = [(n, p, ids[n] if ids is not None else 0) for n, p in encoder.named_parameters()]
    named += [(f"head.{n}", p, top) for n, p in head.named_parameters()]
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p, layer in named:
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name not in exempt
        scale = 1.0 if ids is None else float(layer_decay ** (top - layer))  # type: ignore[operator]
        group = groups.setdefault(
            (layer, decay),
            {
                "params": [],
                "param_names": [],
                "lr_scale": scale,
                "layer_id": layer,
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(p)
        group["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]


class Finetune(nn.Module):
    """A copy of an encoder and a linear head, trained on labels by the engine's loop.

    Like a method it offers ``training_step(batch) -> {"loss"}``, ``on_step_end`` and
    ``encoder``; its ``param_groups`` give the engine layer-wise lr scales and weight-decay
    exemptions (`finetune_param_groups`). The classifier is logits = head(encoder(x)) with
    x = augment(to_input(batch[input_key])) in training and to_input(...) when scoring, and
    the loss is the label-smoothed cross-entropy (ε = ``label_smoothing``, K classes)

        L = (1/B) sum_b [ (1 - ε) (-log p_b,y_b) + (ε/K) sum_k (-log p_b,k) ]

    Args:
        encoder: any module with ``embed_dim`` whose ``forward`` gives (B, D); deep-copied,
            every parameter of the copy trains.
        num_classes: K.
        input_key: the batch key of the inputs (``image``, ``tokens``, ...).
        to_input: raw batch -> encoder input (images: scale and normalise, e.g.
            ``selfsup.views.prepare``); None passes batches unchanged (token ids).
        augment: training-only transform of the encoder input (`image_finetune_augment`);
            None for none.
        label_smoothing: ε.
        layer_decay: per-layer lr factor, or None; see `finetune_param_groups`.
        adapter: turns the encoder's copy into what trains, and decides which of its
            parameters do (LoRA: `selfsup.evaluate.lora.add_lora` freezes the encoder and
            adds adapters); None trains every parameter of the copy.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        *,
        input_key: str,
        to_input: Callable[[Tensor], Tensor] | None = None,
        augment: Callable[[Tensor], Tensor] | None = None,
        label_smoothing: float = 0.1,
        layer_decay: float | None = 0.75,
        adapter: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        trained = copy.deepcopy(encoder)
        for p in trained.parameters():
            p.requires_grad_(True)
        self.encoder = (adapter(trained) if adapter is not None else trained).train()
        self.head = nn.Linear(int(encoder.embed_dim), num_classes)  # type: ignore[arg-type]
        nn.init.trunc_normal_(self.head.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.head.bias)
        self.input_key = input_key
        self.to_input = to_input if to_input is not None else _unchanged
        self.augment = augment
        self.label_smoothing = label_smoothing
        self.layer_decay = layer_decay

    def forward(self, x: Tensor) -> Tensor:
        """Encoder input (B, ...) -> logits (B, K)."""
        return self.head(pooled_features(self.encoder, x))

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = self.to_input(batch[self.input_key])  # (B, ...) encoder input
        if self.augment is not None:
            x = self.augment(x)
        logits = self(x)  # (B, K)
        y = batch["label"].long()  # (B,)
        return {"loss": F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return finetune_param_groups(
            self.encoder, self.head, weight_decay=weight_decay, layer_decay=self.layer_decay
        )

    def on_step_end(self, progress: float) -> None:
        """Fine-tuning has no schedule of its own: the engine's lr schedule is all."""


def finetune(
    encoder: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    cfg: FinetuneConfig | None = None,
    *,
    to_input: Callable[[Tensor], Tensor] | None = None,
    augment: Callable[[Tensor], Tensor] | None = None,
    input_key: str | None = None,
    num_classes: int | None = None,
    fabric: Fabric | None = None,
    collate: Collate | None = None,
    num_workers: int = 0,
    description: str = "fine-tune",
    return_model: bool = False,
    adapter: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Fine-tuning accuracy: a copy of ``encoder`` plus a linear head trained end to end by
    the engine (see `Finetune` for the model and loss), scored on ``test_set``.

    AdamW at peak lr = ``cfg.lr`` × global batch / 256, linear warm-up over
    ``cfg.warmup_fraction`` of the steps, then cosine decay to 0, each parameter group scaled
    by its `finetune_param_groups` lr_scale. Every epoch visits a seeded permutation of the
    training set in full batches (the engine's sampler, shared out between processes). The
    run seeds its own random state and gives the caller's back, so the result repeats with
    ``cfg.seed`` whatever the caller drew before.

    Args:
        encoder: any module with ``embed_dim`` whose ``forward`` gives (B, D); it is
            deep-copied, and neither its weights nor its train/eval mode change.
        train_set: map-style data set of ``{input_key: tensor, "label": int}`` samples, e.g.
            an ``ImageDataset`` or a ``torch.utils.data.Subset`` of one (a label fraction).
        test_set: the same kind; streamed once, in batches, to score the final model.
        cfg: hyperparameters; None takes `FinetuneConfig`'s defaults.
        to_input: raw batch -> encoder input, in training and scoring (images:
            the modality's ``to_input(encoder)`` or ``selfsup.views.prepare``; token ids:
            None, unchanged).
        augment: training-only transform of the encoder input (images:
            `image_finetune_augment`); None, or ``cfg.augment`` False, for none.
        input_key: the samples' input key; None reads the data set's ``input_key``
            (``image`` when it has none).
        num_classes: K; default max label + 1 over both sets, read from their ``labels()``
            (through subsets) or else sample by sample.
        fabric: a (launched) Lightning Fabric to train under, e.g. one process of a DDP run;
            its devices and precision then replace ``cfg.accelerator`` and ``cfg.precision``.
            None makes a one-device fabric from ``cfg``.
        collate: samples -> batch for the DataLoaders; None stacks them (inputs of one
            shape); pass a padding one for variable-length inputs.
        num_workers: DataLoader processes that decode samples: 0 for in-memory sets, 2-8 for
            folders of files.
        description: the progress bar's label.
        return_model: also return the fine-tuned "encoder" and "head" modules.
        adapter: what the encoder's copy becomes before training, and which of its
            parameters train (see `Finetune`); LoRA's adapters train without layer decay
            (their names no longer follow the encoder's blocks).

    Returns:
        {"accuracy": float in [0, 1], "epochs": float (completed, fractional when stopped
         early), "steps": int, "seconds": float (probe, training and scoring),
         "train_seconds": float (the engine's loop), "stopped_early": bool, "lr": float
         (peak, scaled), "train_loss": float (mean over the last epoch's steps),
         "num_train": int, "num_test": int, "precision": str, "trainable_params": int and
         "total_params": int (encoder and head)}
        plus "encoder" and "head" when ``return_model``.
    """
    from selfsup.engine import TrainingDiverged, make_fabric, train

    start = time.perf_counter()
    cfg = cfg or FinetuneConfig()
    cfg.validate()
    key = input_key or dataset_input_key(train_set)
    k = _check_inputs(encoder, train_set, test_set, key, to_input, num_classes)
    world = fabric.world_size if fabric is not None else 1
    batch = min(cfg.batch_size, len(train_set) // world)  # type: ignore[arg-type]
    if batch < 1:
        raise SelfsupError(
            f"fine-tuning on {world} processes needs at least {world} training samples, "
            f"got {len(train_set)}"  # type: ignore[arg-type]
        )
    peak_lr = cfg.lr * batch * world / 256
    run_cfg = _engine_config(cfg, batch, peak_lr, num_workers)
    fabric = fabric or make_fabric(run_cfg, None)
    with _own_random_state(fabric.device):
        torch.manual_seed(cfg.seed)  # the head's init
        model = Finetune(
            encoder,
            k,
            input_key=key,
            to_input=to_input,
            augment=augment if cfg.augment else None,
            label_smoothing=cfg.label_smoothing,
            layer_decay=cfg.layer_decay if adapter is None else None,
            adapter=adapter,
        ).to(fabric.device)
        reading = {"batch_size": batch, "num_workers": num_workers, "collate": collate}
        if cfg.head_init == "probe":
            _probe_head(fabric, model, train_set, **reading)
        if cfg.max_time is not None:  # the probe spent part of the budget
            run_cfg.train.max_time = max(0.0, cfg.max_time - (time.perf_counter() - start))
        try:
            trained = train(
                fabric, run_cfg, model, train_set, None, description=description, collate=collate
            )
        except TrainingDiverged as error:
            raise TrainingDiverged(
                f"fine-tuning loss became {error.loss} at step {error.step}; lower lr (now "
                f"{cfg.lr:g} per 256 samples) or raise warmup_fraction (now {cfg.warmup_fraction:g})",
                step=error.step,
                loss=error.loss,
            ) from None
        accuracy = _test_accuracy(fabric, model, test_set, **reading)

    steps_per_epoch = (len(train_set) // world) // batch  # type: ignore[arg-type]
    planned = cfg.epochs * steps_per_epoch
    before_last = (trained.steps - 1) // steps_per_epoch * steps_per_epoch  # epochs before
    last_epoch = [loss for step, loss in trained.losses.items() if step > before_last]
    result: dict[str, Any] = {
        "accuracy": accuracy,
        "epochs": trained.steps / steps_per_epoch,
        "steps": trained.steps,
        "seconds": time.perf_counter() - start,
        "train_seconds": trained.seconds,
        "stopped_early": trained.steps < planned,
        "lr": peak_lr,
        "train_loss": sum(last_epoch) / len(last_epoch) if last_epoch else math.nan,
        "num_train": len(train_set),  # type: ignore[arg-type]
        "num_test": len(test_set),  # type: ignore[arg-type]
        "precision": str(fabric.strategy.precision.precision),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
    }
    if return_model:
        result["encoder"], result["head"] = model.encoder.eval(), model.head.eval()
    return result


def _engine_config(cfg: FinetuneConfig, batch: int, peak_lr: float, num_workers: int) -> RunConfig:
    """The engine's settings for a fine-tuning run: the schedule of `FinetuneConfig`, no
    gradient clipping, the lr decaying to 0, and nothing written (the run has no folder)."""
    return RunConfig(
        method="finetune",
        data=DataConfig(num_workers=num_workers),
        train=TrainConfig(
            batch_size=batch,
            max_epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            max_time=cfg.max_time,
            optimizer="adamw",
            lr=peak_lr,
            weight_decay=cfg.weight_decay,
            warmup_fraction=cfg.warmup_fraction,
            min_lr_ratio=0.0,
            grad_clip=None,
            precision=cfg.precision,
            channels_last=False,
            accelerator=cfg.accelerator,
            seed=cfg.seed,
            on_nan="stop",
            progress=cfg.progress,
        ),
    )


PROBE_WEIGHT_DECAY = 1e-3
"""L2 strength of the LP-FT starting probe on standardised features (N of 10^3-10^5)."""


@torch.no_grad()
def _probe_head(fabric: Fabric, model: Finetune, train_set: Dataset, **reading: Any) -> None:
    """Set the head to the linear probe of the encoder's frozen features: with the probe
    z = ((f - μ)/σ) W + b, the head is weight = (W/σ)ᵀ, bias = b - (μ/σ) W. ``reading``:
    `map_batches`'s batch_size, num_workers and collate. The features are extracted in the
    run's precision, the probe is fitted in float32."""
    model.eval()
    with fabric.autocast():
        features, labels = map_batches(
            lambda x: pooled_features(model.encoder, model.to_input(x)),
            train_set,
            input_key=model.input_key,
            device=fabric.device,
            **reading,
        )  # (N, D), (N,)
    assert labels is not None  # _check_inputs read every label
    mean = features.mean(dim=0)
    std = features.std(dim=0, correction=0)
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    with torch.enable_grad():
        weight, bias = fit_linear_classifier(
            (features - mean) / std, labels, model.head.out_features, PROBE_WEIGHT_DECAY
        )  # (D, K), (K,)
    model.head.weight.copy_((weight / std[:, None]).T.to(fabric.device))
    model.head.bias.copy_((bias - (mean / std) @ weight).to(fabric.device))
    model.train()


def _test_accuracy(fabric: Fabric, model: Finetune, test_set: Dataset, **reading: Any) -> float:
    """Share of the test samples whose argmax logit is their label, in eval mode; under DDP
    each process scores every world-th sample and the counts are summed. ``reading``:
    `map_batches`'s batch_size, num_workers and collate."""
    rank, world = fabric.global_rank, fabric.world_size
    n = len(test_set)  # type: ignore[arg-type]
    share = test_set if world == 1 else Subset(test_set, range(rank, n, world))
    model.eval()
    with fabric.autocast():
        logits, labels = map_batches(
            lambda x: model(model.to_input(x)),
            share,
            input_key=model.input_key,
            device=fabric.device,
            **reading,
        )  # (Q, K), (Q,)
    correct = torch.tensor(0.0 if labels is None else float((logits.argmax(dim=1) == labels).sum()))
    if world > 1:
        correct = fabric.all_reduce(correct.to(fabric.device), reduce_op="sum").cpu()  # type: ignore[union-attr]
    return float(correct) / n


def pooled_features(encoder: nn.Module, x: Tensor) -> Tensor:
    """Encoder features (B, D) as float32, checked against the encoder contract."""
    z = encoder(x)
    expected = int(encoder.embed_dim)  # type: ignore[arg-type]
    if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != expected:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise SelfsupError(
            f"the encoder returned {shape} but fine-tuning needs pooled (B, {expected}) "
            "features (B, embed_dim): make forward(x) pool its tokens"
        )
    return z.float()


def _unchanged(x: Tensor) -> Tensor:
    return x


SEED_VARIABLES = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")
"""What Lightning's seed_everything leaves in the environment."""


@contextlib.contextmanager
def _own_random_state(device: torch.device) -> Iterator[None]:
    """Run seeded without touching the caller's generators: torch's (CPU and ``device``),
    NumPy's and Python's, and Lightning's seed variables, are given back afterwards (the
    engine seeds them all)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    variables = {name: os.environ.get(name) for name in SEED_VARIABLES}
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_inputs(
    encoder: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    key: str,
    to_input: Callable[[Tensor], Tensor] | None,
    num_classes: int | None,
) -> int:
    """Raise SelfsupError with a fix for every malformed argument of `finetune`; return K."""
    embed_dim = getattr(encoder, "embed_dim", None)
    if not isinstance(embed_dim, int) or embed_dim < 1:
        raise SelfsupError(
            f"fine-tuning needs the encoder's feature width: give {type(encoder).__name__} an "
            "integer `embed_dim` attribute (the D of its (B, D) output)"
        )
    if len(train_set) == 0 or len(test_set) == 0:  # type: ignore[arg-type]
        raise SelfsupError("fine-tuning needs at least one training and one test sample")
    sample = train_set[0]
    if not isinstance(sample, dict) or key not in sample or "label" not in sample:
        keys = sorted(sample) if isinstance(sample, dict) else type(sample).__name__
        raise SelfsupError(
            f"fine-tuning needs samples {{{key!r}: input, 'label': class}}, got {keys}; pass "
            "input_key= to name the input, and a labelled data set"
        )
    if to_input is None and torch.as_tensor(sample[key]).dtype == torch.uint8:
        raise SelfsupError(
            "fine-tuning got uint8 inputs and no `to_input`: pass to_input=selfsup.views.prepare "
            "for images so the encoder sees normalised floats"
        )
    labels = torch.cat([dataset_labels(train_set), dataset_labels(test_set)])  # (N + Q,)
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= k:
        raise SelfsupError(
            f"fine-tuning labels must lie in [0, {k}); got {int(labels.min())}.."
            f"{int(labels.max())}; raise num_classes, remap the labels, or drop unlabelled (-1) samples"
        )
    return k
