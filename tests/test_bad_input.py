"""Property-based tests of bad input: whatever a user types or points at, selfsup either
accepts it and works, or stops with one ``error: ...`` line and exit status 2, never a
traceback. Hypothesis runs derandomized (the same examples on every machine) and bounded."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from selfsup.api import make_config
from selfsup.cli import main
from selfsup.config import RunConfig, dump_yaml, from_dict, to_dict
from selfsup.data import load_images
from selfsup.encoders import build_encoder
from selfsup.errors import SelfsupError
from selfsup.methods import DataInfo, build_method
from selfsup.views.image import ImageAugment, image_pipeline

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def bounded(max_examples: int) -> settings:
    return settings(SETTINGS, max_examples=max_examples)


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in captured.err
    return err[0]


def check_one_line(error: SelfsupError) -> None:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, text


# ----------------------------------------------------------------------------- config values

KNOWN_KEYS = [
    path
    for section, fields in to_dict(RunConfig()).items()
    for path in ([f"{section}.{k}" for k in fields] if isinstance(fields, dict) else [section])
] + [
    "method_args.temperature",
    "method_args.proj_dim",
    "method_args.proj_hidden_dim",
    "method_args.proj_layers",
    "method_args.augment.crop_scale",
    "method_args.augment.crop_ratio",
    "method_args.augment.flip_p",
    "method_args.augment.brightness",
    "method_args.augment.hue",
    "method_args.augment.output_size",
    "encoder_args.width",
    "encoder_args.norm",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=20),
)


@bounded(300)
@given(st.dictionaries(keys, values, min_size=1, max_size=4))
def test_any_config_values_are_accepted_or_one_line_errors(assignments: dict[str, Any]) -> None:
    """Unknown keys, wrong types, NaN, huge and negative numbers: a SelfsupError or a config
    that round-trips through YAML unchanged."""
    data: dict[str, Any] = {}
    for key, value in assignments.items():
        node = data
        *parents, last = key.split(".")
        if any(not part for part in [*parents, last]):
            continue
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[last] = value
    try:
        cfg = make_config(data)
    except SelfsupError as error:
        check_one_line(error)
        return
    again = make_config(from_dict(RunConfig, __import__("yaml").safe_load(dump_yaml(cfg))))
    assert to_dict(again) == to_dict(cfg)


@bounded(40)
@given(
    flag=st.sampled_from(
        ["--batch-size", "--image-size", "--max-steps", "--max-epochs", "--devices", "--num-nodes"]
    ),
    value=st.integers(max_value=0),
)
def test_non_positive_sizes_on_the_command_line(flag: str, value: int, capsys, tmp_path) -> None:
    assert main(["pretrain", flag, str(value), "--out", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys)
    assert str(value) in line
    assert not (tmp_path / "r").exists()  # nothing written, nothing lost


@bounded(25)
@given(
    key=st.sampled_from(
        [
            "train.batch_size",
            "train.max_steps",
            "train.checkpoint_every",
            "train.log_every",
            "data.image_size",
            "data.num_workers",
            "eval.batch_size",
            "eval.knn_k",
            "eval.max_train",
            "method_args.proj_dim",
            "method_args.augment.output_size",
        ]
    ),
    value=st.one_of(
        st.integers(max_value=-1),
        st.floats(allow_nan=True),
        st.sampled_from(["many", "[]", "{a: 1}", "true", "null"]),
    ),
)
def test_wrong_sizes_through_set(key: str, value: Any, capsys, tmp_path) -> None:
    text = repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        text = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[str(value)]
    if key == "eval.max_train" and text == "null" or key == "data.image_size" and text == "null":
        return  # null means "all" / "the source's size": valid
    out = tmp_path / "r"
    argv = ["pretrain", "--max-steps", "1", "--set", f"{key}={text}", "--out", str(out)]
    assert main(argv) == 2
    assert key.split(".")[-1] in one_error_line(capsys)


# ----------------------------------------------------------------------------- crops


bad_scales = st.one_of(
    st.tuples(st.floats(max_value=0.0), st.floats(0.01, 1.0)),  # min <= 0
    st.tuples(st.floats(0.01, 1.0), st.floats(min_value=1.0, exclude_min=True)),  # max > 1
    st.tuples(st.floats(0.5, 1.0, exclude_min=True), st.floats(0.01, 0.5)),  # min > max
    st.tuples(st.just(math.nan), st.floats(0.1, 1.0)),
)
bad_ratios = st.one_of(
    st.tuples(st.floats(max_value=0.0), st.floats(0.1, 10)),  # ratio <= 0
    st.tuples(st.floats(2.0, 10.0), st.floats(0.1, 1.9)),  # min > max
    st.tuples(st.floats(0.5, 1.0), st.just(math.inf)),
    st.lists(st.floats(0.5, 2.0), min_size=0, max_size=1),  # not a pair
    st.lists(st.floats(0.5, 2.0), min_size=3, max_size=3),
)


def yaml_list(values) -> str:
    return (
        "["
        + ", ".join(".nan" if v != v else ".inf" if v == math.inf else repr(v) for v in values)
        + "]"
    )


@bounded(30)
@given(field=st.sampled_from(["crop_scale", "crop_ratio"]), data=st.data())
def test_impossible_crops_are_one_line_errors(field: str, data, capsys, tmp_path) -> None:
    pair = data.draw(bad_scales if field == "crop_scale" else bad_ratios)
    override = f"method_args.augment.{field}={yaml_list(pair)}"
    argv = ["pretrain", "--max-steps", "1", "--set", override, "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert field in one_error_line(capsys)


@bounded(25)
@given(
    scale=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    ratio=st.tuples(st.floats(-1.0, 5.0), st.floats(-1.0, 5.0)),
    jitter=st.floats(-1.0, 3.0),
    hue=st.floats(-0.2, 0.7),
    size=st.one_of(st.none(), st.integers(-2, 12)),
)
def test_augment_settings_that_validate_also_run(scale, ratio, jitter, hue, size) -> None:
    """Whatever ``ImageAugment.validate`` lets through builds and runs on a batch; the rest
    is a one-line SelfsupError before any training."""
    augment = ImageAugment(
        crop_scale=scale,
        crop_ratio=ratio,
        brightness=jitter,
        contrast=jitter,
        hue=hue,
        output_size=size,
    )
    try:
        pipeline = image_pipeline(augment, channels=3, image_size=8)
    except SelfsupError as error:
        check_one_line(error)
        return
    out = pipeline(torch.rand(4, 3, 8, 8))
    assert out.shape == (4, 3, size or 8, size or 8) and torch.isfinite(out).all()


@bounded(20)
@given(
    args=st.fixed_dictionaries(
        {},
        optional={
            "temperature": st.floats(-1.0, 2.0),
            "proj_dim": st.integers(-2, 16),
            "proj_hidden_dim": st.one_of(st.none(), st.integers(-2, 16)),
            "proj_layers": st.integers(-1, 3),
        },
    )
)
def test_method_arguments_build_a_working_method_or_fail_cleanly(args) -> None:
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    try:
        method = build_method("simclr", args, encoder, DataInfo(1, 8))
    except SelfsupError as error:
        check_one_line(error)
        return
    loss = method.training_step({"image": torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)})
    assert torch.isfinite(loss["loss"])


# ----------------------------------------------------------------------------- data files

MODES = ["RGB", "L", "RGBA", "P", "LA", "1", "I;16", "F"]


def write_image(path: Path, kind: str, size: tuple[int, int], rng: np.random.Generator) -> None:
    h, w = size
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(rng.bytes(int(rng.integers(1, 200))))
    elif kind == "truncated":
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: max(8, path.stat().st_size // 2)])
    elif kind == "I;16":
        Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16)).save(path)
    elif kind == "F":
        Image.fromarray(rng.random((h, w)).astype(np.float32)).save(path.with_suffix(".tif"))
    else:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(kind).save(path)


files = st.lists(
    st.tuples(
        st.sampled_from([*MODES, "empty", "random", "truncated"]),
        st.tuples(st.integers(1, 12), st.integers(1, 12)),
    ),
    min_size=0,
    max_size=12,
)


@bounded(30)
@given(specs=files, image_size=st.one_of(st.none(), st.integers(1, 10)), skip_bad=st.booleans())
def test_any_folder_loads_consistently_or_fails_in_one_line(specs, image_size, skip_bad) -> None:
    """Empty folders, zero-byte files, random bytes named .png, truncated files, mixed sizes and
    modes (RGB, L, RGBA, P, LA, 1, 16-bit, float): every image comes out with the same
    channels and size, or loading stops with one line naming the problem."""
    rng = np.random.default_rng(len(specs))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, (kind, size) in enumerate(specs):
            write_image(root / f"{i:03d}.png", kind, size, rng)
        try:
            for split in ("train", "test"):
                dataset = load_images(
                    f"folder:{root}", split, skip_bad=skip_bad, image_size=image_size
                )
                images = dataset.as_tensor()
                n, c, h, w = images.shape
                assert images.dtype == torch.uint8 and n == len(dataset) >= 1
                assert c == dataset.channels in (1, 3) and (h, w) == dataset.image_size
                if image_size is not None:
                    assert (h, w) == (image_size, image_size)
                good = [k for k, _ in specs if k not in ("empty", "random", "truncated")]
                assert c == (1 if set(good) <= {"L", "LA", "1", "I;16", "F"} else 3)
        except SelfsupError as error:
            check_one_line(error)


def test_float_images_in_0_1_are_not_decoded_black(tmp_path) -> None:
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    for i in range(10):
        Image.fromarray(values).save(tmp_path / f"{i}.tif")
    images = load_images(f"folder:{tmp_path}", "train").as_tensor()
    assert images.shape[1] == 1 and int(images.max()) == 255 and int(images.min()) == 0


@pytest.mark.parametrize("kind", ["empty", "random", "truncated"])
def test_corrupt_files_through_the_cli_are_one_line(kind, tmp_path, capsys) -> None:
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        write_image(root / f"{i}.png", "RGB", (8, 8), rng)
    write_image(root / "bad.png", kind, (8, 8), rng)  # in the train split (by its path's hash)
    argv = ["pretrain", "--data", f"folder:{root}", "--max-steps", "4", "--batch-size", "2"]
    argv += ["--set", "encoder_args.width=8", "--set", "train.progress=false", "--no-eval"]
    argv += ["--out", str(tmp_path / "r")]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "bad.png" in line and "--skip-bad" in line


@bounded(25)
@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=5),
    dtype=st.sampled_from(["uint8", "float32", "float64", "int64", "bool", "complex64", "<U3"]),
    labels=st.one_of(st.none(), st.integers(0, 8)),
)
def test_any_array_file_loads_or_fails_in_one_line(shape, dtype, labels) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npz"
        arrays: dict[str, Any] = {"images": np.zeros(shape, dtype=dtype)}
        if np.issubdtype(arrays["images"].dtype, np.number):
            arrays["images"] = (rng.random(shape) * 300 - 20).astype(dtype)
        if labels is not None:
            arrays["labels"] = np.arange(labels)
        np.savez(path, **arrays)
        try:
            dataset = load_images(f"npz:{path}", "train")
            images = dataset.as_tensor()
            assert images.dtype == torch.uint8 and images.dim() == 4 and len(images) >= 1
        except SelfsupError as error:
            check_one_line(error)


@bounded(40)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))))
def test_any_config_file_text_is_accepted_or_one_line(text) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text + "\n!!python/object/apply:os.system ['true']" * (len(text) % 2))
        try:
            make_config(path)
        except SelfsupError as error:
            check_one_line(error)


def test_python_tags_in_a_config_file_are_refused(tmp_path, capsys) -> None:
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"out: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["pretrain", "--config", str(config)]) == 2
    assert "evil.yaml" in one_error_line(capsys)
    assert not marker.exists() and not os.path.exists(marker)
