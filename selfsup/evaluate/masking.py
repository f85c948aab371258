"""What a masked image model sees and what it fills in: original / masked / reconstruction.

For a run of MAE (He et al. 2022, figure 2), SimMIM or BEiT, ``show_masking`` rebuilds the
method from the run's ``config.yaml`` and latest checkpoint, hides patches of a few images
with the method's own masking (seeded), and draws one row per image:

- original: the prepared image, back in [0, 1];
- masked: the hidden patches in flat pale blue;
- reconstruction:
  - MAE: the predicted hidden patches, de-normalised with each target patch's own mean and
    std when the run used ``norm_pix_loss`` (as MAE's visualisation does), pasted among the
    visible original patches;
  - SimMIM: the predicted pixels of the hidden patches among the visible original ones;
  - BEiT: the run's tokenizer decoding the true codes of the visible patches and the ViT's
    argmax codes of the hidden ones (so the visible part shows what the tokenizer keeps).

For a (denoising) autoencoder run the middle column is the corrupted input the encoder sees
(masked pixels in pale blue, or the noisy image) and the reconstruction is the whole decoded
image: it comes from the pooled embedding alone, so no original pixel is pasted back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from selfsup.errors import SelfsupError
from selfsup.losses.mae import patchify, unpatchify
from selfsup.views.image import MEAN, STD, prepare

PATCH_METHODS = ("mae", "simmim", "beit")
MASKED_METHODS = (*PATCH_METHODS, "autoencoder")
MASK_COLOUR = (0.55, 0.65, 0.85)
"""RGB of a hidden patch in the masked column: a pale blue, which no grey level of a
1-channel image can be mistaken for (MAE's figures use grey on colour images)."""
CELL_INCHES = 1.6
DPI = 100


def show_masking(
    run: str | Path,
    out: str | Path,
    *,
    images: int = 6,
    data: str | None = None,
    split: str = "test",
    seed: int = 0,
) -> Path:
    """Write a PNG of ``images`` rows (original / masked / reconstruction) for an MAE,
    SimMIM or BEiT run folder, from its latest checkpoint; masks are drawn with ``seed``.
    ``data`` defaults to the run's own data set; ``split`` is "train" or "test"."""
    from lightning_fabric import Fabric

    from selfsup.config import make_config
    from selfsup.engine import checkpoint
    from selfsup.methods import build_method
    from selfsup.modalities import modality_of_data
    from selfsup.pretraining import build_run_encoder, training_data

    if images < 1:
        raise SelfsupError(f"images must be a positive number, got {images}")
    run_dir = Path(run)
    if not (run_dir / "config.yaml").is_file():
        raise SelfsupError(
            f"{str(run)!r} is not a run folder (it has no config.yaml): give a folder made by "
            "`selfsup pretrain`"
        )
    cfg = make_config(run_dir / "config.yaml")
    if cfg.method not in MASKED_METHODS:
        raise SelfsupError(
            f"show-masking needs an mae, simmim, beit or autoencoder run, and {str(run)!r} is a "
            f"{cfg.method} run"
        )
    path = checkpoint.latest_checkpoint(run_dir)
    if path is None:
        raise SelfsupError(
            f"{str(run)!r} holds no checkpoint: train it longer than train.checkpoint_every "
            "steps, or let it finish (the last step is always saved)"
        )
    _, info = training_data(cfg, run_dir, world=1)
    method = build_method(cfg.method, cfg.method_args, build_run_encoder(cfg, info), info)
    fabric = Fabric(accelerator="cpu", devices=1)
    extra = checkpoint.load(fabric, path, {"method": method})
    method.eval()

    spec = data or cfg.data.name
    modality = modality_of_data(spec)
    options = modality.eval_options({"image_size": info.image_size}, None)
    dataset = modality.load(spec, split, folder=run_dir, **options)  # type: ignore[arg-type]
    if dataset.channels != info.channels:
        raise SelfsupError(
            f"{spec!r} has {dataset.channels}-channel images but the run was trained on "
            f"{info.channels}-channel ones: pass --data with images like the run's"
        )
    count = min(images, len(dataset))
    raw = torch.stack([dataset[i][modality.input_key] for i in range(count)])  # uint8 (B, C, H, W)
    x = prepare(raw, channels_last=False, channels=info.channels)  # (B, C, H, W) normalised
    panels = autoencoder_panels if cfg.method == "autoencoder" else masking_panels
    original, masked, recon, mask = panels(method, cfg.method, x, seed)
    step = int(extra.get("step", -1))
    title = f"{run_dir.name}: {cfg.method}, step {step}, {spec} {split}"
    fig = masking_figure(
        original, masked, recon, title, hidden=float(mask.float().mean()) if mask.any() else None
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(out))
    return out


@torch.no_grad()
def masking_panels(
    method: Any, name: str, x: Tensor, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Prepared images x (B, C, H, W) of a built ``mae``, ``simmim`` or ``beit`` method
    ``name`` -> (original, masked, reconstruction), each (B, C, H, W) in [0, 1] (the masked
    one in RGB, (B, 3, H, W)), and the mask (B, N).

    The mask comes from ``method.sample_mask`` under ``torch.manual_seed(seed)`` (the global
    random state is restored afterwards); the prediction from ``method.reconstruct``."""
    if name not in PATCH_METHODS:
        raise SelfsupError(f"show-masking needs an mae, simmim or beit run, not {name}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mask = method.sample_mask(x.shape[0], x.device)  # (B, N), True = hidden
    patch = int(method.patch)
    prediction, _ = method.reconstruct(x, mask)
    if name == "mae":  # predicted patches (B, N, patch²·C)
        target = patchify(x, patch).float()  # (B, N, P)
        prediction = prediction.float()
        if method.cfg.norm_pix_loss:  # undo the per-patch normalisation of the target
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            prediction = prediction * (var + method.loss.eps).sqrt() + mean
        prediction = unpatchify(prediction, patch, x.shape[1])  # (B, C, H, W)
    hidden = pixel_mask(mask, patch, x.shape[-2:])  # (B, 1, H, W)
    if name in ("mae", "simmim"):  # the paper's figures: visible patches are the originals
        prediction = torch.where(hidden, prediction.float(), x.float())
    original = to_display(x)
    colour = torch.tensor(MASK_COLOUR, device=x.device).view(1, 3, 1, 1)
    rgb = original if original.shape[1] == 3 else original[:, :1].expand(-1, 3, -1, -1)
    masked = torch.where(hidden, colour, rgb)  # (B, 3, H, W)
    return original, masked, to_display(prediction), mask


@torch.no_grad()
def autoencoder_panels(
    method: Any, name: str, x: Tensor, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``masking_panels`` for an autoencoder: the corruption (``method.corrupt`` under
    ``seed``, the global random state restored), the decoding of its embedding, and the
    hidden components (B, C·H·W) (all False for Gaussian noise or none)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        corrupted = method.corrupt(x)  # (B, C, H, W)
    prediction = method.decoder(method.encoder(corrupted))  # (B, C, H, W)
    original = to_display(x)
    hidden = (corrupted == 0) & (x != 0) if method.cfg.noise == "masking" else x != x
    shown = to_display(corrupted)
    if method.cfg.noise == "masking":  # the hidden pixels in pale blue
        colour = torch.tensor(MASK_COLOUR, device=x.device).view(1, 3, 1, 1)
        rgb = shown if shown.shape[1] == 3 else shown[:, :1].expand(-1, 3, -1, -1)
        shown = torch.where(hidden.any(dim=1, keepdim=True), colour, rgb)  # (B, 3, H, W)
    return original, shown, to_display(prediction), hidden.flatten(1)


def pixel_mask(mask: Tensor, patch: int, size: tuple[int, int] | torch.Size) -> Tensor:
    """Patch mask (B, N) over a row-major grid -> pixel mask (B, 1, H, W), True = hidden."""
    gh, gw = size[0] // patch, size[1] // patch
    grid = mask.view(mask.shape[0], 1, gh, gw)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def to_display(x: Tensor) -> Tensor:
    """Normalised images (the encoders' input, ``views.image.normalize``) -> [0, 1]."""
    return (x.float() * STD + MEAN).clamp(0.0, 1.0)


def masking_figure(
    original: Tensor, masked: Tensor, recon: Tensor, title: str = "", hidden: float | None = None
) -> Figure:
    """One row per image, columns original / masked / reconstruction; (B, C, H, W) in
    [0, 1]; ``hidden``, the share of hidden patches, goes into the masked column's title."""
    B = original.shape[0]
    fig = Figure(figsize=(CELL_INCHES * 3, CELL_INCHES * B + 0.3), dpi=DPI, layout="constrained")
    axes = fig.subplots(B, 3, squeeze=False)
    names = ["original", "masked" if hidden is None else f"masked ({hidden:.0%})", "reconstruction"]
    for row in range(B):
        for col, panel in enumerate((original, masked, recon)):
            image = panel[row].permute(1, 2, 0).cpu().numpy()  # (H, W, C)
            ax = axes[row, col]
            if image.shape[2] == 1:
                ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(image)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(names[col], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
