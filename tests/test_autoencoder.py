"""The denoising autoencoder: exact corruption by seed, the loss against a slow reference, it
learns on digits, resumes exactly, and bad settings or data without a decoder are one line.

Every registered method's shared checks (a step, bf16 autocast, learning on a fixed batch,
2-process DDP, FSDP) run it through tests/method_setups.py's ``cases()``."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric import Fabric
from test_cli import one_error_line

from selfsup.api import make_config
from selfsup.cli import main
from selfsup.data import load_images
from selfsup.encoders import build_encoder
from selfsup.engine import train
from selfsup.engine.checkpoint import latest_checkpoint
from selfsup.errors import SelfsupError
from selfsup.methods import DataInfo, build_method, method_spec
from selfsup.methods.autoencoder import gaussian_noise, mask_components
from selfsup.modalities import MODALITIES
from selfsup.modalities.image_decoder import ImageDecoder


def _method(noise: str = "masking", level: float | None = None, size: int = 8, channels: int = 1):
    info = DataInfo(channels, size)
    encoder = build_encoder("convnet", in_channels=channels, image_size=size, width=8)
    args = {"noise": noise} if level is None else {"noise": noise, "level": level}
    return build_method("autoencoder", args, encoder, info)


def _slow_mask(x: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """Draw the same scores, then hide each sample's lowest-scored components one by one."""
    torch.manual_seed(seed)
    scores = torch.rand(x.shape[0], x[0].numel())
    out = x.clone()
    hidden = round(share * x[0].numel())
    for b in range(x.shape[0]):
        flat = out[b].view(-1)
        order = sorted(range(flat.numel()), key=lambda i: float(scores[b, i]))
        for i in order[:hidden]:
            flat[i] = 0.0
    return out


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (3, 3, 5, 5), (2, 7)])
def test_masking_hides_exactly_the_share_of_every_sample(share, shape):
    x = torch.rand(shape) + 1.0  # no component is 0 before masking
    torch.manual_seed(3)
    masked = mask_components(x, share)
    per_sample = x[0].numel()
    hidden = (masked == 0).flatten(1).sum(dim=1)
    assert hidden.tolist() == [round(share * per_sample)] * shape[0]
    kept = masked != 0
    assert torch.equal(masked[kept], x[kept])  # the rest untouched
    assert torch.equal(masked, _slow_mask(x, share, seed=3))
    torch.manual_seed(3)
    assert torch.equal(mask_components(x, share), masked)  # the same seed, the same mask


def test_masking_draws_a_different_mask_per_sample_and_per_seed():
    x = torch.ones(8, 1, 8, 8)
    torch.manual_seed(0)
    a = mask_components(x, 0.25) == 0
    torch.manual_seed(1)
    b = mask_components(x, 0.25) == 0
    assert not torch.equal(a, b) and not torch.equal(a[0], a[1])


@pytest.mark.parametrize("std", [0.1, 0.4, 2.0])
def test_gaussian_noise_has_the_configured_std_by_seed(std):
    x = torch.rand(64, 3, 16, 16)  # 49,152 components
    torch.manual_seed(5)
    noisy = gaussian_noise(x, std)
    noise = noisy - x
    assert abs(float(noise.std()) - std) < 0.02 * std
    assert abs(float(noise.mean())) < 0.02 * std
    torch.manual_seed(5)
    assert torch.equal(gaussian_noise(x, std), noisy)
    torch.manual_seed(6)
    assert not torch.equal(gaussian_noise(x, std), noisy)


@pytest.mark.parametrize("noise", ["masking", "gaussian", "none"])
def test_loss_equals_a_slow_reference(noise):
    torch.manual_seed(0)
    method = _method(noise)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    torch.manual_seed(7)
    loss = method.training_step({"image": images})["loss"]

    x = (images.float() / 255 - 0.5) / 0.25  # the normalised pixels
    if noise == "masking":
        corrupted = _slow_mask(x, 0.25, seed=7)
    elif noise == "gaussian":
        torch.manual_seed(7)
        corrupted = x + 0.4 * torch.randn(x.shape)
    else:
        corrupted = x
    with torch.no_grad():
        reconstruction = method.decoder(method.encoder(corrupted))
    total = 0.0
    for value, target in zip(reconstruction.flatten().tolist(), x.flatten().tolist()):
        total += (value - target) ** 2
    assert float(loss.detach()) == pytest.approx(total / x.numel(), rel=1e-5)


@pytest.mark.parametrize("size", [1, 3, 8, 27, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_image_decoder_returns_the_run_s_image_shape(size, channels):
    decoder = ImageDecoder(16, channels, size, width=16)
    assert decoder(torch.randn(2, 16)).shape == (2, channels, size, size)


def test_the_method_s_modalities_are_those_that_provide_a_decoder():
    spec = method_spec("autoencoder")
    image = DataInfo(1, 8)
    other = {"image": image}
    able = sorted(n for n in MODALITIES if MODALITIES[n].decoder(other.get(n, image), 8))
    assert able == sorted(spec.modalities)


def _digits(split: str, n: int) -> torch.Tensor:
    data = load_images("digits", split)
    return torch.stack([data[i]["image"] for i in range(n)])


def test_few_steps_on_digits_reduce_the_reconstruction_loss():
    torch.manual_seed(0)
    images = _digits("train", 512)  # uint8 (512, 1, 8, 8)
    held_out = {"image": _digits("test", 256)}
    method = _method("masking")
    opt = torch.optim.AdamW(method.parameters(), lr=3e-3)

    def held_out_loss() -> float:
        torch.manual_seed(99)  # the same masks before and after
        with torch.no_grad():
            return float(method.training_step(held_out)["loss"])

    before = held_out_loss()
    for step in range(40):
        batch = {"image": images[(step * 64) % 512 :][:64]}
        loss = method.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.6 * before, (before, after)


class Interrupt(Exception):
    pass


def _tiny_run(tmp):
    cfg = make_config(
        method="autoencoder",
        data="digits",
        encoder_args={"width": 8},
        train={"batch_size": 32, "max_steps": 6, "checkpoint_every": 3, "progress": False},
        out=str(tmp),
    )
    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    method = build_method("autoencoder", {}, encoder, DataInfo(1, 8))
    data = load_images("digits", "train")
    return Fabric(accelerator="cpu", devices=1, precision="32-true"), cfg, method, data


def test_an_interrupted_run_resumes_with_identical_losses(tmp_path):
    full = train(*_tiny_run(tmp_path / "a"), tmp_path / "a")

    def crash(step: int, loss: float) -> None:
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(*_tiny_run(tmp_path / "b"), tmp_path / "b", on_step=crash)
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt is not None and ckpt.name == "step-000003.ckpt"
    torch.manual_seed(1234)  # the resumed masks must come from the checkpoint's RNG
    resumed = train(*_tiny_run(tmp_path / "b"), tmp_path / "b", resume_from=ckpt)
    for step in range(4, 7):
        assert resumed.losses[step] == full.losses[step], f"step {step}"


@pytest.mark.parametrize(
    "args, message",
    [
        ({"level": 1.0}, r"masking level \(share hidden\) must lie in \[0, 1\), got 1.0"),
        ({"level": -0.1}, "masking level"),
        ({"noise": "gaussian", "level": -1.0}, "gaussian level"),
        ({"noise": "gaussian", "level": float("inf")}, "gaussian level"),
    ],
)
def test_a_corruption_level_out_of_range_is_one_line(args, message):
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    with pytest.raises(SelfsupError, match=message) as error:
        build_method("autoencoder", args, encoder, DataInfo(1, 8))
    assert "\n" not in str(error.value)


def test_the_cli_names_a_bad_level_in_one_line(capsys):
    argv = ["pretrain", "--method", "autoencoder", "--data", "digits", "--no-eval"]
    assert main([*argv, "--set", "method_args.level=1.5"]) == 2
    assert "masking level" in one_error_line(capsys)


def test_data_without_a_decoder_is_refused_in_one_line(capsys):
    assert main(["pretrain", "--method", "autoencoder", "--data", "fortunes"]) == 2
    assert "learns from image but 'fortunes' is text data" in one_error_line(capsys)
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    with pytest.raises(
        SelfsupError, match="decoder that text data does not provide: use it on image"
    ):
        build_method("autoencoder", {}, encoder, DataInfo(modality="text", vocab_size=10))


def test_show_masking_draws_the_corrupted_input_and_the_decoding(tmp_path):
    from matplotlib.pyplot import imread

    from selfsup.api import pretrain
    from selfsup.evaluate.masking import autoencoder_panels, show_masking

    method = _method("masking")
    x = torch.randn(3, 1, 8, 8)
    original, masked, recon, hidden = autoencoder_panels(method, "autoencoder", x, seed=4)
    assert masked.shape == (3, 3, 8, 8) and recon.shape == original.shape == (3, 1, 8, 8)
    assert hidden.sum(dim=1).tolist() == [16, 16, 16]  # 25% of 64 pixels
    torch.manual_seed(4)
    assert torch.equal(hidden, mask_components(x, 0.25).flatten(1) == 0)
    noisy = autoencoder_panels(_method("gaussian"), "autoencoder", x, seed=4)
    assert not noisy[3].any() and noisy[1].shape == (3, 1, 8, 8)

    run = pretrain(
        method="autoencoder",
        data="digits",
        encoder_args={"width": 8},
        train={"batch_size": 32, "max_steps": 2, "progress": False},
        out=str(tmp_path / "run"),
        evaluate=False,
    )
    out = show_masking(run.run_dir, tmp_path / "ae.png", images=2, seed=1)
    assert imread(out).shape[0] > 0
