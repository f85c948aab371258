"""Folders of video files (``video:FOLDER``): clips written here with PyAV itself, a square
moving right or left, decoded back as T frames at a stride (shape, order, labels, split,
determinism), bad files, and a tiny VideoMAE run from the CLI."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.data.clips import UnreadableVideoError
from selfsup.data.split import in_test_split
from selfsup.data.video import load_video
from selfsup.errors import SelfsupError

av = pytest.importorskip("av", reason="video files need PyAV: pip install selfsup[video]")

SIDE, SQUARE, SPEED, LENGTH = 32, 8, 2, 12
"""32 px frames; an 8 px square moving 2 px per frame; 12 frames."""
CODEC = {".mp4": "libx264" if "libx264" in av.codecs_available else "mpeg4", ".avi": "mpeg4"}
if "libvpx" in av.codecs_available:
    CODEC[".webm"] = "libvpx"


def write_clip(path: Path, *, leftwards: bool = False, frames: int = LENGTH) -> None:
    """A white square on black moving SPEED px per frame (x = SPEED·t, or mirrored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC.get(path.suffix, "mpeg4"), rate=10)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            image = np.zeros((SIDE, SIDE, 3), np.uint8)
            x = SPEED * t if not leftwards else SIDE - SQUARE - SPEED * t
            image[12 : 12 + SQUARE, x : x + SQUARE] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def square_x(clip: torch.Tensor) -> np.ndarray:
    """The square's left edge in every frame of a (T, C, H, W) clip (brightness centroid)."""
    weight = (clip.float().mean(1) > 128).float().sum(1)  # (T, W) bright pixels per column
    columns = torch.arange(clip.shape[-1]).float()
    return ((weight * columns).sum(1) / weight.sum(1)).numpy() - (SQUARE - 1) / 2


def names(count: int, *, test: bool, folder: str = "", suffix: str = ".mp4") -> list[str]:
    """``count`` clip names that the split hash sends to test (or to train)."""
    found = (f"{folder}c{i:03d}{suffix}" for i in range(10_000))
    return [n for n in found if in_test_split(n, 0.2) == test][:count]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """right/ and left/ with 10 clips each, 2 of each in the test split."""
    root = tmp_path_factory.mktemp("clips")
    for label in ("left", "right"):
        chosen = names(8, test=False, folder=f"{label}/") + names(2, test=True, folder=f"{label}/")
        for name in chosen:
            write_clip(root / name, leftwards=label == "left")
    return root


def test_clips_come_back_as_frames_at_the_stride_in_order(labelled):
    data = load_video(f"video:{labelled}:frames=4:stride=2:size={SIDE}", "test")
    assert data.class_names == ["left", "right"] and data.has_labels
    assert (data.frames, data.channels, data.image_size) == (4, 3, SIDE)
    for i in range(len(data)):
        sample = data[i]
        assert sample["video"].shape == (4, 3, SIDE, SIDE) and sample["video"].dtype == torch.uint8
        # the centred start of 12 frames spanning 7: frame 2, then 4, 6, 8
        step = -SPEED if data.class_names[int(sample["label"])] == "left" else SPEED
        start = 2 * SPEED if step > 0 else SIDE - SQUARE - 2 * SPEED
        expected = start + step * 2 * np.arange(4)
        np.testing.assert_allclose(square_x(sample["video"]), expected, atol=0.75)


def test_the_split_is_the_path_hash_and_labels_are_subfolders(labelled):
    spec = f"video:{labelled}:frames=2:size=16"
    train, test = load_video(spec, "train"), load_video(spec, "test")
    assert len(train) == 16 and len(test) == 4 and not set(train.keys) & set(test.keys)
    assert all(in_test_split(key, 0.2) for key in test.keys)
    assert train.labels().tolist() == [0] * 8 + [1] * 8  # left/..., right/... sorted
    assert train[0]["video"].shape == (2, 3, 16, 16)  # resized from 32 px


def test_a_flat_folder_is_unlabelled_and_webm_and_avi_decode(tmp_path):
    suffixes = [".avi", *([".webm"] if ".webm" in CODEC else [])]
    for suffix in suffixes:
        for name in names(3, test=False, suffix=suffix):
            write_clip(tmp_path / suffix[1:] / name)
        data = load_video(f"video:{tmp_path / suffix[1:]}:frames=3:stride=3:size={SIDE}", "train")
        assert not data.has_labels and data.labels().tolist() == [-1, -1, -1]
        np.testing.assert_allclose(
            square_x(data[0]["video"]), SPEED * (2 + 3 * np.arange(3)), atol=0.75
        )  # 12 frames spanning 7: the centred start is frame 2 (webm's count is its duration)


def test_random_starts_are_seeded_and_evaluation_is_centred(labelled):
    spec = f"video:{labelled}:frames=3:stride=2:size={SIDE}"
    train = load_video(spec, "train", random_start=True)
    starts = []
    for seed in (0, 0, 1, 2, 3):
        torch.manual_seed(seed)
        x = square_x(train[10]["video"])  # a right-moving clip
        np.testing.assert_allclose(np.diff(x), 2 * SPEED, atol=0.75)  # still the stride apart
        starts.append(round(x[0] / SPEED))
    assert starts[0] == starts[1] and len(set(starts)) > 1 and all(0 <= s <= 7 for s in starts)
    centred = load_video(spec, "train")
    assert torch.equal(centred[10]["video"], centred[10]["video"])
    assert round(square_x(centred[10]["video"])[0] / SPEED) == 3  # (12 - 5) // 2
    # the modality asks pretraining for random starts and evaluation for the centred clip
    from selfsup.config import DataConfig
    from selfsup.modalities.video import VIDEO

    assert VIDEO.load(spec, "train", **VIDEO.run_options(DataConfig(name=spec))).random_start
    assert not VIDEO.load(spec, "train", **VIDEO.eval_options({}, None)).random_start


def test_a_clip_shorter_than_its_span_repeats_its_last_frame(tmp_path):
    write_clip(tmp_path / names(1, test=False)[0], frames=5)  # T = 4 frames, span 7
    clip = load_video(f"video:{tmp_path}:frames=4:stride=2:size={SIDE}", "train")[0]["video"]
    np.testing.assert_allclose(square_x(clip), [0, 2 * SPEED, 4 * SPEED, 4 * SPEED], atol=0.75)
    # one unlabelled clip, in train: its test split is empty and unlabelled (nothing to evaluate)
    test = load_video(f"video:{tmp_path}", "test")
    assert len(test) == 0 and not test.has_labels


def test_a_clip_deep_in_a_long_video_seeks_to_the_same_frames(tmp_path, monkeypatch):
    from selfsup.data import clips

    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV wheel has no libx264 (needed for a lossless mp4)")
    path = tmp_path / names(1, test=False)[0]
    with av.open(str(path), "w") as container:  # frame t is a flat gray of level 2.5·t
        stream = container.add_stream("libx264", rate=25, options={"qp": "0"})  # lossless
        stream.width = stream.height = SIDE
        stream.pix_fmt, stream.codec_context.gop_size = "yuv420p", 10
        for t in range(100):
            image = np.full((SIDE, SIDE, 3), round(2.5 * t), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    for first in (0, 37, 61, 85, 96):  # 96: the last two indices are past the end
        indices = [first + 3 * k for k in range(4)]
        monkeypatch.setattr(clips, "SEEK_FROM", 10_000)
        decoded = clips.decode_clip(path, indices, 8, 3)
        monkeypatch.setattr(clips, "SEEK_FROM", 1)
        sought = clips.decode_clip(path, indices, 8, 3)
        assert torch.equal(decoded, sought), first
        levels = sought.float().mean((1, 2, 3)).numpy()
        written = [round(2.5 * min(i, 99)) for i in indices]
        # RGB -> limited-range YUV -> RGB moves a level by one at most; a neighbour is 2.5 off
        np.testing.assert_allclose(levels, written, atol=1.1)


def test_gray_clips_load_with_one_channel(tmp_path):
    path = tmp_path / names(1, test=False, suffix=".mkv")[0]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "gray"
        for t in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((SIDE, SIDE), 50 * t, np.uint8), "gray")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = load_video(f"video:{tmp_path}:frames=4:stride=1:size=8", "train")
    assert data.channels == 1
    assert data[0]["video"][:, 0, 0, 0].tolist() == [0, 50, 100, 150]  # lossless, in order


def write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), "s16", "mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)


BAD = {
    "corrupt": ("cannot read video {}: Invalid data", lambda p: p.write_bytes(b"\x00junk" * 64)),
    "too-short": (
        "video {} has 1 frames, fewer than the 2 of a clip",
        partial(write_clip, frames=1),
    ),
    "empty": ("cannot read video {}: ", lambda p: p.write_bytes(b"")),
    "no-video": ("{} has no video stream", write_audio_only),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_file_is_one_line_or_skipped_and_counted(tmp_path, kind, capsys):
    message, make = BAD[kind]
    good, bad = names(1, test=False)[0], names(1, test=False, suffix=".mkv")[0]
    write_clip(tmp_path / good)
    make(tmp_path / bad)
    spec = f"video:{tmp_path}:frames=2:size=16"
    with pytest.raises(SelfsupError, match=message.format(bad)):
        load_video(spec, "train")
    skipping = load_video(spec, "train", skip_bad=True)
    assert len(skipping) == 1 and skipping.skipped == [bad]
    args = ["pretrain", "--method", "videomae", "--data", spec, "--max-steps", "1"]
    assert main([*args, "--out", str(tmp_path / "run"), "--no-eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and bad in err[0] and "--skip-bad" in err[0], err


def test_a_clip_spoiled_after_the_check_is_one_line_from_a_loader_worker(tmp_path):
    name = names(1, test=False)[0]
    write_clip(tmp_path / name)
    data = load_video(f"video:{tmp_path}:frames=2:size=16", "train")
    (tmp_path / name).write_bytes(b"\x00junk" * 64)  # replaced once its header was read
    with pytest.raises(UnreadableVideoError) as caught:
        next(iter(torch.utils.data.DataLoader(data, num_workers=1)))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"cannot decode video {tmp_path / name}")


def test_a_folder_without_clips_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no clips here")
    with pytest.raises(SelfsupError, match="no video files"):
        load_video(f"video:{tmp_path}", "train")
    with pytest.raises(SelfsupError, match="unknown video option 'fps'"):
        load_video(f"video:{tmp_path}:fps=30", "train")
    args = ["pretrain", "--method", "videomae", "--data", f"video:{tmp_path}", "--no-eval"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no video files"), err


def test_videomae_pretrains_and_evaluates_on_a_folder_from_the_cli(labelled, tmp_path):
    out = tmp_path / "run"
    spec = f"video:{labelled}:frames=4:stride=2:size=16"
    args = ["pretrain", "--method", "videomae", "--data", spec, "--out", str(out)]
    args += ["--batch-size", "4", "--max-steps", "2", "--set", "train.progress=false"]
    args += ["--num-workers", "1"]  # decoded in a loader worker, as for real folders
    args += ["--set", "encoder_args={patch_size: 4, embed_dim: 32, depth: 1, num_heads: 2}"]
    args += ["--set", "method_args={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}"]
    args += ["--set", "eval.label_fractions=[1.0]", "--set", "eval.seeds=[0]"]
    args += ["--set", "eval.report=false"]
    assert main(args) == 0
    rows = json.loads((out / "eval.json").read_text())
    assert {r["encoder"] for r in rows} == {"videomae", "random-init", "raw"}
    assert all(np.isfinite(r["accuracy"]) for r in rows if "accuracy" in r)
    # an exported encoder reads the folder at its own frames and size when the spec is bare
    features = tmp_path / "f.npy"
    assert main(["embed", str(out), "--data", f"video:{labelled}", "--out", str(features)]) == 0
    assert np.load(features).shape == (4, 32)
