"""WebDataset shards (``selfsup pack``, ``wds:``): identical read-back of images and text,
every sample once per epoch across processes and loader workers, exact mid-epoch resume,
brace patterns, img2dataset output as it is, and one clear error line for a damaged shard."""

from __future__ import annotations

import io
import json
import os
import random
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from lightning_fabric import Fabric
from PIL import Image
from test_shards import index_of, one_error_line  # the .npy shards' helpers

from selfsup.api import make_config
from selfsup.cli import main
from selfsup.data import UnreadableImageError, load_images, load_texts, make_loader
from selfsup.data.pack import pack
from selfsup.data.webdataset import (
    WebDatasetImages,
    WebDatasetWriter,
    image_samples,
    shard_table,
)
from selfsup.encoders import build_encoder
from selfsup.engine import train
from selfsup.engine.checkpoint import latest_checkpoint
from selfsup.engine.sampler import ResumableSampler
from selfsup.errors import SelfsupError
from selfsup.methods import DataInfo, build_method
from selfsup.modalities import modality_of_data


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sample tables go to a cache of the test's own."""
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))


def indexed_images(start: int, stop: int, size: int = 4) -> np.ndarray:
    """``test_shards.indexed_images``, of any square size."""
    index = np.arange(start, stop)
    images = np.zeros((len(index), 1, size, size), np.uint8)
    images[:, 0, 1:, :] = (index * 37 % 251)[:, None, None]
    images[:, 0, 0, 0] = index % 256
    images[:, 0, 0, 1] = index // 256
    return images


def write_indexed(out: Path, n: int, shard_size: int, size: int = 4) -> Path:
    """A pack of ``n`` indexed images (label = index % 7) in shards of ``shard_size``."""
    writer = WebDatasetWriter(
        out, modality="image", channels=1, image_size=(size, size), shard_size=shard_size
    )
    chunks = ((indexed_images(s, min(s + 13, n), size), np.arange(s, min(s + 13, n)) % 7)
              for s in range(0, n, 13))  # fmt: skip
    writer.write_split("train", image_samples(chunks, (1, size, size)))
    writer.finish(source="test", has_labels=True, class_names=[str(i) for i in range(7)])
    return out


# ----------------------------------------------------------------------------- read back


def test_packed_images_read_back_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)  # (N, H, W, C)
    np.savez(tmp_path / "x.npz", images=images, labels=rng.integers(0, 4, 50),
             class_names=np.array(["a", "b", "c", "d"]))  # fmt: skip
    spec = f"npz:{tmp_path / 'x.npz'}"
    index = pack(spec, tmp_path / "packed", shard_size=7, chunk_size=3)
    assert index["splits"]["train"]["count"] == 40 and len(index["splits"]["train"]["shards"]) == 6
    assert sorted(p.name for p in (tmp_path / "packed").iterdir())[:3] == [
        "index.json", "test-00000.tar", "test-00001.tar"]  # fmt: skip
    assert modality_of_data(f"wds:{tmp_path / 'packed'}").name == "image"
    for split in ("train", "test"):
        source = load_images(spec, split)
        packed = load_images(f"wds:{tmp_path / 'packed'}", split)
        assert isinstance(packed, WebDatasetImages) and not packed.in_memory
        assert len(packed) == len(source) and (packed.channels, packed.image_size) == (3, (6, 5))
        assert packed.class_names == ["a", "b", "c", "d"]
        assert torch.equal(packed.as_tensor(), source.as_tensor())
        assert torch.equal(packed.labels(), source.labels())
        for i in (0, 6, 7, len(source) - 1):  # across shard boundaries
            assert torch.equal(packed[i]["image"], source[i]["image"])
            assert int(packed[i]["label"]) == int(source[i]["label"])


def test_a_brace_pattern_reads_the_named_shards(tmp_path: Path) -> None:
    root = write_indexed(tmp_path / "p", 50, shard_size=10)
    data = load_images(f"wds:{root}/train-{{00001..00003}}.tar")
    assert len(data) == 30 and data.class_names == [str(i) for i in range(7)]
    assert sorted(index_of(data.as_tensor())) == list(range(10, 40))
    one = load_images(f"wds:{root}/train-00004.tar", image_size=2)
    assert len(one) == 10 and one[0]["image"].shape == (1, 2, 2)
    with pytest.raises(SelfsupError, match="train-00005.tar does not exist"):
        load_images(f"wds:{root}/train-{{00003..00009}}.tar")


# ----------------------------------------------------------------------------- order


def test_every_sample_once_per_epoch_across_two_ranks_and_two_workers(tmp_path: Path) -> None:
    data = WebDatasetImages(str(write_indexed(tmp_path / "p", 96, shard_size=10)), window=2)
    seen: list[int] = []
    for rank in range(2):
        sampler = ResumableSampler(96, 8, seed=1, rank=rank, world=2, order=data.epoch_order)
        sampler.set_position(epoch=2, batch_in_epoch=0)
        loader = make_loader(data, 8, sampler=sampler, num_workers=2, pin_memory=False)
        batches = list(loader)
        assert len(batches) == 6
        mine = [i for batch in batches for i in index_of(batch["image"])]
        assert mine == list(sampler)  # in the sampler's order, though two workers read them
        for batch in batches:
            assert batch["label"].tolist() == [i % 7 for i in index_of(batch["image"])]
        seen += mine
    assert sorted(seen) == list(range(96))
    windows = [{data.shard_of(i) for i in w} for w in data.epoch_order(1, 2)]
    assert all(len(w) == 2 for w in windows[:-1])  # the windowed shuffle: 2 shards at a time


def test_resume_mid_epoch_repeats_the_uninterrupted_run(tmp_path: Path) -> None:
    root = write_indexed(tmp_path / "p", 56, shard_size=16, size=8)

    def run(out: Path, crash_at: int | None = None, resume: bool = False):
        cfg = make_config(
            method="simclr", encoder="convnet", encoder_args={"width": 8}, data=f"wds:{root}",
            train={"batch_size": 8, "max_steps": 10, "checkpoint_every": 4, "log_every": 2,
                   "progress": False},
            out=str(out),
        )  # fmt: skip
        torch.manual_seed(cfg.train.seed)
        encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
        method = build_method("simclr", cfg.method_args, encoder, DataInfo(1, 8))
        order: list[list[int]] = []
        real_step = method.training_step

        def recording_step(self, batch):
            order.append(index_of(batch["image"]))
            return real_step(batch)

        method.training_step = types.MethodType(recording_step, method)  # type: ignore[method-assign]

        def crash(step: int, loss: float) -> None:
            if step == crash_at:
                raise KeyboardInterrupt

        data = load_images(f"wds:{root}")
        cfg.data.num_workers = 1  # a worker process, whose seed must not touch the RNG
        fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
        start = latest_checkpoint(out) if resume else None
        return train(fabric, cfg, method, data, out, resume_from=start, on_step=crash), order

    full, full_order = run(tmp_path / "a")  # 7 steps an epoch: 10 crosses into epoch 2
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", crash_at=6)
    resumed, resumed_order = run(tmp_path / "b", resume=True)
    assert resumed.start_step == 4 and resumed.steps == 10
    assert resumed_order == full_order[4:]  # the rest of epoch 1 and epoch 2, sample by sample
    assert sorted(i for b in full_order[:7] for i in b) == list(range(56))
    for step in range(5, 11):
        assert resumed.losses[step] == full.losses[step], f"step {step}"


# ----------------------------------------------------------------------------- foreign shards


def write_img2dataset(folder: Path, shards: int = 2, per_shard: int = 20) -> Path:
    """Shards laid out as img2dataset writes them: ``00000.tar`` of jpg + txt + json."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for s in range(shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                pixels = rng.integers(0, 256, (12 + i % 3, 10, 3), dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG")
                sample = {"__key__": key, "jpg": buffer.getvalue(), "txt": f"caption {key}",
                          "json": json.dumps({"key": key, "status": "success"}).encode()}  # fmt: skip
                sink.write(sample)
        (folder / f"{s:05d}_stats.json").write_text("{}")  # img2dataset's other files
    return folder


def test_img2dataset_output_reads_as_images_split_by_key(tmp_path: Path) -> None:
    folder = write_img2dataset(tmp_path / "laion")
    assert modality_of_data(f"wds:{folder}").name == "image"
    train_set = load_images(f"wds:{folder}", "train")
    test_set = load_images(f"wds:{folder}", "test", image_size=8)
    assert len(train_set) + len(test_set) == 40 and 0 < len(test_set) < 20
    assert (train_set.channels, train_set.image_size) == (3, (12, 10))  # the first image's
    assert not train_set.has_labels and int(train_set[0]["label"]) == -1
    image = train_set[len(train_set) - 1]["image"]
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 10)  # resized to the set's size
    assert test_set[0]["image"].shape == (3, 8, 8)
    caption = train_set.read_file(0, "txt")
    assert caption is not None and caption.decode().startswith("caption 0000")  # kept for pairs
    keys = {
        c.decode()
        for d in (train_set, test_set)
        for c in (d.read_file(i, "txt") for i in range(len(d)))
    }  # type: ignore[union-attr]
    assert len(keys) == 40  # the hash split sends each sample to one side
    assert len(load_images(f"wds:{folder}", "train")) == len(train_set)  # the same rule again


def test_packed_text_reads_back_and_pretrains(tmp_path: Path, capsys) -> None:
    rng = random.Random(0)
    path = tmp_path / "notes.jsonl"
    words = "bread soup star planet wave ship the a of and".split()
    with path.open("w") as f:
        for i in range(120):
            text = " ".join(rng.choices(words, k=6))
            f.write(json.dumps({"text": text, "label": ["food", "sky"][i % 2]}) + "\n")
    packed = tmp_path / "packed"
    assert main(["pack", f"text:{path}", str(packed), "--shard-size", "30"]) == 0
    assert f"--data wds:{packed}" in capsys.readouterr().out
    assert modality_of_data(f"wds:{packed}").name == "text"
    for split in ("train", "test"):
        source, back = load_texts(f"text:{path}", split), load_texts(f"wds:{packed}", split)
        assert back.texts == source.texts and back.labels == source.labels
        assert back.class_names == ["food", "sky"]
    run = tmp_path / "run"
    argv = ["pretrain", "--method", "mlm", "--encoder", "transformer-tiny", "--data",
            f"wds:{packed}", "--max-length", "12", "--vocab-size", "60", "--max-steps", "2",
            "--batch-size", "16", "--no-eval", "--out", str(run), "--set", "train.progress=false",
            "--set", "encoder_args.depth=1", "--set", "encoder_args.embed_dim=32"]  # fmt: skip
    assert main(argv) == 0
    assert (run / "encoder.safetensors").is_file() and (run / "tokenizer.json").is_file()


# ----------------------------------------------------------------------------- damage


def damage(packed: Path, how: str) -> str:
    """Damage a pack; returns the file the error must name."""
    shard = packed / "train-00001.tar"
    if how == "truncated":  # mid-file (the last 10 KB are padding a tar may lose)
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2 + 100])
    elif how == "cut at a block":
        shard.write_bytes(shard.read_bytes()[: 512 * 7])
    elif how == "missing":
        shard.unlink()
    elif how == "not a tar":
        shard.write_bytes(b"garbage" * 100)
    elif how == "bad index":
        (packed / "index.json").write_text("{not json")
        return str(packed / "index.json")
    return str(shard)


@pytest.mark.parametrize(
    "how", ["truncated", "cut at a block", "missing", "not a tar", "bad index"]
)
def test_a_damaged_shard_is_one_error_line_naming_it(tmp_path: Path, capsys, how: str) -> None:
    packed = write_indexed(tmp_path / "packed", 40, shard_size=16)
    named = damage(packed, how)
    argv = ["pretrain", "--data", f"wds:{packed}", "--max-steps", "1", "--no-eval"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert named in line and "selfsup pack" in line


def test_a_shard_damaged_while_training_is_one_error_line(tmp_path: Path) -> None:
    root = write_indexed(tmp_path / "p", 40, shard_size=16)
    data = WebDatasetImages(str(root))
    shard = root / "train-00001.tar"
    table = shard_table(shard)
    stat = shard.stat()
    with shard.open("r+b") as f:  # garble every image of the shard, keeping size and time
        for start, size in zip(table.offset, table.size):
            f.seek(int(start))
            f.write(b"\xff" * int(size))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    loader = make_loader(data, 8, shuffle=False, num_workers=1, pin_memory=False)
    with pytest.raises(UnreadableImageError) as error:
        list(loader)
    message = str(error.value)
    assert "\n" not in message and str(shard) in message and "cannot be decoded" in message


def test_an_interrupted_pack_leaves_no_index_and_packs_again(tmp_path: Path) -> None:
    out = tmp_path / "packed"

    def interrupted():
        yield from image_samples([(indexed_images(0, 20), None)], (1, 4, 4))
        raise KeyboardInterrupt

    writer = WebDatasetWriter(out, modality="image", channels=1, image_size=(4, 4), shard_size=16)
    with pytest.raises(KeyboardInterrupt):
        writer.write_split("train", interrupted())
    assert sorted(p.name for p in out.iterdir()) == ["train-00000.tar"]  # no .tmp, no index
    with pytest.raises(SelfsupError, match="index.json is missing"):
        load_images(f"wds:{out}", "test")
    write_indexed(out, 40, shard_size=16)  # packing again clears the leftovers
    assert index_of(WebDatasetImages(str(out)).as_tensor()) == list(range(40))
    with pytest.raises(SelfsupError, match="already holds a pack"):
        write_indexed(out, 40, shard_size=16)
