"""Optimizers, parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

OptimizerName = Literal["adamw", "lars", "sgd"]

# Peak learning rate at batch 256 and weight decay, per optimizer: the values the SSL papers
# use (SimCLR/BYOL LARS 0.3 and 1e-6; AdamW as in MoCo v3/DINO; SGD as in SimSiam).
RECOMMENDED: dict[str, tuple[float, float]] = {
    "adamw": (2e-3, 1e-4),
    "lars": (0.3, 1e-6),
    "sgd": (0.05, 5e-4),
}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only: biases and norm scales are exempt
    (and LARS skips its trust ratio for them), as in every SSL reference recipe.

    A model with its own ``param_groups(weight_decay) -> list[dict]`` (fine-tuning, for
    layer-wise lr decay) gives its groups instead; a group's optional ``lr_scale`` multiplies
    the scheduled learning rate at every step."""
    own = getattr(model, "param_groups", None)
    if callable(own):
        return own(weight_decay)
    decay, plain = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": plain, "weight_decay": 0.0, "lars_exclude": True},
    ]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al. 2017, "Large Batch Training of
    Convolutional Networks"), as used by SimCLR and BYOL at batch sizes of 4096.

    For each parameter w with gradient g (weight decay λ folded in: g += λw), the update is
    scaled by η·‖w‖/‖g‖ when both norms are positive; groups with ``lars_exclude`` skip it.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "weight_decay": weight_decay,
                "eta": eta,
                "lars_exclude": False,
            },
        )

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g: Tensor = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0),
                        group["eta"] * w_norm / g_norm,
                        torch.ones_like(w_norm),
                    )
                    g = g * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def make_optimizer(
    name: OptimizerName, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    if name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return LARS(groups, lr=lr)


# A schedule limited by time (pretraining and fine-tuning alike) is fitted to its speed:
CALIBRATION_STEPS = 10
"""A run limited only by time measures its speed over this many steps (after WARM_STEPS
warm-up steps), then fixes its horizon for the cosine schedule..."""
WARM_STEPS = 2
REFIT_AT = (0.2, 0.5, 0.8)
"""...and measures it again over all its steps so far at these shares of its budget, since
the first steps are often slower (each refit moves the cosine schedule a little)."""


def linear_lr(
    step: int, total_steps: int, peak: float, warmup_steps: int, min_ratio: float = 0.0
) -> float:
    """Linear warm-up to ``peak`` (none when ``warmup_steps`` is 0), then a straight line down
    to ``min_ratio·peak`` at ``total_steps``: word2vec's ``alpha`` schedule."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (1 - t * (1 - min_ratio))


def cosine_lr(
    step: int, total_steps: int, peak: float, warmup_steps: int, min_ratio: float = 0.0
) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine to ``min_ratio·peak``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    low = peak * min_ratio
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * t))
