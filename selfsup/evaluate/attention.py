"""DINO-style attention maps: where a ViT's [CLS] token looks in the last block, per head.

Caron et al. 2021 (arXiv:2104.14294), figure 1: self-supervised ViTs attend to the object
without ever being told what it is. ``attention_maps`` computes them; ``attention_figure``
draws a grid (image, one map per head, their mean); ``load_run_encoder`` finds a run's
encoder in its export or, failing that, its latest checkpoint.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from selfsup.errors import SelfsupError
from selfsup.export import SPEC, WEIGHTS, load_encoder
from selfsup.views import prepare

CELL_INCHES = 1.5
DPI = 100


def load_run_encoder(run: str | Path) -> nn.Module:
    """The encoder of a run folder (or exported files), in eval mode: the export if there is
    one, else rebuilt from the latest checkpoint (nothing is written into the run)."""
    path = Path(run)
    folder = path if path.is_dir() else path.parent
    if (folder / WEIGHTS).is_file() and (folder / SPEC).is_file():
        return load_encoder(folder)
    from selfsup.engine.checkpoint import latest_checkpoint
    from selfsup.pretraining import export_checkpoint

    if not path.is_dir() or latest_checkpoint(path) is None:
        raise SelfsupError(
            f"{str(run)!r} holds neither an exported encoder nor a checkpoint: "
            "give a run folder made by `selfsup pretrain`"
        )
    with tempfile.TemporaryDirectory() as tmp:
        export_checkpoint(path, out=tmp)
        return load_encoder(tmp)


def check_vit(encoder: nn.Module) -> None:
    if not callable(getattr(encoder, "get_last_attention", None)):
        raise SelfsupError(
            f"attention maps need a ViT encoder, and this run's is a {type(encoder).__name__}: "
            "pretrain with --encoder vit-tiny (e.g. --config fashion-mnist-dino-vit)"
        )


@torch.no_grad()
def attention_maps(encoder: nn.Module, images: Tensor) -> Tensor:
    """uint8 images (B, C, H, W) -> (B, heads, H, W): each head's [CLS] attention over the
    patches of the last block, nearest-upsampled from the patch grid to the image size."""
    check_vit(encoder)
    encoder = encoder.eval()
    x = prepare(images, channels_last=False)  # (B, C, H, W)
    attn = encoder.get_last_attention(x)  # (B, h, 1 + N, 1 + N)
    B, heads = attn.shape[:2]
    patch = int(getattr(encoder, "patch_size", 1))
    grid_h, grid_w = x.shape[2] // patch, x.shape[3] // patch
    cls = attn[:, :, 0, 1:].reshape(B, heads, grid_h, grid_w)  # (B, h, H/p, W/p)
    return F.interpolate(cls.float(), size=x.shape[2:], mode="nearest")  # (B, h, H, W)


def attention_figure(images: Tensor, maps: Tensor, title: str = "") -> Figure:
    """One row per image: the image, each head's map, then their mean (each map scaled to
    its own range). ``images`` uint8 (B, C, H, W), ``maps`` (B, heads, H, W)."""
    B, heads = maps.shape[:2]
    cols = heads + 2
    fig = Figure(figsize=(CELL_INCHES * cols, CELL_INCHES * B), dpi=DPI, layout="constrained")
    axes = fig.subplots(B, cols, squeeze=False)
    for row in range(B):
        image = images[row].permute(1, 2, 0).numpy()  # (H, W, C)
        panels = [maps[row, h] for h in range(heads)] + [maps[row].mean(dim=0)]
        axes[row, 0].imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray")
        for col, panel in enumerate(panels, start=1):
            axes[row, col].imshow(panel.numpy(), cmap="inferno")
        if row == 0:
            axes[row, 0].set_title("input", fontsize=8)
            for h in range(heads):
                axes[row, h + 1].set_title(f"head {h}", fontsize=8)
            axes[row, cols - 1].set_title("mean", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def write_attention_png(
    encoder: nn.Module, images: Tensor, out: str | Path, title: str = ""
) -> Path:
    """Draw ``attention_figure`` for ``images`` under ``encoder`` and save it as a PNG."""
    maps = attention_maps(encoder, images)
    fig = attention_figure(images.cpu(), maps.cpu(), title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(out))
    return out
