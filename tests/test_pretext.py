"""Pretext tasks: rotation, jigsaw (its maximal-Hamming permutation set and its tiles),
colorization (ab bins, the lightness input in training and evaluation), and the openclipart
colour data source (rendered from SVG files written here when rsvg-convert is installed)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.api import extract_features
from selfsup.encoders import build_encoder
from selfsup.errors import SelfsupError
from selfsup.methods import DataInfo, build_method, encoder_channels
from selfsup.methods.colorization import ab_bins
from selfsup.methods.rotation import rotate
from selfsup.views import prepare
from selfsup.views.color import lightness, rgb_to_lab
from selfsup.views.jigsaw import (
    JigsawTiles,
    hamming_distances,
    maximal_hamming_permutations,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    maximal_hamming_permutations.cache_clear()
    yield
    maximal_hamming_permutations.cache_clear()


# ------------------------------------------------------------------------- rotation


def test_rotate_turns_each_image_by_its_own_quarter_turns():
    x = torch.arange(4 * 2 * 5 * 5, dtype=torch.float32).reshape(4, 2, 5, 5)
    turns = torch.tensor([0, 1, 2, 3])
    out = rotate(x, turns)
    for b in range(4):
        torch.testing.assert_close(out[b], torch.rot90(x[b], b, dims=(1, 2)))


@pytest.mark.parametrize("rotations", ["all", "random"])
def test_rotation_classifies_four_rotations(rotations):
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=4)
    method = build_method("rotation", {"rotations": rotations}, encoder, DataInfo(1, 8))
    seen = []
    method.encoder.forward = lambda x: (seen.append(x.shape[0]), torch.zeros(x.shape[0], 32))[1]
    out = method.training_step({"image": torch.zeros(6, 1, 8, 8, dtype=torch.uint8)})
    assert seen == [24 if rotations == "all" else 6]
    assert out["features"].shape == (6, 32) and 0 <= float(out["rotation_acc"]) <= 1
    assert out["loss"].item() == pytest.approx(math.log(4), rel=0.3)


# --------------------------------------------------------------------------- jigsaw


def test_permutation_set_is_distinct_far_apart_and_deterministic(tmp_path):
    perms = maximal_hamming_permutations(9, 100, 0)
    assert perms.shape == (100, 9)
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 100
    distances = hamming_distances(perms)
    off_diagonal = distances[~np.eye(100, dtype=bool)]
    # random sets of 100 permutations of 9 tiles: the closest pair is far closer
    rng = np.random.default_rng(0)
    random_minima = [
        hamming_distances(np.array([rng.permutation(9) for _ in range(100)]))[
            ~np.eye(100, dtype=bool)
        ].min()
        for _ in range(5)
    ]
    assert off_diagonal.min() >= max(random_minima)
    assert off_diagonal.mean() > 8.0  # random pairs average 8 (= 9 − 1 expected fixed point)
    # deterministic, cached on disk, and another seed gives another set
    cached = list((tmp_path / "cache" / "jigsaw").glob("*.npy"))
    assert len(cached) == 1
    maximal_hamming_permutations.cache_clear()
    np.testing.assert_array_equal(maximal_hamming_permutations(9, 100, 0), perms)
    np.save(cached[0], perms[::-1].copy())  # the file is what a second process reads
    maximal_hamming_permutations.cache_clear()
    np.testing.assert_array_equal(maximal_hamming_permutations(9, 100, 0), perms[::-1])
    assert not np.array_equal(maximal_hamming_permutations(9, 100, 1), perms[::-1])


@pytest.mark.parametrize(("tiles", "count"), [(4, 24), (4, 10), (16, 30)])
def test_permutation_set_small_and_large_grids(tiles, count):
    perms = maximal_hamming_permutations(tiles, count, 0)
    assert perms.shape == (count, tiles) and len({tuple(p) for p in perms.tolist()}) == count


def test_permutation_set_larger_than_possible_is_an_error():
    with pytest.raises(ValueError, match="only 24 permutations"):
        maximal_hamming_permutations(4, 25, 0)
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=4)
    with pytest.raises(SelfsupError, match="num_permutations"):
        build_method("jigsaw", {"grid": 2, "num_permutations": 30}, encoder, DataInfo(1, 8))


def test_tiles_are_the_cells_in_permuted_order():
    grid, cell = 3, 4
    perms = maximal_hamming_permutations(9, 10, 0)
    # every cell filled with its own index, channel 1 = index + 100
    image = torch.arange(9.0).reshape(3, 3).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    x = torch.stack([image, image + 100])[None].repeat(5, 1, 1, 1)  # (5, 2, 12, 12)
    tiles, labels = JigsawTiles(grid, cell, cell, perms)(x)
    assert tiles.shape == (5, 9, 2, cell, cell) and labels.shape == (5,)
    for b in range(5):
        expected = torch.as_tensor(perms[int(labels[b])], dtype=torch.float32)
        torch.testing.assert_close(tiles[b, :, 0, 0, 0], expected)
        torch.testing.assert_close(tiles[b, :, 1].amin(dim=(1, 2)), expected + 100)


def test_tile_crops_stay_inside_their_cell():
    grid, cell, tile = 3, 6, 4
    image = torch.arange(9.0).reshape(3, 3).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    x = image[None, None].repeat(64, 1, 1, 1)
    tiles, labels = JigsawTiles(grid, cell, tile, maximal_hamming_permutations(9, 10, 0))(x)
    assert tiles.shape == (64, 9, 1, tile, tile)
    flat = tiles.flatten(2)
    assert (flat.amin(dim=2) == flat.amax(dim=2)).all()  # one cell's value per tile


@pytest.mark.parametrize(("size", "tile"), [(8, 7), (28, 8), (16, 7)])
def test_jigsaw_tile_size_for_small_images(size, tile):
    encoder = build_encoder("convnet", in_channels=1, image_size=size, width=4)
    method = build_method("jigsaw", {"num_permutations": 10}, encoder, DataInfo(1, size))
    shapes = []
    forward = method.encoder.forward
    method.encoder.forward = lambda x: (shapes.append(tuple(x.shape)), forward(x))[1]
    out = method.training_step({"image": torch.zeros(3, 1, size, size, dtype=torch.uint8)})
    assert shapes == [(27, 1, tile, tile)]
    assert out["features"].shape == (3, 32) and "jigsaw_acc" in out


# --------------------------------------------------------------------- colorization


def test_ab_bins_on_the_grid():
    ab = torch.tensor([[-110.0, -110.0], [0.0, 0.0], [109.9, 109.9], [-100.0, 5.0], [200, -200]])
    got = ab_bins(ab.T.reshape(1, 2, 5, 1), 10.0).flatten().tolist()
    assert got == [0, 11 * 22 + 11, 22 * 22 - 1, 1 * 22 + 11, 21 * 22 + 0]


def test_lightness_of_greys_and_colours():
    grey = torch.full((1, 3, 2, 2), 0.5)
    light = lightness(grey)
    assert light.shape == (1, 1, 2, 2)
    assert float(light[0, 0, 0, 0]) == pytest.approx(0.5339, abs=1e-3)  # L* of sRGB 0.5
    lab = rgb_to_lab(torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1))
    assert lab.flatten().tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.1)  # sRGB red


def test_colorization_encoder_takes_lightness_in_training_and_evaluation():
    info = DataInfo(3, 16)
    assert encoder_channels("colorization", info) == 1 and encoder_channels("simclr", info) == 3
    encoder = build_encoder("convnet", in_channels=1, image_size=16, width=4)
    method = build_method("colorization", {}, encoder, info)
    out = method.training_step({"image": torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)})
    assert 0 <= float(out["colour_acc"]) <= 1
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    assert prepare(images, channels=1).shape == (5, 1, 16, 16)
    assert prepare(images).shape == (5, 3, 16, 16)
    assert extract_features(encoder, images, device="cpu").shape == (5, 32)
    regression = build_method("colorization", {"target": "ab"}, encoder, info)
    out = regression.training_step({"image": images})
    assert out["loss"] > 0 and out["ab_error"] >= 0


def test_colorization_rejects_grey_data_and_a_colour_encoder():
    grey_encoder = build_encoder("convnet", in_channels=1, image_size=16, width=4)
    with pytest.raises(SelfsupError, match="needs colour images.*openclipart"):
        build_method("colorization", {}, grey_encoder, DataInfo(1, 16))
    rgb_encoder = build_encoder("convnet", in_channels=3, image_size=16, width=4)
    with pytest.raises(SelfsupError, match="in_channels=1"):
        build_method("colorization", {}, rgb_encoder, DataInfo(3, 16))
    with pytest.raises(SelfsupError, match="jitter"):
        build_method("colorization", {"augment": {"jitter_p": 0.8}}, grey_encoder, DataInfo(3, 16))


# ---------------------------------------------------------------------- openclipart

SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">
<rect x="0" y="0" width="{w}" height="{h}" fill="{colour}"/></svg>"""

needs_rsvg = pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="no rsvg-convert")


def _write_svgs(root: Path) -> None:
    for category, colour in [("animals", "#ff0000"), ("plants", "#00ff00")]:
        for i in range(6):
            path = root / category / f"drawing{i}.svg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(SVG.format(w=20 + i, h=10, colour=colour) + f"<!-- {i} -->")
    (root / "plants" / "copy.svg").write_text((root / "animals" / "drawing0.svg").read_text())
    (root / "plants" / "broken.svg").write_text("<svg this is not xml")


@needs_rsvg
def test_render_svg_fits_and_centres_on_white(tmp_path):
    from selfsup.data.openclipart import render_svg

    svg = tmp_path / "wide.svg"
    svg.write_text(SVG.format(w=40, h=20, colour="#0000ff"))
    assert render_svg(svg, tmp_path / "out" / "wide.png", 16)
    from PIL import Image

    pixels = np.array(Image.open(tmp_path / "out" / "wide.png"))
    assert pixels.shape == (16, 16, 3)
    assert pixels[8, 8].tolist() == [0, 0, 255] and pixels[0, 8].tolist() == [255, 255, 255]
    assert not render_svg(tmp_path / "missing.svg", tmp_path / "out" / "missing.png", 16)
    assert not (tmp_path / "out" / "missing.png").exists()


@needs_rsvg
def test_openclipart_source_renders_once_dedupes_and_skips_broken(tmp_path):
    from selfsup.data import load_images
    from selfsup.data.openclipart import MANIFEST

    root = tmp_path / "svg"
    _write_svgs(root)
    train = load_images(f"openclipart:{root}", "train", image_size=12)
    test = load_images(f"openclipart:{root}", "test", image_size=12)
    assert train.channels == 3 and train.image_size == (12, 12)
    assert train.class_names == ["animals", "plants"]
    assert len(train) + len(test) == 12  # 14 files: one duplicate and one broken dropped
    (manifest,) = (tmp_path / "cache" / "openclipart").glob(f"*-12px/{MANIFEST}")
    assert '"skipped": 1' in manifest.read_text()
    image = train[0]["image"]
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 12)
    (root / "animals" / "drawing1.svg").unlink()  # a rendered folder is reused as it is
    assert len(load_images(f"openclipart:{root}", "train", image_size=12)) == len(train)


def test_openclipart_missing_says_how_to_install(monkeypatch, tmp_path):
    from selfsup.data import load_images, openclipart

    monkeypatch.setattr(openclipart, "DEFAULT_FOLDER", tmp_path / "nothing")
    with pytest.raises(SelfsupError, match="apt-get install openclipart-svg librsvg2-bin"):
        load_images("openclipart")
    with pytest.raises(SelfsupError, match="does not exist"):
        load_images(f"openclipart:{tmp_path / 'elsewhere'}")
