"""LoRA fine-tuning with Hugging Face ``peft``: adapt a frozen encoder through low-rank updates.

LoRA (Hu et al. 2021, arXiv:2106.09685) freezes every pretrained weight W and learns
W + (alpha / r) · B A with A (r × in) and B (out × r), B starting at zero, so training
starts from the pretrained encoder exactly and touches a small share of the parameters.
selfsup does not implement it: ``peft`` wraps the layers, and this module only says which
layers (`lora_targets`), trains the wrapped encoder on the engine like any fine-tuning
(``selfsup.evaluate.finetune``, ``adapter=``), and saves the adapter on its own
(safetensors) or merged into a plain encoder that loads like any other export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from selfsup.errors import SelfsupError

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
ADAPTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layer types given an adapter; peft implements LoRA for each (for convolutions, B A is a
kernel of the layer's size)."""


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise SelfsupError(
            "LoRA needs the peft library: pip install 'selfsup[lora]' (or pip install peft)"
        ) from None
    return peft


def lora_targets(encoder: nn.Module) -> list[str]:
    """Names of the layers LoRA adapts: every linear and convolution layer of the encoder,
    which for a ViT or text Transformer are the attention projections (qkv, proj), the MLP
    and the patch embedding, and for a CNN its convolutions."""
    names = [name for name, m in encoder.named_modules() if isinstance(m, ADAPTED_LAYERS)]
    if not names:
        raise SelfsupError(
            f"{type(encoder).__name__} has no linear or convolution layer for LoRA to adapt; "
            "fine-tune it instead (--protocol finetune)"
        )
    return names


def add_lora(encoder: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> Any:
    """``encoder`` with LoRA adapters of rank ``rank`` on `lora_targets`: a ``peft``
    ``PeftModel`` whose only trainable parameters are the adapters. It is changed in place
    (pass a copy); ``embed_dim`` and the forward contract stay.

    Args:
        rank: r; 8 is the paper's common choice, 4-16 work, more adapts more.
        alpha: the update is scaled by alpha / r; 2 × r is a common default.
        dropout: dropout on the adapter's input; 0 works, 0.05-0.1 when the adapted
            model overfits a small labelled set.
    """
    if rank < 1 or not alpha > 0 or not 0 <= dropout < 1:
        raise SelfsupError(
            f"LoRA needs rank ≥ 1, alpha > 0 and dropout in [0, 1), got {rank}, {alpha}, "
            f"{dropout}; rank 8 and alpha 16 work"
        )
    peft = _peft()
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(encoder),
        bias="none",
    )
    adapted = peft.get_peft_model(encoder, config)
    adapted.embed_dim = encoder.embed_dim
    return adapted


def trainable_share(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``model``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_adapter(adapted: Any, folder: str | Path, **info: Any) -> Path:
    """Write the adapter weights alone (``adapter.safetensors``) and how to apply them
    (``adapter.json``: rank, alpha, the adapted layers, and ``info``) into ``folder``."""
    from safetensors.torch import save_file

    peft = _peft()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = peft.get_peft_model_state_dict(adapted)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()}, folder / ADAPTER_WEIGHTS
    )
    config = adapted.peft_config["default"]
    spec = {
        "rank": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "target_modules": sorted(config.target_modules),
        **info,
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(spec, indent=2) + "\n")
    return folder / ADAPTER_WEIGHTS


def merge_lora(adapted: Any) -> nn.Module:
    """The plain encoder with each adapter folded into its layer (W <- W + alpha/r · B A):
    the same module class as before LoRA, same features, nothing of peft left."""
    merged = adapted.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged.eval()
