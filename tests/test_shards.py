"""Sharded data on disk (``selfsup pack``, ``shards:PATH``): identical read-back, every sample
once per epoch across processes and loader workers, the windowed shuffle, exact resume,
streaming and atomic writes, and one clear error line for a damaged pack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.data import FolderImageDataset, UnreadableImageError, load_images, make_loader
from selfsup.data import pack as pack_module
from selfsup.data.pack import pack
from selfsup.data.shards import ShardDataset, ShardWriter
from selfsup.engine.sampler import ResumableSampler
from selfsup.errors import SelfsupError


def indexed_images(start: int, stop: int) -> np.ndarray:
    """uint8 (B, 1, 4, 4) images whose first two pixels spell their own index."""
    index = np.arange(start, stop)
    images = np.zeros((len(index), 1, 4, 4), np.uint8)
    images[:, 0, 0, 0] = index % 256
    images[:, 0, 0, 1] = index // 256
    images[:, 0, 1:, :] = (index % 251)[:, None, None]
    return images


def index_of(images: torch.Tensor) -> list[int]:
    """The indices spelt by a batch (B, 1, 4, 4) of ``indexed_images``."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


def write_indexed(out: Path, n: int, shard_size: int, chunk: int = 13) -> Path:
    """A pack of ``n`` indexed images (label = index % 7), written in chunks of ``chunk``."""
    writer = ShardWriter(out, channels=1, image_size=(4, 4), shard_size=shard_size)
    chunks = (
        (indexed_images(s, min(s + chunk, n)), np.arange(s, min(s + chunk, n)) % 7)
        for s in range(0, n, chunk)
    )
    writer.write_split("train", n, chunks)
    writer.finish(source="test", has_labels=True, class_names=[str(i) for i in range(7)])
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


# ----------------------------------------------------------------------------- read back


def test_a_packed_array_file_reads_back_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)  # (N, H, W, C)
    labels = rng.integers(0, 4, 50)
    names = np.array(["a", "b", "c", "d"])
    np.savez(tmp_path / "x.npz", images=images, labels=labels, class_names=names)
    spec = f"npz:{tmp_path / 'x.npz'}"
    index = pack(spec, tmp_path / "packed", format="npy", shard_size=7, chunk_size=3)
    assert index["splits"]["train"]["count"] == 40 and len(index["splits"]["train"]["shards"]) == 6

    for split in ("train", "test"):
        source = load_images(spec, split)
        packed = load_images(f"shards:{tmp_path / 'packed'}", split)
        assert len(packed) == len(source) and not packed.in_memory
        assert (packed.channels, packed.image_size) == (3, (6, 5))
        assert packed.class_names == ["a", "b", "c", "d"] and packed.has_labels
        assert torch.equal(packed.as_tensor(), source.as_tensor())
        assert torch.equal(packed.labels(), source.labels())
        for i in (0, 6, 7, len(source) - 1):  # across shard boundaries
            assert torch.equal(packed[i]["image"], source[i]["image"])
            assert packed[i]["label"].dtype == torch.int64
            assert int(packed[i]["label"]) == int(source[i]["label"])


def test_unlabelled_data_and_resizing_on_read(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, channels=1, image_size=(4, 4), shard_size=4)
    writer.write_split("train", 10, [(indexed_images(0, 10), None)])
    writer.finish(source="test", has_labels=False, class_names=[])
    data = ShardDataset(tmp_path, image_size=2)
    assert not data.has_labels and data.num_classes == 0
    assert data.labels().tolist() == [-1] * 10 and int(data[9]["label"]) == -1
    assert data[3]["image"].shape == (1, 2, 2) and data.as_tensor().shape == (10, 1, 2, 2)
    with pytest.raises(SelfsupError, match="no test split"):
        ShardDataset(tmp_path, "test")


# ----------------------------------------------------------------------------- order


def full_order(data: ShardDataset, seed: int, epoch: int) -> list[int]:
    return np.concatenate(list(data.epoch_order(seed, epoch))).tolist()


def test_every_sample_once_per_epoch_across_two_ranks_and_two_workers(tmp_path: Path) -> None:
    data = ShardDataset(write_indexed(tmp_path, 96, shard_size=10), window=2)
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


def test_the_order_is_a_function_of_seed_and_epoch(tmp_path: Path) -> None:
    root = write_indexed(tmp_path, 95, shard_size=10)
    a, b = ShardDataset(root), ShardDataset(root)
    first = full_order(a, 0, 0)
    assert sorted(first) == list(range(95))
    assert full_order(b, 0, 0) == first  # another process rebuilds the same order
    assert full_order(a, 0, 1) != first and full_order(a, 1, 0) != first


def test_the_windowed_shuffle_reads_w_shards_at_a_time(tmp_path: Path) -> None:
    data = ShardDataset(write_indexed(tmp_path, 120, shard_size=10), window=3)
    order = full_order(data, 5, 0)
    windows = [order[start : start + 30] for start in range(0, 120, 30)]
    shard_sets = [{data.shard_of(i) for i in window} for window in windows]
    assert all(len(s) == 3 for s in shard_sets)  # 3 shards per window ...
    assert len(set().union(*shard_sets)) == 12  # ... each shard in one window
    assert any(window != sorted(window) for window in windows)  # shuffled within the window
    # each rank follows the same windows: its indices of a window come from those 3 shards
    sampler = ResumableSampler(120, 5, seed=5, rank=1, world=2, order=data.epoch_order)
    mine = list(sampler)
    assert mine == order[1::2]
    assert {data.shard_of(i) for i in mine[:15]} == shard_sets[0]


def test_resume_mid_epoch_gives_the_rest_of_the_epoch(tmp_path: Path) -> None:
    data = ShardDataset(write_indexed(tmp_path, 103, shard_size=10), window=2)
    for rank in range(3):
        sampler = ResumableSampler(103, 4, seed=7, rank=rank, world=3, order=data.epoch_order)
        sampler.set_position(epoch=3, batch_in_epoch=0)
        whole = list(sampler)
        assert whole == full_order(data, 7, 3)[rank::3][:32]  # 34 per rank, 8 whole batches
        for batch in range(9):
            sampler.set_position(epoch=3, batch_in_epoch=batch)
            assert list(sampler) == whole[batch * 4 :] and len(sampler) == 32 - batch * 4


def test_other_data_keeps_the_uniform_shuffle() -> None:
    sampler = ResumableSampler(20, 5, seed=3)
    g = torch.Generator().manual_seed(3 * 1_000_003)
    assert list(sampler) == torch.randperm(20, generator=g).tolist()


# ----------------------------------------------------------------------------- writing


def test_packing_a_folder_decodes_it_in_chunks(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "pics"
    rng = np.random.default_rng(1)
    for i in range(40):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"c{i % 2}" / f"{i:03d}.png")

    def no_whole_decode(self):
        raise AssertionError("pack decoded the whole folder at once")

    sizes: list[int] = []
    original = pack_module.dataset_chunks

    def spy(*args, **kwargs):
        for images, labels in original(*args, **kwargs):
            sizes.append(len(images))
            yield images, labels

    monkeypatch.setattr(FolderImageDataset, "as_tensor", no_whole_decode)
    monkeypatch.setattr(pack_module, "dataset_chunks", spy)
    pack(f"folder:{folder}", tmp_path / "packed", format="npy", shard_size=6, chunk_size=4)
    assert sum(sizes) == 40 and max(sizes) == 4

    for split in ("train", "test"):
        source = load_images(f"folder:{folder}", split)
        packed = ShardDataset(tmp_path / "packed", split)
        assert packed.class_names == ["c0", "c1"] and len(packed) == len(source)
        for i in range(len(source)):
            assert torch.equal(packed[i]["image"], source[i]["image"])
            assert int(packed[i]["label"]) == int(source[i]["label"])


def test_an_interrupted_pack_leaves_no_complete_looking_shard(tmp_path: Path) -> None:
    out = tmp_path / "packed"

    def interrupted():
        for start in range(0, 30, 10):
            yield indexed_images(start, start + 10), None
        raise KeyboardInterrupt

    writer = ShardWriter(out, channels=1, image_size=(4, 4), shard_size=16)
    with pytest.raises(KeyboardInterrupt):
        writer.write_split("train", 100, interrupted())
    names = sorted(p.name for p in out.iterdir())
    assert names == ["train-00000.labels.npy", "train-00000.npy"]  # no .tmp, no index.json
    assert np.load(out / "train-00000.npy").shape == (16, 1, 4, 4)  # the finished one is whole
    with pytest.raises(SelfsupError, match="index.json is missing"):
        load_images(f"shards:{out}")

    (out / "train-00001.npy.tmp").write_bytes(b"half a shard")  # as a killed pack leaves
    write_indexed(out, 40, shard_size=16)  # packing again clears the leftovers
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tmp") == []
    assert index_of(ShardDataset(out).as_tensor()) == list(range(40))
    with pytest.raises(SelfsupError, match="already holds a pack"):
        write_indexed(out, 40, shard_size=16)


def test_a_short_or_wrong_stream_is_refused(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "a", channels=1, image_size=(4, 4), shard_size=8)
    with pytest.raises(SelfsupError, match="ran out after 10 images"):
        writer.write_split("train", 12, [(indexed_images(0, 10), None)])
    with pytest.raises(SelfsupError, match="more than the 5"):
        writer.write_split("train", 5, [(indexed_images(0, 10), None)])
    with pytest.raises(SelfsupError, match=r"uint8 \(B, 1, 4, 4\)"):
        writer.write_split("train", 2, [(np.zeros((2, 1, 4, 5), np.uint8), None)])


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("form, prefix", [("npy", "shards"), ("wds", "wds")])
def test_pack_then_pretrain_from_the_command_line(
    tmp_path: Path, capsys, form: str, prefix: str
) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (160, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images, labels=rng.integers(0, 3, 160))
    packed = tmp_path / "packed"
    argv = ["pack", f"npz:{tmp_path / 'x.npz'}", str(packed), "--shard-size", "40"]
    assert main([*argv, "--format", form]) == 0
    out = capsys.readouterr().out
    assert "128 train in 4 shard(s) + 32 test in 1 shard(s)" in out
    assert f"--data {prefix}:{packed}" in out
    run = tmp_path / "run"
    argv = ["pretrain", "--data", f"{prefix}:{packed}", "--max-steps", "2", "--batch-size", "32"]
    argv += ["--num-workers", "2", "--no-eval", "--out", str(run)]
    argv += ["--set", "encoder_args.width=8", "--set", "train.progress=false"]
    assert main(argv) == 0
    assert (run / "encoder.safetensors").is_file()


def damage(packed: Path, how: str) -> str:
    """Damage a pack; returns the file the error must name."""
    shard = packed / "train-00001.npy"
    index = packed / "index.json"
    if how == "truncated":
        shard.write_bytes(shard.read_bytes()[:-5])
    elif how == "missing":
        shard.unlink()
    elif how == "not npy":
        shard.write_bytes(b"garbage" * 100)
    elif how == "bad index":
        index.write_text("{not json")
        return str(index)
    elif how == "foreign index":
        index.write_text('{"format": "something else"}')
        return str(index)
    return str(shard)


@pytest.mark.parametrize("how", ["truncated", "missing", "not npy", "bad index", "foreign index"])
def test_a_damaged_pack_is_one_error_line(tmp_path: Path, capsys, how: str) -> None:
    packed = write_indexed(tmp_path / "packed", 40, shard_size=16)
    named = damage(packed, how)
    argv = ["pretrain", "--data", f"shards:{packed}", "--max-steps", "1", "--no-eval"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert named in line and "selfsup pack" in line


def test_a_shard_lost_while_training_is_one_error_line(tmp_path: Path) -> None:
    data = ShardDataset(write_indexed(tmp_path, 40, shard_size=16))
    (tmp_path / "train-00002.npy").unlink()
    loader = make_loader(data, 8, shuffle=False, num_workers=1, pin_memory=False)
    with pytest.raises(UnreadableImageError) as error:
        list(loader)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "train-00002.npy") in message
