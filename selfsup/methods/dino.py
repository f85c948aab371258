"""DINO: self-distillation with no labels. A student matches an EMA teacher's centred,
sharpened distribution over K prototypes, from multi-crop views.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in
Self-Supervised Vision Transformers." ICCV 2021. arXiv:2104.14294.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.data.info import DataInfo
from selfsup.engine.teacher import cosine_momentum, ema_update, linear_warmup, make_teacher
from selfsup.errors import SelfsupError
from selfsup.losses.dino import DINOLoss
from selfsup.views import ImageAugment
from selfsup.views.multicrop import MultiCropViews, local_crop_count, local_crop_size


@dataclass
class DINOConfig:
    """DINO's hyperparameters: the paper's values, with the head scaled down for small data."""

    out_dim: int = 1024
    """K, the number of prototypes. The paper uses 65536 on ImageNet; 1024-4096 is plenty for
    data sets of tens of classes and costs far less on a CPU. Raise it for large, diverse data."""
    hidden_dim: int = 512
    """Hidden width of the 3-layer head MLP (2048 in the paper; 512 suits CPU-sized encoders)."""
    bottleneck_dim: int = 128
    """Width of the L2-normalised bottleneck before the prototypes (256 in the paper)."""
    head_layers: int = 3
    head_norm: Literal["none", "batch"] = "none"
    """BatchNorm after the hidden layers of the head. The paper's head has none (ViTs have no
    BatchNorm); "batch" helps ConvNets find distinct outputs early, on data of little variety."""
    student_temp: float = 0.1
    """τ_s; 0.1 as in the paper."""
    teacher_temp: float = 0.07
    """τ_t after warm-up. 0.04-0.07 work; lower it if the loss does not fall (the paper's
    advice), raise it towards 0.07 once training is stable."""
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup: float = 0.3
    """Share of training over which τ_t rises linearly from ``warmup_teacher_temp`` to
    ``teacher_temp`` (30 of 100 epochs in the paper)."""
    center_momentum: float = 0.9
    momentum: float = 0.996
    """Teacher EMA momentum at the start, rising to ``final_momentum`` on a cosine. 0.996
    suits batch 256-1024; use 0.99-0.995 for short runs or small batches."""
    final_momentum: float = 1.0
    num_local_crops: int | None = None
    """Small crops seen only by the student. Each costs about (local/global)² of a global
    crop. None: fitted to the resolution (``local_crop_count``), 8 as in the paper's code
    where local crops keep its 96/224 side ratio (28 -> 12 px); 6 halves their cost on a CPU."""
    freeze_last_layer_epochs: float = 1.0
    """The prototypes get no gradient for this many epochs (the paper's 1): it stabilises the
    start. Needs ``DataInfo.steps_per_epoch``, which the engine sets; without it (a method
    built by hand) the last layer is never frozen."""
    global_augment: ImageAugment = field(
        default_factory=lambda: ImageAugment(paper_crop_scale=(0.4, 1.0), saturation=0.2)
    )
    """Recipe of the 2 global crops (teacher and student); ``output_size`` None = image size."""
    local_augment: ImageAugment = field(
        default_factory=lambda: ImageAugment(paper_crop_scale=(0.05, 0.4), saturation=0.2)
    )
    """Recipe of the local crops; ``output_size`` None = 96/224 of the image side, a multiple
    of the ViT patch size, 4 px at least (12 px for 28 px images)."""

    def validate(self) -> None:
        if self.head_layers < 2:
            raise SelfsupError(
                f"head_layers must be 2 or more (3 in the paper), got {self.head_layers}"
            )


class DINOHead(nn.Module):
    """MLP -> L2-normalise -> weight-normalised linear to K prototypes: (B, D) -> (B, K).

    The last layer is weight normalisation with its gain fixed to 1, i.e. each prototype row
    v_k is used as v_k / ‖v_k‖, so the logits are cosines in [-1, 1].
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        bottleneck_dim: int,
        out_dim: int,
        layers: int = 3,
        norm: Literal["none", "batch"] = "none",
    ) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError("the DINO head needs at least 2 layers")

        def hidden(dim_in: int) -> list[nn.Module]:
            bn = [nn.BatchNorm1d(hidden_dim)] if norm == "batch" else []
            return [nn.Linear(dim_in, hidden_dim), *bn, nn.GELU()]

        blocks: list[nn.Module] = hidden(in_dim)
        for _ in range(layers - 2):
            blocks += hidden(hidden_dim)
        blocks.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*blocks)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(module.bias)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)

    def forward(self, x: Tensor, frozen_last: bool = False) -> Tensor:
        """(B, D) -> (B, K). With ``frozen_last`` the prototypes get no gradient: their grad
        stays None in one process; under DDP, which needs every parameter in the graph, it is
        an exact zero (AdamW then moves them only by weight decay, which the row
        normalisation ignores)."""
        z = F.normalize(self.mlp(x), dim=-1)  # (B, bottleneck)
        v = self.last_layer.weight  # (K, bottleneck)
        logits = F.linear(z, F.normalize(v.detach() if frozen_last else v, dim=1))  # (B, K)
        if frozen_last and distributed.is_distributed():
            logits = logits + 0.0 * v.sum()
        return logits


class DINO(nn.Module):
    def __init__(self, cfg: DINOConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.head = DINOHead(
            encoder.embed_dim,
            cfg.hidden_dim,
            cfg.bottleneck_dim,
            cfg.out_dim,
            cfg.head_layers,
            cfg.head_norm,
        )
        self.teacher_encoder = make_teacher(encoder)
        self.teacher_head = make_teacher(self.head)
        patch = int(getattr(encoder, "patch_size", 1))  # ViT crops must split into patches
        local_size = cfg.local_augment.output_size or local_crop_size(info.image_size, patch)
        num_local = cfg.num_local_crops
        if num_local is None:  # built by hand, not by a run that fitted it
            num_local = local_crop_count(info.image_size, local_size)
        self.views = MultiCropViews(
            info.channels,
            info.image_size,
            cfg.global_augment,
            replace(cfg.local_augment, output_size=local_size),
            num_global=2,
            num_local=num_local,
            channels_last=info.channels_last,
        )
        self.loss = DINOLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum)
        spe = info.steps_per_epoch
        self.freeze_steps = round(cfg.freeze_last_layer_epochs * spe) if spe else 0
        self.steps_done: Tensor
        self.progress: Tensor
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("progress", torch.zeros(()))  # drives τ_t in training_step

    def teacher_temp(self) -> float:
        c = self.cfg
        return linear_warmup(
            c.warmup_teacher_temp, c.teacher_temp, float(self.progress), c.teacher_temp_warmup
        )

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        B = batch["image"].shape[0]
        crops = self.views(batch["image"])  # [(2B, C, S_g, S_g), (V_l·B, C, S_l, S_l)]
        feats = [self.encoder(x) for x in crops]  # once per resolution: (2B, D), (V_l·B, D)
        frozen = int(self.steps_done) < self.freeze_steps
        student = self.head(torch.cat(feats), frozen_last=frozen)  # (V·B, K)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_encoder(crops[0]))  # (2B, K)
        student = student.view(-1, B, student.shape[-1])  # (V, B, K), global crops first
        teacher = teacher.view(2, B, teacher.shape[-1])  # (2, B, K)
        temp = self.teacher_temp()
        with torch.no_grad():  # before the loss moves the center
            entropy = torch.special.entr(self.loss.teacher_probs(teacher, temp)).sum(-1).mean()
        loss = self.loss(student, teacher, temp)
        # teacher_entropy near log K: the teacher is uniform (centering wins, lower τ_t);
        # near 0: every image on one prototype (sharpening wins). The loss is at least it.
        return {
            "loss": loss,
            "features": feats[0][:B].detach(),
            "teacher_temp": torch.tensor(temp),
            "teacher_entropy": entropy,
        }

    def on_step_end(self, progress: float) -> None:
        """Count the step, record progress for τ_t, and move the teacher by EMA."""
        self.steps_done += 1
        self.progress.fill_(progress)
        m = cosine_momentum(self.cfg.momentum, self.cfg.final_momentum, progress)
        ema_update(self.teacher_encoder, self.encoder, m)
        ema_update(self.teacher_head, self.head, m)
