"""End-to-end fine-tuning: train a copy of the encoder and a linear head on the labels.

The recipe of MAE (He et al. 2022, appendix A.1) and BEiT (Bao et al. 2022): AdamW with a
linear-scaled learning rate (base lr per 256 samples), linear warm-up then cosine decay,
label smoothing, no weight decay on biases, norms and 1-d parameters, and layer-wise
learning-rate decay for Transformers. The caller's encoder is never touched: a deep copy
is trained. Test labels are read once, to score the final model.

Any encoder obeying the contract (``forward(x) -> (B, D)``, ``embed_dim``) works; an
encoder with a ``blocks`` ``nn.ModuleList`` (ViT, the text Transformer) gets layer decay.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.engine.optim import CALIBRATION_STEPS, REFIT_AT, WARM_STEPS, cosine_lr
from selfsup.errors import SelfsupError
from selfsup.evaluate.linear import fit_linear_classifier

HEAD_INIT_STD = 2e-5  # MAE's fine-tuning head: trunc_normal_(head.weight, std=2e-5), zero bias


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


def finetune(
    encoder: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    prepare: Callable[[Tensor], Tensor] | None = None,
    augment: Callable[[Tensor], Tensor] | None = None,
    epochs: int = 10,
    max_time: float | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    layer_decay: float | None = 0.75,
    label_smoothing: float = 0.1,
    warmup_fraction: float = 0.1,
    seed: int = 0,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
    return_model: bool = False,
    head_init: Literal["small", "probe"] = "small",
) -> dict[str, Any]:
    """Fine-tuning accuracy: a copy of ``encoder`` plus a linear head trained end to end.

    The classifier is logits = head(encoder(prepare(x))) with a linear head on the
    ``embed_dim`` features (weights ~ N(0, 2e-5²), zero bias, no BatchNorm, as MAE). It
    minimises the label-smoothed cross-entropy (ε = ``label_smoothing``)

        L = (1/B) sum_b [ (1 - ε) (-log p_b,y_b) + (ε/K) sum_k (-log p_b,k) ]

    with AdamW at peak lr = ``lr`` × batch_size / 256, linear warm-up over
    ``warmup_fraction`` of the steps then cosine decay to 0, each group scaled by its
    `finetune_param_groups` lr_scale. Every epoch visits a fresh seeded permutation of
    the training set in batches of ``batch_size`` (the incomplete last batch is dropped,
    unless the whole set is smaller than one batch). The run seeds torch's global RNG
    inside a forked RNG state, so ``augment``, dropout and the head's init repeat with
    ``seed`` and the caller's RNG is left as it was.

    Args:
        encoder: any module with ``embed_dim`` whose ``forward`` gives (B, D); it is deep-
            copied, and neither its weights nor its train/eval mode change.
        train_x: (N, ...) raw training inputs (uint8 images, int64 tokens, floats);
            train_y: (N,) int labels. test_x: (Q, ...), test_y: (Q,) likewise.
        num_classes: K; default max label + 1 over train and test.
        prepare: raw batch -> encoder input, in training and evaluation (e.g.
            ``selfsup.views.prepare`` for uint8 images); None passes batches unchanged.
        augment: training-only transform of the prepared batch (e.g.
            `image_finetune_augment`); None for no augmentation (text).
        epochs: passes over the training set; MAE fine-tunes ViT-B for 100, small data
            sets need 10-50.
        max_time: seconds (the starting probe included) after which training stops and
            is evaluated. The warm-up and cosine schedule are fitted to it: the run
            measures its speed over its first steps and again at 20/50/80% of the time,
            and shortens its horizon to the steps that fit (never beyond ``epochs``), so
            the learning rate reaches 0 when the time runs out instead of being cut off
            at its peak.
        batch_size: samples per step.
        lr: base learning rate per 256 samples; 1e-3 is MAE's ViT value (5e-4 for BEiT).
            Lower it for a pretrained CNN with BatchNorm (1e-4).
        weight_decay: AdamW weight decay; 0.05 is MAE's.
        layer_decay: per-layer lr decay for encoders with ``blocks`` (0.75 MAE ViT-B,
            0.65 BEiT); None trains every layer at the same lr.
        label_smoothing: ε; 0.1 as in MAE.
        warmup_fraction: share of the steps spent warming up (MAE: 5 of 100 epochs).
        seed: seeds the data order, the head init and the global RNG of the run.
        device: "cpu", "cuda", ...; default CUDA when available.
        progress: called as progress(line) after every epoch.
        return_model: also return the fine-tuned "encoder" and "head" modules.
        head_init: "small" starts the head at N(0, 2e-5²) (MAE); "probe" starts it at the
            linear probe of the frozen features (LP-FT, Kumar et al. 2022,
            arXiv:2202.10054): L-BFGS on standardised features, the standardisation folded
            into the head. Fine-tuning then starts from the probe's accuracy instead of
            chance, which matters when a short budget allows few steps.

    Returns:
        {"accuracy": float in [0, 1], "epochs": float (completed, fractional when stopped
         early), "steps": int, "seconds": float (training and evaluation),
         "stopped_early": bool, "lr": float (peak, scaled), "train_loss": float (mean over
         the last epoch's steps), "num_train": int, "num_test": int}
        plus "encoder" and "head" when ``return_model``.
    """
    k = _check_finetune_inputs(
        encoder, train_x, train_y, test_x, test_y, num_classes, prepare, epochs, max_time,
        batch_size, lr, weight_decay, layer_decay, label_smoothing, warmup_fraction,
    )  # fmt: skip
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    forked = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        return _finetune(
            encoder, train_x, train_y.long(), test_x, test_y.long(), k, prepare, augment,
            epochs, max_time, batch_size, lr, weight_decay, layer_decay, label_smoothing,
            warmup_fraction, seed, torch.device(device), progress, return_model, head_init,
        )  # fmt: skip


def _finetune(
    encoder: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    prepare: Callable[[Tensor], Tensor] | None,
    augment: Callable[[Tensor], Tensor] | None,
    epochs: int,
    max_time: float | None,
    batch_size: int,
    lr: float,
    weight_decay: float,
    layer_decay: float | None,
    label_smoothing: float,
    warmup_fraction: float,
    seed: int,
    device: torch.device,
    progress: Callable[[str], None] | None,
    return_model: bool,
    head_init: Literal["small", "probe"] = "small",
) -> dict[str, Any]:
    """The training loop and evaluation of `finetune`, on validated inputs."""
    start = time.perf_counter()
    model = copy.deepcopy(encoder).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    head = nn.Linear(int(encoder.embed_dim), num_classes)  # type: ignore[arg-type]
    nn.init.trunc_normal_(head.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(head.bias)
    head = head.to(device)
    if head_init == "probe":
        _probe_head(model, head, train_x, train_y, num_classes, prepare, batch_size, device)
    groups = finetune_param_groups(model, head, weight_decay=weight_decay, layer_decay=layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))

    n = train_x.shape[0]
    batch = min(batch_size, n)
    steps_per_epoch = n // batch
    planned_steps = epochs * steps_per_epoch
    total_steps = planned_steps
    warmup_steps = round(warmup_fraction * total_steps)
    peak_lr = lr * batch / 256
    order = torch.Generator().manual_seed(seed)
    fit_points = _fit_points(max_time)
    timed_from: tuple[int, float] | None = None  # (step, time) after the warm-up steps

    step, stopped = 0, False
    epoch_losses: list[float] = []
    model.train()
    head.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=order)  # (N,)
        epoch_losses = []
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]  # (B,)
            x = _prepared(train_x[idx], prepare, device)
            if augment is not None:
                x = augment(x)
            y = train_y[idx].to(device)  # (B,)
            scale = cosine_lr(step, total_steps, peak_lr, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = scale * group["lr_scale"]
            logits = head(_features(model, x))  # (B, K)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                raise SelfsupError(
                    f"fine-tuning loss became {float(loss)} at step {step}; lower lr "
                    f"(now {lr:g} per 256 samples) or raise warmup_fraction"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_losses.append(float(loss.detach()))
            step += 1
            if max_time is not None:
                now = time.perf_counter()
                if step == WARM_STEPS:
                    timed_from = (step, now)
                elif (
                    timed_from is not None
                    and fit_points
                    and _due(fit_points[0], step - timed_from[0], now - start, max_time)
                ):
                    fit_points.pop(0)
                    rate = (now - timed_from[1]) / (step - timed_from[0])  # s/step
                    fitted = step + int((max_time - (now - start)) / rate)
                    total_steps = max(step, min(planned_steps, fitted))
                    warmup_steps = min(warmup_steps, round(warmup_fraction * total_steps))
                if now - start >= max_time or step >= total_steps:
                    stopped = step < planned_steps
                    break
        if progress is not None:
            mean = sum(epoch_losses) / max(1, len(epoch_losses))
            progress(f"fine-tune · epoch {epoch + 1}/{epochs} · loss {mean:.4f}")
        if stopped:
            break

    accuracy = _accuracy(model, head, test_x, test_y, prepare, batch_size, device)
    result: dict[str, Any] = {
        "accuracy": accuracy,
        "epochs": step / steps_per_epoch,
        "steps": step,
        "seconds": time.perf_counter() - start,
        "stopped_early": stopped,
        "lr": peak_lr,
        "train_loss": sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan"),
        "num_train": n,
        "num_test": int(test_x.shape[0]),
    }
    if return_model:
        result["encoder"], result["head"] = model.eval(), head.eval()
    return result


def _fit_points(max_time: float | None) -> list[float]:
    """When a time-limited run refits its schedule (the engine's policy): 0 stands for "after
    CALIBRATION_STEPS timed steps"."""
    return [] if max_time is None else [0.0, *REFIT_AT]


def _due(point: float, timed_steps: int, elapsed: float, max_time: float) -> bool:
    """Whether the refit at ``point`` (a share of max_time; 0 = first fit) is due."""
    if point == 0.0:
        return timed_steps >= CALIBRATION_STEPS or elapsed >= REFIT_AT[0] * max_time
    return elapsed >= point * max_time


PROBE_WEIGHT_DECAY = 1e-3
"""L2 strength of the LP-FT starting probe on standardised features (N of 10^3-10^5)."""


@torch.no_grad()
def _probe_head(
    model: nn.Module,
    head: nn.Linear,
    train_x: Tensor,
    train_y: Tensor,
    num_classes: int,
    prepare: Callable[[Tensor], Tensor] | None,
    batch_size: int,
    device: torch.device,
) -> None:
    """Set ``head`` to the linear probe of ``model``'s frozen features: with the probe
    z = ((f - μ)/σ) W + b, the head is weight = (W/σ)ᵀ, bias = b - (μ/σ) W."""
    model.eval()
    features = torch.cat(
        [
            _features(model, _prepared(train_x[i : i + batch_size], prepare, device)).float().cpu()
            for i in range(0, len(train_x), batch_size)
        ]
    )  # (N, D)
    mean = features.mean(dim=0)
    std = features.std(dim=0, correction=0)
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    with torch.enable_grad():
        weight, bias = fit_linear_classifier(
            (features - mean) / std, train_y.cpu(), num_classes, PROBE_WEIGHT_DECAY
        )  # (D, K), (K,)
    head.weight.copy_((weight / std[:, None]).T.to(device))
    head.bias.copy_((bias - (mean / std) @ weight).to(device))
    model.train()


def _prepared(
    x: Tensor, prepare: Callable[[Tensor], Tensor] | None, device: torch.device
) -> Tensor:
    """A raw batch on the device, mapped to encoder input by ``prepare``."""
    x = x.to(device, non_blocking=True)
    return prepare(x) if prepare is not None else x


def _features(model: nn.Module, x: Tensor) -> Tensor:
    """Encoder features (B, D) as float32, checked against the encoder contract."""
    z = model(x)
    expected = int(model.embed_dim)  # type: ignore[arg-type]
    if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != expected:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise SelfsupError(
            f"the encoder returned {shape} but fine-tuning needs pooled (B, {expected}) "
            "features (B, embed_dim): make forward(x) pool its tokens"
        )
    return z.float()


@torch.no_grad()
def _accuracy(
    model: nn.Module,
    head: nn.Module,
    x: Tensor,
    y: Tensor,
    prepare: Callable[[Tensor], Tensor] | None,
    batch_size: int,
    device: torch.device,
) -> float:
    """Fraction of rows of x whose argmax logit is y, in eval mode, in batches."""
    model.eval()
    head.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = head(_features(model, _prepared(x[start : start + batch_size], prepare, device)))
        correct += int((logits.argmax(dim=1).cpu() == y[start : start + batch_size]).sum())
    return correct / x.shape[0]


def _check_finetune_inputs(
    encoder: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int | None,
    prepare: Callable[[Tensor], Tensor] | None,
    epochs: int,
    max_time: float | None,
    batch_size: int,
    lr: float,
    weight_decay: float,
    layer_decay: float | None,
    label_smoothing: float,
    warmup_fraction: float,
) -> int:
    """Raise SelfsupError with a fix for every malformed argument of `finetune`; return K."""
    embed_dim = getattr(encoder, "embed_dim", None)
    if not isinstance(embed_dim, int) or embed_dim < 1:
        raise SelfsupError(
            f"fine-tuning needs the encoder's feature width: give {type(encoder).__name__} an "
            "integer `embed_dim` attribute (the D of its (B, D) output)"
        )
    if train_y.ndim != 1 or train_x.shape[0] != train_y.shape[0]:
        raise SelfsupError(
            f"fine-tuning got {train_x.shape[0]} training inputs for labels of shape "
            f"{tuple(train_y.shape)}; pass one label per row"
        )
    if test_y.ndim != 1 or test_x.shape[0] != test_y.shape[0]:
        raise SelfsupError(
            f"fine-tuning got {test_x.shape[0]} test inputs for labels of shape "
            f"{tuple(test_y.shape)}; pass one label per row"
        )
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise SelfsupError("fine-tuning needs at least one training and one test sample")
    if prepare is None and train_x.dtype == torch.uint8:
        raise SelfsupError(
            "fine-tuning got uint8 inputs and no `prepare`: pass prepare=selfsup.views.prepare "
            "for images so the encoder sees normalised floats"
        )
    labels = torch.cat([train_y.reshape(-1), test_y.reshape(-1)]).long()
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= k:
        raise SelfsupError(
            f"fine-tuning labels must lie in [0, {k}); got {int(labels.min())}.."
            f"{int(labels.max())}; raise num_classes or remap the labels"
        )
    if epochs < 1 or batch_size < 1:
        raise SelfsupError(
            f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}"
        )
    if max_time is not None and max_time < 0:
        raise SelfsupError(f"max_time is a number of seconds ≥ 0, got {max_time}")
    if lr <= 0 or weight_decay < 0:
        raise SelfsupError(
            f"need lr > 0 and weight_decay ≥ 0, got {lr:g} and {weight_decay:g}; 1e-3 and "
            "0.05 are MAE's"
        )
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise SelfsupError(
            f"layer_decay must lie in (0, 1] or be None, got {layer_decay}; 0.75 is MAE's"
        )
    if not 0 <= label_smoothing < 1 or not 0 <= warmup_fraction < 1:
        raise SelfsupError(
            f"label_smoothing and warmup_fraction must lie in [0, 1), got {label_smoothing} "
            f"and {warmup_fraction}; 0.1 and 0.1 work"
        )
    return k
