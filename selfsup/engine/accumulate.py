"""Batches larger than memory: gradient accumulation, and the gradient cache for contrastive
losses.

Plain accumulation splits the batch into micro-batches and sums their gradients. That is
exact for losses that are a mean over samples, but not for contrastive losses, whose every
term depends on the whole batch (NT-Xent's negatives): 16 micro-batches of 256 give 16
losses with 255 negatives each, not one loss with 4,095.

The gradient cache (Gao, Zhang, Han, Callan, "Scaling Deep Contrastive Learning Batch Size
under Memory Limited Setup", 2021, arXiv:2101.06983) keeps the loss exact:

1. make the views of every micro-batch and embed them without a graph, keeping only the
   embeddings z (B, D) and the random state each micro-batch started from;
2. compute the loss on the whole z with a graph over z only, and take g = ∂loss/∂z;
3. from the saved random state, make each micro-batch's views again and embed them, this
   time with a graph, and back-propagate g's rows of that micro-batch into the weights.

Step 3 sums exactly the full-batch gradient, since ∂loss/∂θ = Σ_chunks (∂z_chunk/∂θ)ᵀ g_chunk,
while only one micro-batch's views and activations are alive at a time. Replaying the
random state gives the same views and the same dropout masks in steps 1 and 3. The views of
a micro-batch are drawn for that micro-batch, so they differ from the views the whole batch
would have drawn in one call: the same distribution, other samples of it. BatchNorm
normalises each micro-batch with its own statistics (as in step 1), so with BatchNorm the
result equals a full batch trained with ghost batch norm of the micro-batch size.

A method opts into the cache by offering three functions besides ``training_step``:
``make_views(batch) -> [view, ...]``, ``embed(view_chunk) -> (b, D)`` and
``contrast([z_view1, z_view2, ...]) -> loss``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from lightning_fabric import Fabric


def supports_gradient_cache(method: nn.Module) -> bool:
    return all(
        callable(getattr(method, name, None)) for name in ("make_views", "embed", "contrast")
    )


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def _split_batch(batch: dict[str, Any], size: int) -> list[dict[str, Any]]:
    n = next(v for v in batch.values() if isinstance(v, Tensor)).shape[0]
    return [
        {k: v[s] if isinstance(v, Tensor) and v.shape[:1] == (n,) else v for k, v in batch.items()}
        for s in _chunks(n, size)
    ]


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def accumulated_step(
    fabric: Fabric, model: nn.Module, batch: dict[str, Any], micro_batch: int
) -> dict[str, Tensor]:
    """``training_step`` on micro-batches of ``micro_batch`` samples; back-propagates
    loss_i · b_i / B for each, so the gradients are those of the batch-mean loss. Returns the
    step's outputs with the loss weighted the same way (detached) and the first chunk's
    features. Gradients are synchronised across processes once, on the last micro-batch."""
    parts = _split_batch(batch, micro_batch)
    total = sum(next(v for v in p.values() if isinstance(v, Tensor)).shape[0] for p in parts)
    loss_sum: Tensor | None = None
    first: dict[str, Tensor] = {}
    for i, part in enumerate(parts):
        size = next(v for v in part.values() if isinstance(v, Tensor)).shape[0]
        with fabric.no_backward_sync(model, enabled=i < len(parts) - 1):
            with fabric.autocast():  # Fabric's own only where DDP/FSDP wraps the module
                out = model.training_step(part)
            loss = out["loss"] * (size / total)
            if torch.isfinite(loss):
                fabric.backward(loss)
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        if i == 0:
            first = {k: v.detach() for k, v in out.items() if k != "loss"}
    return {**first, "loss": loss_sum}


def cached_step(
    fabric: Fabric, model: nn.Module, batch: dict[str, Any], micro_batch: int
) -> dict[str, Tensor]:
    """One gradient-cache step (see the module docstring); back-propagates into ``model``'s
    parameters and returns ``{"loss", "features"}`` with the loss detached and the first
    view's embeddings as features. A non-finite loss back-propagates nothing.

    Views are made per micro-batch and made again, from the same random state, in the second
    pass, so nothing of the size of the whole batch is kept but the embeddings (B, D)."""
    device = fabric.device
    # Only the graph-building embeds of the second pass go through the (DDP) wrapper, so
    # gradients are synchronised there; the rest runs on the plain module, same autocast.
    module = getattr(model, "module", model)
    parts = _split_batch(batch, micro_batch)
    states = []
    chunks: list[list[Tensor]] = []  # per micro-batch: V × (b, D)
    with torch.no_grad(), fabric.autocast():
        for part in parts:
            states.append(_rng_state(device))
            chunks.append([module.embed(view) for view in module.make_views(part)])
    after = _rng_state(device)
    leaves = [
        torch.cat([chunk[v] for chunk in chunks]).float().requires_grad_()  # (B, D)
        for v in range(len(chunks[0]))
    ]
    loss = module.contrast(leaves)
    features = leaves[0].detach()
    if not torch.isfinite(loss):
        return {"loss": loss.detach(), "features": features}
    # The loss's own parameters (a learned temperature or bias) take their gradient here,
    # from the whole batch's loss; the encoders' come from the second pass.
    own = [p for p in module.parameters() if p.requires_grad]
    found = torch.autograd.grad(loss, leaves + own, allow_unused=True)
    grads, own_grads = found[: len(leaves)], found[len(leaves) :]
    start, last = 0, len(parts) * len(leaves) - 1
    for c, part in enumerate(parts):
        _set_rng_state(states[c], device)
        views = module.make_views(part)  # the same views as in the first pass
        size = views[0].shape[0]
        for v, view in enumerate(views):
            with fabric.no_backward_sync(model, enabled=c * len(views) + v < last):
                with fabric.autocast():  # as in the first pass
                    z = model.embed(view)  # (b, D)
                fabric.backward(z, grads[v][start : start + size].to(z.dtype))
        start += size
    for p, g in zip(own, own_grads, strict=True):
        if g is not None:
            g = fabric.all_reduce(g, reduce_op="mean") if fabric.world_size > 1 else g
            p.grad = g if p.grad is None else p.grad + g
    _set_rng_state(after, device)
    return {"loss": loss.detach(), "features": features}
