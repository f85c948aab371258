"""Video: VideoMAE's tube masks (exact count, the same in every slice), the cube order, the
encoder seeing only visible cubes, moving Fashion-MNIST's labels, bad clip files, and a tiny
run from the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.data.video import DIRECTIONS, load_video
from selfsup.encoders import build_encoder
from selfsup.errors import SelfsupError
from selfsup.losses.mae import cubify
from selfsup.methods import DataInfo, build_method
from selfsup.views.video import tube_mask

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("slices, spatial, ratio", [(4, 16, 0.9), (2, 64, 0.9), (3, 10, 0.75)])
def test_tube_mask_hides_the_same_exact_share_in_every_slice(slices, spatial, ratio):
    torch.manual_seed(0)
    mask = tube_mask(500, slices, spatial, ratio)
    assert mask.shape == (500, slices * spatial) and mask.dtype == torch.bool
    per_slice = mask.reshape(500, slices, spatial)  # time-major tokens
    hidden = math.floor(spatial * ratio + 0.5)
    assert (per_slice.sum(dim=2) == hidden).all()  # exactly round(S·ratio) in each slice
    assert (per_slice == per_slice[:, :1]).all()  # the same positions in every slice: tubes
    # every position is hidden about as often (k/S each)
    rate = per_slice[:, 0].float().mean(dim=0)
    assert (rate - hidden / spatial).abs().max() < 0.1


def test_cubify_matches_the_loop_written_the_obvious_way():
    clips = torch.randn(2, 4, 3, 8, 12)
    cubes = cubify(clips, tubelet=2, patch=4)
    assert cubes.shape == (2, 2 * 2 * 3, 2 * 4 * 4 * 3)
    for b in range(2):
        n = 0
        for t in range(2):
            for r in range(2):
                for c in range(3):
                    block = clips[b, 2 * t : 2 * t + 2, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4]
                    expected = block.permute(0, 2, 3, 1).flatten()  # (frame, row, col, channel)
                    torch.testing.assert_close(cubes[b, n], expected)
                    n += 1


def test_videomae_encodes_only_the_visible_tenth():
    torch.manual_seed(0)
    encoder = build_encoder(
        "video-vit-tiny", in_channels=1, image_size=16, frames=4, embed_dim=32, depth=1, num_heads=2
    )
    info = DataInfo(modality="video", channels=1, image_size=16, max_length=4)
    method = build_method("videomae", {}, encoder, info)
    mask = method.sample_mask(3, torch.device("cpu"))
    assert mask.shape == (3, 2 * 16) and (mask.sum(dim=1) == 2 * 14).all()  # 90% of 16 → 14
    x = torch.randn(3, 4, 1, 16, 16)
    pred, latent = method.reconstruct(x, mask)
    assert latent.shape == (3, 2 * 2, 32) and pred.shape == (3, 32, 2 * 4 * 4)
    out = method.training_step(
        {"video": torch.randint(0, 256, (3, 4, 1, 16, 16), dtype=torch.uint8)}
    )
    assert torch.isfinite(out["loss"])


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_moving_fashion_mnist_moves_in_its_labelled_direction():
    garments = load_video("moving-fashion-mnist", "test")
    directions = load_video("moving-fashion-mnist:direction", "test")
    clips = garments.as_tensor().float()
    assert clips.shape == (2000, 8, 1, 32, 32) and garments.class_names[0] == "T-shirt/top"
    assert directions.class_names == list(DIRECTIONS) and set(directions.labels().tolist()) == set(
        range(8)
    )
    rows, cols = torch.arange(32.0)[:, None], torch.arange(32.0)[None]
    mass = clips[:, :2, 0].sum(dim=(2, 3))  # (N, 2)
    centre_r = (clips[:, :2, 0] * rows).sum(dim=(2, 3)) / mass
    centre_c = (clips[:, :2, 0] * cols).sum(dim=(2, 3)) / mass
    step = torch.stack([-(centre_r[:, 1] - centre_r[:, 0]), centre_c[:, 1] - centre_c[:, 0]], 1)
    angle = torch.atan2(step[:, 0], step[:, 1])  # counter-clockwise from east
    expected = directions.labels().float() * math.pi / 4
    gap = torch.remainder(angle - expected + math.pi, 2 * math.pi) - math.pi
    moved = step.norm(dim=1) > 0.5
    agree = (gap.abs() < math.pi / 8)[moved].float().mean()
    assert agree > 0.8  # the rest bounced off an edge in the first step


def test_bad_clip_files_say_what_is_wrong(tmp_path):
    path = tmp_path / "clips.npz"
    np.savez(path, x=np.zeros((10, 4, 8, 8), dtype=np.float32))
    with pytest.raises(SelfsupError, match="clips must be uint8"):
        load_video(f"video:{path}")
    with pytest.raises(SelfsupError, match="does not exist"):
        load_video(f"video:{tmp_path / 'none.npz'}")
    encoder = build_encoder("video-vit-tiny", in_channels=1, image_size=8, frames=4, depth=1)
    with pytest.raises(SelfsupError, match=r"reads clips \(B, 4, C, H, W\)"):
        encoder(torch.zeros(2, 2, 1, 8, 8))  # shorter than the clips it was built for
    info = DataInfo(modality="video", channels=1, image_size=8, max_length=4)
    with pytest.raises(SelfsupError, match="hides all 4 positions"):
        build_method("videomae", {}, encoder, info)  # 90% of a 2×2 grid is all of it


@pytest.mark.parametrize(
    "content", [b"", b"\x93NUMPY garbage that is not an array", b"PK\x03\x04 a broken zip"]
)
def test_a_clip_file_that_does_not_load_is_one_line(tmp_path, content, capsys):
    path = tmp_path / ("clips.npz" if content.startswith(b"PK") else "clips.npy")
    path.write_bytes(content)
    with pytest.raises(SelfsupError, match="cannot read .* as .npy/.npz"):
        load_video(f"video:{path}")
    args = ["pretrain", "--method", "videomae", "--data", f"video:{path}", "--max-steps", "1"]
    assert main([*args, "--out", str(tmp_path / "run"), "--no-eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot read") and "Traceback" not in err[0]


def test_clips_shorter_than_the_encoders_frames_are_one_line(tmp_path):
    from selfsup.modalities.video import VIDEO

    path = tmp_path / "short.npz"
    np.savez(path, x=np.zeros((5, 2, 8, 8), dtype=np.uint8))
    short = load_video(f"video:{path}")
    encoder = build_encoder("video-vit-tiny", in_channels=1, image_size=8, frames=4, depth=1)
    with pytest.raises(SelfsupError, match="clips of 2 frames, shorter than the 4 the encoder"):
        VIDEO.check_encoder(encoder, short, f"video:{path}")
    np.savez(path, x=np.zeros((5, 4, 8, 8), dtype=np.uint8))
    VIDEO.check_encoder(encoder, load_video(f"video:{path}"), f"video:{path}")  # the right length


def test_videomae_pretrains_and_evaluates_from_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 40, (48, 4, 8, 8), dtype=np.uint8)
    y = np.arange(48) % 2
    for i in range(48):  # a square moving right (label 0) or left (label 1)
        for t in range(4):
            c = t if y[i] == 0 else 3 - t
            clips[i, t, 2:6, c : c + 4] = 255
    path = tmp_path / "clips.npz"
    np.savez(path, x=clips, y=y)
    out = tmp_path / "run"
    args = ["pretrain", "--method", "videomae", "--data", f"video:{path}", "--out", str(out)]
    args += ["--batch-size", "8", "--max-steps", "2", "--set", "train.progress=false"]
    args += ["--set", "encoder_args={patch_size: 2, embed_dim: 32, depth: 1, num_heads: 2}"]
    args += ["--set", "method_args={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}"]
    args += [
        "--set",
        "eval.label_fractions=[1.0]",
        "--set",
        "eval.seeds=[0]",
        "--set",
        "eval.report=false",
    ]
    assert main(args) == 0
    rows = json.loads((out / "eval.json").read_text())
    assert {r["encoder"] for r in rows} == {"videomae", "random-init", "raw"}
    short = tmp_path / "short.npz"
    np.savez(short, x=clips[:, :2], y=y)  # 2 frames where the encoder was trained on 4
    capsys.readouterr()
    embed = ["embed", str(out), "--out", str(tmp_path / "f.npy")]
    for command, message in (
        (embed, "clips of 2 frames, shorter than the 4 the encoder was trained on"),
        (["evaluate", str(out)], r"reads clips (B, 4, C, H, W), got ("),
    ):
        assert main([*command, "--data", f"video:{short}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
