"""Denoising autoencoder: corrupt the input, encode it to the encoder's pooled embedding (the
bottleneck) and decode the clean input back from that vector alone.

Vincent, Larochelle, Bengio, Manzagol. "Extracting and Composing Robust Features with
Denoising Autoencoders." ICML 2008. (Gaussian noise: Vincent et al., JMLR 11, 2010.)

The oldest baseline of every table: nothing but reconstruction. The method names no kind of
data: the data's modality turns a batch into the encoder's float input (``to_input``) and
provides the decoder from D back to that input (``Modality.decoder``); a modality that cannot
reconstruct its input (tokens, graphs) provides none and the method refuses it. Corruption
and loss work on the encoder's input as a tensor of components (for images: normalised pixels
of every channel), so they are the paper's whatever the modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError

DEFAULT_LEVEL = {"masking": 0.25, "gaussian": 0.4, "none": 0.0}
"""The corruption level a run gets when it names none (see ``AutoencoderConfig.level``)."""


@dataclass
class AutoencoderConfig:
    """The denoising autoencoder's choices; the 2008 paper's masking noise by default."""

    noise: Literal["masking", "gaussian", "none"] = "masking"
    """``masking``: a fixed share of each input's components set to 0 (the 2008 paper's
    "masking noise"); ``gaussian``: additive isotropic noise (the 2010 paper's other choice);
    ``none``: a plain autoencoder (Bengio et al. 2007), whose bottleneck alone regularises it."""
    level: float | None = None
    """Masking: the share ν of components hidden in every input, in [0, 1); None = 0.25 (the
    middle of the 2008 paper's {10, 25, 40}%, where its features were best on MNIST variants;
    raise it towards 0.5 when the loss falls fast and features stay poor). Gaussian: the
    noise std in the encoder input's units, ≥ 0; None = 0.4, which for images normalised with
    std 0.25 is σ = 0.1 on [0, 1] pixels (the 2010 paper searched σ in 0.05-0.5)."""

    def resolved_level(self) -> float:
        return DEFAULT_LEVEL[self.noise] if self.level is None else float(self.level)

    def validate(self) -> None:
        if self.noise not in DEFAULT_LEVEL:
            raise SelfsupError(
                f"noise must be one of {', '.join(DEFAULT_LEVEL)}, got {self.noise!r}"
            )
        level = self.resolved_level()
        if self.noise == "masking" and not 0 <= level < 1:
            raise SelfsupError(f"masking level (share hidden) must lie in [0, 1), got {level}")
        if self.noise == "gaussian" and not 0 <= level < float("inf"):
            raise SelfsupError(f"gaussian level (noise std) must be finite and ≥ 0, got {level}")


def mask_components(x: Tensor, share: float) -> Tensor:
    """x (B, ...) with exactly round(share · F) of each sample's F components set to 0, chosen
    uniformly without replacement from the global RNG (the 2008 paper's "a fixed number νd of
    components are chosen at random, and their value is forced to 0")."""
    flat = x.flatten(1)  # (B, F)
    hidden = round(share * flat.shape[1])
    if hidden == 0:
        return x
    scores = torch.rand(flat.shape, device=x.device)  # (B, F)
    chosen = scores.argsort(dim=1)[:, :hidden]  # (B, hidden)
    return flat.scatter(1, chosen, 0.0).view_as(x)


def gaussian_noise(x: Tensor, std: float) -> Tensor:
    """x + N(0, std²) per component, from the global RNG."""
    return x + std * torch.randn_like(x)


class Autoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        from selfsup.methods import method_spec
        from selfsup.modalities import get_modality

        cfg.validate()
        modality = get_modality(info.modality)
        decoder = modality.decoder(info, int(encoder.embed_dim))
        if decoder is None:
            able = method_spec("autoencoder").modalities  # tests/test_autoencoder.py: they agree
            raise SelfsupError(
                f"the autoencoder needs a decoder that {info.modality} data does not provide: "
                f"use it on {' or '.join(able)} data"
            )
        self.cfg = cfg
        self.level = cfg.resolved_level()
        self.encoder = encoder
        self.decoder = decoder
        self.input_key = modality.input_key
        self.to_input = modality.to_input(encoder)

    def corrupt(self, x: Tensor) -> Tensor:
        """The corrupted copy of the encoder's input x that the encoder sees."""
        if self.cfg.noise == "masking":
            return mask_components(x, self.level)
        if self.cfg.noise == "gaussian":
            return gaussian_noise(x, self.level)
        return x

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = self.to_input(batch[self.input_key])  # (B, ...) float, e.g. (B, C, H, W)
        z = self.encoder(self.corrupt(x))  # (B, D): the bottleneck
        reconstruction = self.decoder(z)  # (B, ...) like x
        loss = F.mse_loss(reconstruction.float(), x.float())
        return {"loss": loss, "features": z.detach()}

    def on_step_end(self, progress: float) -> None:
        """The autoencoder has no schedule of its own."""
