"""GPT-style causal language modelling: predict every next token from the ones before it.

Radford et al. "Improving Language Understanding by Generative Pre-Training." 2018 (GPT);
"Language Models are Unsupervised Multitask Learners." 2019 (GPT-2: pre-LN blocks, the
output layer tied to the token embedding). ``selfsup generate RUN`` samples from the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.data.info import DataInfo
from selfsup.data.tokenizer import special_ids
from selfsup.encoders.transformer import check_token_encoder, lm_logits
from selfsup.errors import SelfsupError

__all__ = ["CLM", "CLMConfig", "lm_logits"]


@dataclass
class CLMConfig:
    """Causal LM has no hyperparameters of its own: model size is the encoder's
    (``--encoder gpt-tiny``), context length is ``data.max_length``, the rest is the engine's."""


class CLM(nn.Module):
    """A causal encoder whose tied embedding is the output layer; next-token cross-entropy
    over every non-pad target position."""

    def __init__(self, cfg: CLMConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        check_token_encoder(encoder, "clm")
        if info.modality != "text":
            raise SelfsupError("clm needs text data (--data fortunes, gcide or text:PATH)")
        if not getattr(encoder, "causal", False):
            raise SelfsupError(
                "clm needs a causal encoder, or every position would see its target: use "
                "--encoder gpt-tiny (or --set encoder_args.causal=true)"
            )
        self.cfg = cfg
        self.encoder = encoder
        self.pad_id = special_ids(info.tokenizer)["[PAD]"]

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = batch["tokens"]  # (B, L): [CLS] t1 … tn [SEP] [PAD]…
        states = self.encoder.forward_tokens(tokens)  # (B, L, D)
        targets = tokens[:, 1:]  # (B, L-1): the token after each position
        scored = targets != self.pad_id  # (B, L-1); the first token is predicted from [CLS]
        # The output layer runs on the scored positions only (no logits for padding).
        logits = states[:, :-1][scored] @ self.encoder.token_embed.weight.T  # (M, V)
        total = F.cross_entropy(logits.float(), targets[scored], reduction="sum")
        # per scored token of every process's share under DDP
        loss = distributed.mean_over_processes(total, scored.sum())
        features = states[:, :-1][scored]  # (M, D): the token states the loss trains
        return {"loss": loss, "features": features.detach()}

    def on_step_end(self, progress: float) -> None:
        del progress
