"""DINO's self-distillation loss with a centred, sharpened teacher.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in
Self-Supervised Vision Transformers." ICCV 2021. arXiv:2104.14294.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.precision import float32_forward


class DINOLoss(nn.Module):
    """Cross-entropy from the teacher's centred, sharpened distribution to the student's.

    With teacher outputs t_i (i over the V_t global crops), student outputs s_v (v over all
    V_s crops, the first V_t being the same global crops in the same order) and center c:

        P_t(i) = softmax((t_i − c) / τ_t)         P_s(v) = softmax(s_v / τ_s)
        L = 1/|pairs| · Σ_{(i, v): v ≠ i} mean_batch[ −Σ_k P_t(i)_k · log P_s(v)_k ]

    Centering (subtract c) keeps one prototype from dominating; sharpening (τ_t < τ_s) keeps
    the teacher from going uniform; the two balance each other and prevent collapse.

    After the loss, the center follows the teacher's batch mean:
    c ← m·c + (1 − m)·mean over the whole batch of t, averaged over every process, so two
    processes of B give the center of one process of 2B.

    Args:
        out_dim: K, the number of prototypes.
        student_temp: τ_s; 0.1 as in the paper.
        center_momentum: m; 0.9 as in the paper.

    Shapes: ``student`` (V_s, B, K), ``teacher`` (V_t, B, K) raw logits (teacher without
    gradient); returns a scalar.
    """

    center: Tensor

    def __init__(
        self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_probs(self, teacher: Tensor, teacher_temp: float) -> Tensor:
        """(V_t, B, K) logits -> (V_t, B, K) centred, sharpened probabilities, float32."""
        return ((teacher.detach().float() - self.center) / teacher_temp).softmax(dim=-1)

    @float32_forward
    def forward(self, student: Tensor, teacher: Tensor, teacher_temp: float) -> Tensor:
        V_t, V_s = teacher.shape[0], student.shape[0]
        if V_s < max(V_t, 2) or student.shape[1:] != teacher.shape[1:]:
            raise ValueError(
                f"student {tuple(student.shape)} must hold the teacher's {V_t} global crops "
                f"first (and 2 crops at least), with the teacher's (B, K) = "
                f"{tuple(teacher.shape[1:])}"
            )
        B = teacher.shape[1]
        q = self.teacher_probs(teacher, teacher_temp)  # (V_t, B, K)
        log_p = (student.float() / self.student_temp).log_softmax(dim=-1)  # (V_s, B, K)
        ce = -torch.einsum("ibk,vbk->iv", q, log_p) / B  # (V_t, V_s): batch-mean CE per pair
        same = torch.eye(V_t, V_s, dtype=torch.bool, device=ce.device)  # a crop vs itself
        loss = ce.masked_fill(same, 0.0).sum() / (V_t * V_s - V_t)
        self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """c ← m·c + (1 − m)·(mean of ``teacher`` (..., K) over every row of every process)."""
        batch_mean = teacher.detach().float().reshape(-1, teacher.shape[-1]).mean(dim=0)  # (K,)
        batch_mean = distributed.all_reduce_mean(batch_mean)  # equal batches: the global mean
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1 - self.center_momentum)
