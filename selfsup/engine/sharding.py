"""FSDP for every method: parameters, gradients and optimizer state sharded across processes.

``--strategy fsdp`` runs on Lightning Fabric's ``ModelParallelStrategy`` with a data-parallel
mesh only, which shards with PyTorch's ``fully_shard`` (FSDP2: each parameter a DTensor
split along its first dimension). Unlike Fabric's FSDPStrategy (FSDP1, CUDA only), it runs on
CPUs with gloo as well as on GPUs with NCCL, so the same code is tested on CPU.

Sharding unit: the whole method (encoder, heads, teacher, decoder) is one unit. A method's
``training_step`` uses parameters in ways a per-block split cannot see (data2vec reads
inside its blocks, CLM multiplies by the token embedding's weight, teachers are updated
outside any forward), and one unit keeps every method correct: the parameters are gathered
for the step and sharded again after it, while the gradients and the optimizer state (two
AdamW moments, twice the parameters) stay sharded: each process holds 1/P of them.

``fully_shard`` needs contiguous parameters, so under FSDP the engine leaves convolution
weights in the default memory format (``train.channels_last`` then only changes the inputs).

Checkpoints are written whole (one file, gathered to rank 0), so they load the same way as
DDP checkpoints, with ``weights_only=True``, and a run can resume under another strategy.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


def fsdp_strategy(processes: int) -> Any:
    """Fabric's FSDP2 strategy over ``processes`` data-parallel processes, one unit per method."""
    from lightning_fabric.strategies import ModelParallelStrategy

    return ModelParallelStrategy(
        parallelize_fn=shard_method,
        data_parallel_size=processes,
        tensor_parallel_size=1,
        save_distributed_checkpoint=False,
    )


CACHE_REFUSED = (
    "the gradient cache runs its first pass outside the sharded module, so it does not combine "
    "with --strategy fsdp: use --strategy ddp, or --set train.gradient_cache=false for plain "
    "accumulation"
)

FORWARD_METHODS = ("training_step", "embed")
"""Methods the engine calls in place of ``forward``: FSDP gathers the parameters around them."""


def shard_method(method: nn.Module, mesh: Any) -> nn.Module:
    """``fully_shard`` the whole method over the mesh's data-parallel dimension."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    sharded = fully_shard(method, mesh=mesh["data_parallel"])
    for name in FORWARD_METHODS:
        if callable(getattr(sharded, name, None)):
            register_fsdp_forward_method(sharded, name)
    return sharded


def full_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """The module's state dict with every sharded tensor gathered whole (a collective: every
    process must call it, in the same order)."""
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in module.state_dict().items()
    }


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())
