"""Image sources and the Sample contract: digits, IDX (Fashion-MNIST), folders, npz, the loader.

Every file these tests read is written into tmp_path; the only exceptions are scikit-learn's
embedded digits and, when the Debian package is installed, the real Fashion-MNIST test split.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import (
    DATASETS,
    FolderImageDataset,
    UnreadableImageError,
    load_images,
    make_loader,
)
from selfsup.data import idx as idx_module
from selfsup.data.folder import TEST_FRACTION
from selfsup.data.split import in_test_split as split_rule
from selfsup.errors import SelfsupError


def in_test_split(relative_path: str) -> bool:
    """The folder source's rule: the shared hash split at the folder's test share."""
    return split_rule(relative_path, TEST_FRACTION)


def check_sample(sample: dict[str, torch.Tensor], channels: int, size: tuple[int, int]) -> None:
    assert set(sample) == {"image", "label"}
    assert sample["image"].dtype == torch.uint8
    assert sample["image"].shape == (channels, *size)
    assert sample["label"].dtype == torch.int64 and sample["label"].dim() == 0


# ---------------------------------------------------------------------------- registry


def test_registry_names_every_source_in_one_line() -> None:
    assert set(DATASETS) == {
        "digits",
        "fashion-mnist",
        "folder",
        "npz",
        "openclipart",
        "shards",
        "wds",
    }
    assert all(description and "\n" not in description for description in DATASETS.values())


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(SelfsupError, match=r"did you mean 'fashion-mnist'.*digits"):
        load_images("fashon-mnist")


def test_a_bare_folder_path_suggests_the_folder_prefix(tmp_path: Path) -> None:
    with pytest.raises(SelfsupError, match=f"folder:{tmp_path}"):
        load_images(str(tmp_path))


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("digits", {"split": "val"}, "unknown split"),
        ("digits", {"image_size": 0}, "positive integer"),
        ("digits:abc", {}, "takes no argument"),
        ("folder", {}, "needs a path"),
        ("npz:", {}, "needs a path"),
    ],
)
def test_bad_arguments_are_one_line_errors(spec: str, kwargs: dict, message: str) -> None:
    with pytest.raises(SelfsupError, match=message) as info:
        load_images(spec, **kwargs)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- digits


def test_digits_shapes_labels_and_fixed_split() -> None:
    train, test = load_images("digits", "train"), load_images("digits", "test")
    assert (len(train), len(test)) == (1257, 540)
    for ds in (train, test):
        assert (ds.channels, ds.image_size, ds.num_classes) == (1, (8, 8), 10)
        assert ds.has_labels and ds.class_names == [str(i) for i in range(10)]
        check_sample(ds[0], 1, (8, 8))
        x = ds.as_tensor()
        assert x.shape == (len(ds), 1, 8, 8) and x.dtype == torch.uint8
        assert int(x.max()) == 255 and int(x.min()) == 0
    # Stratified: every class keeps its ~30% share in test.
    counts = test.labels().bincount(minlength=10).float() / (
        train.labels().bincount(minlength=10) + test.labels().bincount(minlength=10)
    )
    assert torch.all((counts - 0.3).abs() < 0.02)
    # The same split every time, and train and test are disjoint.
    assert torch.equal(load_images("digits", "test").labels(), test.labels())
    all_images = {bytes(img.numpy()) for img in torch.cat([train.as_tensor(), test.as_tensor()])}
    assert len(all_images) > 1700  # (a few digits are pixel-identical duplicates)


def test_digits_image_size_resizes_the_whole_set() -> None:
    ds = load_images("digits", "test", image_size=16)
    assert ds.image_size == (16, 16) and ds.as_tensor().shape == (540, 1, 16, 16)
    check_sample(ds[3], 1, (16, 16))


# ---------------------------------------------------------------------------- IDX / Fashion-MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(
    folder: Path, n_train: int = 6, n_test: int = 4, compress: bool = True, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 5, 4), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for stem, array in zip(idx_module.FILES[split], (images, labels), strict=True):
            raw = idx_bytes(array)
            if compress:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_parses_idx_files(tmp_path: Path, compress: bool) -> None:
    data = write_fashion(tmp_path / "fm", compress=compress)
    for split in ("train", "test"):
        ds = load_images(f"fashion-mnist:{tmp_path / 'fm'}", split)
        images, labels = data[split]
        assert torch.equal(ds.as_tensor(), torch.from_numpy(images)[:, None])
        assert torch.equal(ds.labels(), torch.from_numpy(labels.astype(np.int64)))
        assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
        assert (ds.num_classes, ds.channels, ds.image_size) == (10, 1, (5, 4))
        check_sample(ds[1], 1, (5, 4))


def test_fashion_mnist_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    write_fashion(tmp_path, seed=0)
    first = load_images(f"fashion-mnist:{tmp_path}").as_tensor()
    again = load_images(f"fashion-mnist:{tmp_path}").as_tensor()
    assert again.data_ptr() == first.data_ptr()  # parsed once
    data = write_fashion(tmp_path, n_train=7, seed=1)  # new size (and mtime): read again
    changed = load_images(f"fashion-mnist:{tmp_path}").as_tensor()
    assert torch.equal(changed, torch.from_numpy(data["train"][0])[:, None])


def test_fashion_mnist_bad_magic_number_names_the_file(tmp_path: Path) -> None:
    write_fashion(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float instead of unsigned byte
    path.write_bytes(bytes(raw))
    with pytest.raises(SelfsupError, match=r"train-images-idx3-ubyte is not an IDX file.*magic"):
        load_images(f"fashion-mnist:{tmp_path}")


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_truncated_file_names_the_file(tmp_path: Path, compress: bool) -> None:
    write_fashion(tmp_path, compress=compress)
    name = "t10k-images-idx3-ubyte" + (".gz" if compress else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(SelfsupError, match=f"{name}.*(truncated|corrupt)"):
        load_images(f"fashion-mnist:{tmp_path}", "test")


def test_fashion_mnist_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    write_fashion(tmp_path, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(SelfsupError, match="6 images but .* 5 labels"):
        load_images(f"fashion-mnist:{tmp_path}")


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    for spec in (f"fashion-mnist:{tmp_path / 'nowhere'}", f"fashion-mnist:{tmp_path}"):
        with pytest.raises(SelfsupError) as info:
            load_images(spec)
        message = str(info.value)
        assert "sudo apt-get install dataset-fashion-mnist" in message
        assert "--data fashion-mnist:FOLDER" in message and "\n" not in message


@pytest.mark.skipif(
    not (idx_module.DEFAULT_FOLDER / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_installed_fashion_mnist_test_split() -> None:
    ds = load_images("fashion-mnist", "test")
    assert len(ds) == 10_000 and ds.image_size == (28, 28)
    assert ds.labels().bincount().tolist() == [1000] * 10


# ---------------------------------------------------------------------------- folder


def save_png(path: Path, mode: str, size: tuple[int, int] = (6, 5), value: int = 0) -> None:
    """A tiny image of width x height ``size``; pixel values depend on ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    rng = np.random.default_rng(value)
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode).save(path)


def labelled_tree(root: Path, per_class: int = 10) -> list[str]:
    files = []
    for c, name in enumerate(["zebra", "ant", "cat"]):
        for i in range(per_class):
            ext = ".PNG" if i % 3 == 0 else ".png"  # extensions match in any case
            rel = f"{name}/{i:02d}{ext}"
            save_png(root / rel, "RGB" if (c + i) % 2 else "L", value=10 * c + i)
            files.append(rel)
    (root / "ant" / "notes.txt").write_text("not an image")
    return files


def test_folder_labelled_tree_mixed_modes_become_rgb(tmp_path: Path) -> None:
    files = labelled_tree(tmp_path)
    train = load_images(f"folder:{tmp_path}", "train")
    test = load_images(f"folder:{tmp_path}", "test")
    assert sorted(train.files + test.files) == sorted(files)  # a partition of every image
    assert 0 < len(test) < len(train)
    for ds in (train, test):
        assert ds.class_names == ["ant", "cat", "zebra"] and ds.num_classes == 3
        assert ds.has_labels and (ds.channels, ds.image_size) == (3, (5, 6))
        check_sample(ds[0], 3, (5, 6))
        expected = [ds.class_names.index(f.split("/")[0]) for f in ds.files]
        assert ds.labels().tolist() == expected
    # A grayscale file is replicated into three equal channels.
    gray = next(
        i for i, f in enumerate(train.files) if f.startswith("zebra/") and int(f[6:8]) % 2 == 0
    )
    image = train[gray]["image"]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    # as_tensor decodes everything the same way as indexing.
    assert torch.equal(train.as_tensor()[gray], image)


def test_folder_split_is_a_stable_hash_of_the_path() -> None:
    names = [f"class{i % 3}/img_{i}.png" for i in range(2000)]
    share = sum(map(in_test_split, names)) / len(names)
    assert 0.17 < share < 0.23
    # Fixed values: the split must not depend on the run, the machine or PYTHONHASHSEED.
    assert [i for i in range(40) if in_test_split(f"cat/{i}.jpg")] == [
        12,
        14,
        15,
        24,
        30,
        32,
        33,
        34,
        36,
    ]


def test_folder_flat_is_unlabelled_and_grayscale(tmp_path: Path) -> None:
    for i in range(12):
        save_png(tmp_path / f"{i}.bmp" if i % 2 else tmp_path / f"{i}.png", "L", value=i)
    ds = FolderImageDataset(tmp_path, "train")
    assert not ds.has_labels and ds.num_classes == 0 and ds.class_names == []
    assert ds.channels == 1 and ds.labels().eq(-1).all()
    check_sample(ds[0], 1, (5, 6))
    assert int(ds[0]["label"]) == -1


def test_folder_image_size_and_mixed_sizes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_png(tmp_path / "a.png", "RGB", size=(8, 4))  # the first file fixes the size: 4 x 8
    save_png(tmp_path / "b.png", "RGB", size=(20, 30))
    save_png(tmp_path / "c.png", "RGBA", size=(3, 3))
    with caplog.at_level(logging.WARNING, logger="selfsup"):
        ds = FolderImageDataset(tmp_path, "train")
    assert ds.image_size == (4, 8) and "different sizes" in caplog.text
    assert all(ds[i]["image"].shape == (3, 4, 8) for i in range(len(ds)))
    square = FolderImageDataset(tmp_path, "train", image_size=7)
    assert all(square[i]["image"].shape == (3, 7, 7) for i in range(len(square)))


def train_name(stem: str, ext: str) -> str:
    """A file name that the path hash puts in the train split."""
    return next(f"{stem}{k}{ext}" for k in range(100) if not in_test_split(f"{stem}{k}{ext}"))


def test_folder_16_bit_and_exif_rotated_images(tmp_path: Path) -> None:
    deep = np.array([[0, 1000, 40000, 65535]] * 2, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / train_name("a", ".png"))  # 16-bit gray, 4 wide x 2 high
    ds = FolderImageDataset(tmp_path, "train")
    assert ds.channels == 1 and ds.image_size == (2, 4)
    assert ds[0]["image"][0, 0].tolist() == [0, 3, 156, 255]  # top 8 bits, not clipped at 255

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 2 high x 4 wide, shown turned 90 degrees: 4 high x 2 wide
    turned = tmp_path / "turned" / train_name("b", ".jpg")
    turned.parent.mkdir()
    Image.fromarray(np.zeros((2, 4), np.uint8)).save(turned, exif=exif)
    ds = FolderImageDataset(turned.parent, "train")
    assert ds.image_size == (4, 2) and ds[0]["image"].shape == (1, 4, 2)


def test_folder_without_images_names_the_folder_and_extensions(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("hello")
    with pytest.raises(SelfsupError, match=rf"no image files found in {tmp_path}.*\.png.*\.tiff"):
        load_images(f"folder:{tmp_path}")
    with pytest.raises(SelfsupError, match="does not exist"):
        load_images(f"folder:{tmp_path / 'missing'}")


def test_folder_mixing_flat_files_and_subfolders_is_an_error(tmp_path: Path) -> None:
    save_png(tmp_path / "top.png", "L")
    save_png(tmp_path / "cls" / "inner.png", "L")
    with pytest.raises(SelfsupError, match="mixes 1 images at the top level"):
        load_images(f"folder:{tmp_path}")


def broken_tree(root: Path) -> tuple[Path, Path]:
    """Eight good images, one that is not an image at all, one whose pixel data is cut off."""
    for i in range(8):
        save_png(root / f"{i}.png", "L", size=(16, 16), value=i)
    garbage = root / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    save_png(root / "cut.png", "L", size=(64, 64), value=99)
    cut = root / "cut.png"
    cut.write_bytes(cut.read_bytes()[:-200])  # header intact, pixels truncated
    return garbage, cut


def test_folder_unreadable_file_names_it_and_suggests_skip_bad(tmp_path: Path) -> None:
    garbage, cut = broken_tree(tmp_path)
    with pytest.raises(SelfsupError, match=rf"{garbage}.*--skip-bad") as info:
        load_images(f"folder:{tmp_path}")
    assert "\n" not in str(info.value)
    # A file whose header reads fine fails only when decoded: still named, still one line.
    garbage.unlink()
    split = "test" if in_test_split("cut.png") else "train"
    ds = load_images(f"folder:{tmp_path}", split)
    with pytest.raises(UnreadableImageError, match=rf"{cut}.*--skip-bad"):
        ds[ds.files.index("cut.png")]


def test_folder_skip_bad_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    garbage, cut = broken_tree(tmp_path)
    found: list[str] = []
    total = 0
    for split in ("train", "test"):
        with caplog.at_level(logging.WARNING, logger="selfsup"):
            try:
                ds = load_images(f"folder:{tmp_path}", split, skip_bad=True)
            except SelfsupError as e:  # a split that only held the bad files
                assert "no readable images" in str(e)
                continue
        found += ds.skipped
        total += len(ds)
        assert all(ds[i]["image"].shape == (1, 16, 16) for i in range(len(ds)))
    assert sorted(found) == sorted([str(garbage), str(cut)])
    assert total == 8
    assert "skipped 1 unreadable" in caplog.text or "skipped 2 unreadable" in caplog.text


def test_worker_error_keeps_its_one_line_message() -> None:
    # What a DataLoader worker's re-raise passes to the constructor.
    message = (
        "Caught UnreadableImageError in DataLoader worker process 0.\nOriginal Traceback "
        "(most recent call last):\n  File ...\nselfsup.data.folder.UnreadableImageError: "
        "cannot read image /x/y.png (broken); pass --skip-bad to skip unreadable files\n"
    )
    assert str(UnreadableImageError(message)) == (
        "cannot read image /x/y.png (broken); pass --skip-bad to skip unreadable files"
    )


# ---------------------------------------------------------------------------- npz


def ramp(shape: tuple[int, ...]) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 256).astype(np.uint8).reshape(shape)


@pytest.mark.parametrize(
    ("shape", "to_nchw"),
    [
        ((10, 5, 6), lambda x: x[:, None]),
        ((10, 5, 6, 1), lambda x: x.transpose(0, 3, 1, 2)),
        ((10, 5, 6, 3), lambda x: x.transpose(0, 3, 1, 2)),
        ((10, 1, 5, 6), lambda x: x),
        ((10, 3, 5, 6), lambda x: x),
    ],
)
def test_npz_layouts(tmp_path: Path, shape: tuple[int, ...], to_nchw) -> None:
    x = ramp(shape)
    path = tmp_path / "d.npz"
    np.savez(path, images=x, x_test=x[:3], labels=np.arange(10) % 4, y_test=np.arange(3))
    ds = load_images(f"npz:{path}", "train")
    assert torch.equal(ds.as_tensor(), torch.from_numpy(np.ascontiguousarray(to_nchw(x))))
    assert ds.labels().tolist() == (np.arange(10) % 4).tolist() and ds.num_classes == 4
    check_sample(ds[2], ds.channels, (5, 6))
    test = load_images(f"npz:{path}", "test")
    assert len(test) == 3 and test.labels().tolist() == [0, 1, 2]


def test_npz_float_images_are_scaled_to_uint8(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 10 * 4 * 4, dtype=np.float32).reshape(10, 4, 4)
    np.savez(tmp_path / "f.npz", x=x)
    ds = load_images(f"npz:{tmp_path / 'f.npz'}")
    expected = np.rint(x * 255).astype(np.uint8)[:, None]
    everything = torch.cat(
        [ds.as_tensor(), load_images(f"npz:{tmp_path / 'f.npz'}", "test").as_tensor()]
    )
    assert sorted(map(bytes, everything.numpy())) == sorted(map(bytes, expected))
    assert not ds.has_labels and ds.labels().eq(-1).all()


def test_npz_fixed_80_20_split_and_npy(tmp_path: Path) -> None:
    x = ramp((50, 4, 4))
    x[:, 0, 0] = np.arange(50)  # tag each image with its index
    np.save(tmp_path / "a.npy", x)
    train = load_images(f"npz:{tmp_path / 'a.npy'}", "train")
    test = load_images(f"npz:{tmp_path / 'a.npy'}", "test")
    tags = lambda ds: ds.as_tensor()[:, 0, 0, 0].tolist()  # noqa: E731
    assert (len(train), len(test)) == (40, 10)
    assert sorted(tags(train) + tags(test)) == list(range(50))
    assert tags(load_images(f"npz:{tmp_path / 'a.npy'}", "test")) == tags(test)


def test_npz_class_names_and_single_unnamed_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "n.npz", pixels=ramp((5, 4, 4)), labels=np.arange(5))
    assert len(load_images(f"npz:{tmp_path / 'n.npz'}")) == 4
    np.savez(
        tmp_path / "c.npz",
        x=ramp((5, 4, 4)),
        y=np.array([0, 1, 0, 1, 0]),
        class_names=np.array(["no", "yes", "maybe"]),
    )
    assert load_images(f"npz:{tmp_path / 'c.npz'}").class_names == ["no", "yes", "maybe"]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": ramp((20, 4))}, r"shape \(20, 4\); accepted image layouts are \(N, H, W\)"),
        ({"x": ramp((2, 3, 4, 5, 6))}, r"shape \(2, 3, 4, 5, 6\)"),
        ({"x": ramp((4, 3, 5, 3))}, "ambiguous"),
        ({"x": ramp((4, 5, 6, 7))}, "no axis of 1 or 3 channels"),
        ({"x": np.full((4, 3, 3), 2.0)}, r"floats from 2 to 2.*\[0, 1\]"),
        ({"x": np.full((4, 3, 3), np.nan)}, r"floats from nan"),
        ({"x": np.full((4, 3, 3), 300, np.int32)}, r"integers from 300 to 300"),
        ({"x": ramp((4, 3, 3)), "y": np.arange(5)}, r"5 labels but .* 4 images"),
        ({"x": ramp((4, 3, 3)), "y": np.eye(4, dtype=np.int64)}, "1-D integer"),
        ({"a": ramp((4, 3, 3)), "b": ramp((4, 3, 3))}, "holds arrays a, b"),
    ],
)
def test_npz_bad_inputs_are_one_line_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SelfsupError, match=message) as info:
        load_images(f"npz:{path}")
    assert "\n" not in str(info.value)


def test_npz_unreadable_or_missing_file(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SelfsupError, match="junk.npz is not a .npz or .npy file"):
        load_images(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(SelfsupError, match="does not exist"):
        load_images(f"npz:{tmp_path / 'missing.npz'}")


# ---------------------------------------------------------------------------- loader


def test_loader_batches_in_memory_data() -> None:
    ds = load_images("digits", "test")
    batches = list(make_loader(ds, batch_size=64))
    assert len(batches) == 540 // 64  # drop_last
    images, labels = batches[0]["image"], batches[0]["label"]
    assert images.dtype == torch.uint8 and images.shape == (64, 1, 8, 8)
    assert labels.dtype == torch.int64 and labels.shape == (64,)
    again = next(iter(make_loader(ds, batch_size=64, seed=0)))
    assert torch.equal(again["label"], labels)  # seeded shuffle repeats
    ordered = list(make_loader(ds, batch_size=100, shuffle=False, drop_last=False))
    assert sum(len(b["label"]) for b in ordered) == 540
    assert torch.equal(torch.cat([b["label"] for b in ordered]), ds.labels())
    with pytest.raises(SelfsupError, match="lower --batch-size"):
        make_loader(ds, batch_size=1000)


def test_loader_with_workers_decodes_a_folder(tmp_path: Path) -> None:
    labelled_tree(tmp_path, per_class=4)
    ds = load_images(f"folder:{tmp_path}", "train")
    loader = make_loader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    assert len(batches) == len(ds) // 2
    assert all(
        b["image"].dtype == torch.uint8 and b["image"].shape == (2, 3, 5, 6) for b in batches
    )
    assert torch.equal(torch.cat([b["label"] for b in batches]), ds.labels()[: 2 * len(batches)])


def test_loader_worker_error_is_one_line(tmp_path: Path) -> None:
    for i in range(4):
        save_png(tmp_path / f"{i}.png", "L", size=(16, 16), value=i)
    ds = load_images(f"folder:{tmp_path}", "train")
    (tmp_path / ds.files[0]).write_bytes(b"gone bad after indexing")
    with pytest.raises(UnreadableImageError) as info:
        list(make_loader(ds, batch_size=1, num_workers=1, shuffle=False))
    assert str(info.value).startswith("cannot read image ") and "\n" not in str(info.value)
