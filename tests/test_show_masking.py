"""`show-masking`: original / masked / reconstruction PNGs of MAE, SimMIM and BEiT runs."""

from __future__ import annotations

import pytest
import torch
from matplotlib.image import imread

from selfsup.api import pretrain
from selfsup.encoders import build_encoder
from selfsup.errors import SelfsupError
from selfsup.evaluate.masking import MASK_COLOUR, masking_panels, show_masking, to_display
from selfsup.losses.mae import patchify
from selfsup.methods import METHODS, DataInfo, MethodSpec
from selfsup.methods.beit import BEiT, BEiTConfig
from selfsup.methods.mae import MAE, MAEConfig
from selfsup.methods.simmim import SimMIM, SimMIMConfig

TINY = {
    "encoder": "vit-tiny",
    "encoder_args": {"patch_size": 2, "depth": 1, "embed_dim": 32, "num_heads": 2},
    "data": {"name": "digits"},
    "train": {"batch_size": 32, "max_steps": 3, "progress": False, "checkpoint_every": 1000},
}


def _vit(channels: int = 1, size: int = 8):
    return build_encoder(
        "vit-tiny",
        in_channels=channels,
        image_size=size,
        patch_size=2,
        depth=1,
        embed_dim=32,
        num_heads=2,
    )


def test_show_masking_writes_a_png_for_a_tiny_mae_run(tmp_path):
    run = pretrain(method="mae", out=str(tmp_path / "run"), evaluate=False, **TINY)
    out = show_masking(run.run_dir, tmp_path / "figs" / "mae.png", images=3, seed=1)
    assert out == tmp_path / "figs" / "mae.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picture = imread(out)  # (H, W, 4)
    assert picture.shape[0] > picture.shape[1]  # 3 rows of 3 square panels, plus a title
    again = show_masking(run.run_dir, tmp_path / "again.png", images=3, seed=1)
    assert again.read_bytes() == out.read_bytes()  # seeded masks: the same figure


def test_show_masking_on_a_beit_run(tmp_path, monkeypatch):
    if "beit" not in METHODS:  # until the registry lists it
        spec = MethodSpec(BEiTConfig, BEiT, "BEiT", "Bao et al. 2022, arXiv:2106.08254")
        monkeypatch.setitem(METHODS, "beit", spec)
    run = pretrain(method="beit", out=str(tmp_path / "run"), evaluate=False, **TINY)
    out = show_masking(run.run_dir, tmp_path / "beit.png", images=2, split="train")
    assert imread(out).shape[0] > 0


def test_another_method_is_refused(tmp_path):
    run = tmp_path / "simclr-run"
    run.mkdir()
    (run / "config.yaml").write_text("method: simclr\ndata:\n  name: digits\n")
    with pytest.raises(
        SelfsupError, match="show-masking needs an mae, simmim, beit or autoencoder run"
    ):
        show_masking(run, tmp_path / "x.png")
    with pytest.raises(SelfsupError, match="not a run folder"):
        show_masking(tmp_path / "nowhere", tmp_path / "x.png")


def _images(channels: int = 1, batch: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.rand(batch, channels, 8, 8) - 0.5) * 3  # normalised-space values


@pytest.mark.parametrize("norm_pix", [True, False])
def test_a_perfect_mae_reconstructs_the_original(norm_pix):
    """A model predicting exactly its training target (per-patch normalised pixels with
    norm_pix) must show the original image: de-normalisation and pasting are right."""
    info = DataInfo(channels=3, image_size=8)
    mae = MAE(MAEConfig(norm_pix_loss=norm_pix, decoder_dim=32, decoder_heads=2), _vit(3), info)
    x = _images(3)

    def perfect(images, mask):
        target = patchify(images, 2)
        if norm_pix:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target, None

    mae.reconstruct = perfect
    original, masked, recon, mask = masking_panels(mae, "mae", x, seed=0)
    assert mask.float().mean() == pytest.approx(0.75)
    torch.testing.assert_close(recon, original, atol=1e-4, rtol=0)
    torch.testing.assert_close(original, to_display(x))
    # the masked panel: the colour at hidden patches, the original elsewhere
    hidden = mask.view(4, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    colour = torch.tensor(MASK_COLOUR).view(1, 3, 1, 1).expand(4, 3, 8, 8)
    torch.testing.assert_close(
        masked[hidden.expand(-1, 3, -1, -1)], colour[hidden.expand(-1, 3, -1, -1)]
    )
    assert torch.equal(
        masked[~hidden.expand(-1, 3, -1, -1)], original[~hidden.expand(-1, 3, -1, -1)]
    )


def test_simmim_shows_visible_originals_and_predicted_hidden_pixels():
    simmim = SimMIM(SimMIMConfig(mask_patch=1), _vit(), DataInfo(channels=1, image_size=8))
    x = _images()
    simmim.reconstruct = lambda images, mask: (torch.full_like(images, 10.0), None)
    original, masked, recon, mask = masking_panels(simmim, "simmim", x, seed=3)
    hidden = mask.view(4, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert (recon[hidden] == 1.0).all()  # 10 in normalised space is white
    assert torch.equal(recon[~hidden], original[~hidden])
    assert masked.shape == (4, 3, 8, 8)  # drawn in colour, the hidden patches tinted


def test_masks_follow_the_seed_and_leave_the_global_random_state_alone():
    beit = BEiT(
        BEiTConfig(num_codes=16, code_dim=4, tokenizer_width=8),
        _vit(),
        DataInfo(channels=1, image_size=8),
    )
    x = _images()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    *_, a = masking_panels(beit.eval(), "beit", x, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    *_, b = masking_panels(beit, "beit", x, seed=5)
    *_, c = masking_panels(beit, "beit", x, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    original, _, recon, _ = masking_panels(beit, "beit", x, seed=5)
    assert recon.shape == original.shape and 0 <= float(recon.min()) <= float(recon.max()) <= 1
