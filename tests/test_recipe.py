"""Defaults that fit the data (``selfsup.recipe``): the crop-scale rule, the same recipe for
any source of images of one size, a user's value always winning, and a run recording and
saying what it chose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from selfsup.config import make_config
from selfsup.pretraining import training_data
from selfsup.recipe import fit_to_data
from selfsup.views import ImageAugment
from selfsup.views.image import blur_probability, fit_crop_scale, image_pipeline

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_the_crop_rule_keeps_the_paper_at_224_px_and_narrows_it_for_smaller_images():
    assert fit_crop_scale((0.08, 1.0), 224) == (0.08, 1.0)
    assert fit_crop_scale((0.08, 1.0), 512) == (0.08, 1.0)
    assert fit_crop_scale((0.08, 1.0), 28) == (0.6, 1.0)  # the searched Fashion-MNIST value
    lows = [fit_crop_scale((0.08, 1.0), size)[0] for size in (8, 28, 32, 64, 96, 160, 223)]
    assert (
        lows == sorted(lows, reverse=True)
        and all(0.08 <= lo < 1 for lo in lows)
        and lows[0] > lows[-1]
    )
    assert fit_crop_scale((0.2, 1.0), 28)[0] > fit_crop_scale((0.08, 1.0), 28)[0]
    assert fit_crop_scale((0.05, 0.4), 28) == (0.05, 0.4)  # local crops keep their range
    assert blur_probability(28) == 0.0 and blur_probability(64) == 0.5


def test_the_view_pipeline_crops_at_the_fitted_range_unless_told_otherwise():
    def crop_scale(recipe: ImageAugment) -> tuple[float, float]:
        crop = image_pipeline(recipe, 1, 28).pipeline[0]
        return tuple(float(v) for v in crop._param_generator.scale)  # kornia's range

    assert crop_scale(ImageAugment()) == pytest.approx((0.6, 1.0))
    assert crop_scale(ImageAugment(crop_scale=(0.2, 1.0))) == pytest.approx((0.2, 1.0))


def _images(tmp_path: Path, name: str, size: int = 28, n: int = 300) -> str:
    images = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)
    path = tmp_path / f"{name}.npz"
    np.savez(path, images=images, labels=np.arange(n) % 3)
    return f"npz:{path}"


def _folder(tmp_path: Path, size: int = 28) -> str:
    """A folder of 28-px grayscale PNGs in two class subfolders."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (tmp_path / "pngs" / label).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / "pngs" / label / f"{i}.png")
    return f"folder:{tmp_path / 'pngs'}"


def _fitted(spec: str, folder: Path, **sections):
    cfg = make_config(
        None, (), method=sections.pop("method", "simclr"), data={"name": spec}, **sections
    )
    _, info = training_data(cfg, folder, world=1)
    return fit_to_data(cfg, info)


def _recipe(cfg) -> dict:
    return {"method_args": cfg.method_args, "train": cfg.train, "encoder": cfg.encoder}


@pytest.mark.parametrize("method", ["simclr", "byol", "dino", "mae"])
def test_every_source_of_28_px_images_gets_the_recipe_fashion_mnist_gets(tmp_path, method):
    mine, choices = _fitted(_images(tmp_path, "mine"), tmp_path, method=method)
    theirs, _ = _fitted(_images(tmp_path, "theirs", n=500), tmp_path, method=method)
    assert _recipe(mine) == _recipe(theirs)
    folder, _ = _fitted(_folder(tmp_path), tmp_path, method=method)
    assert _recipe(folder) == _recipe(mine)
    assert any("images are 28 px" in c.reason for c in choices)
    if FASHION.is_dir():
        fashion, _ = _fitted("fashion-mnist", tmp_path, method=method)
        assert _recipe(fashion) == _recipe(mine)
    bigger, _ = _fitted(_images(tmp_path, "bigger", size=64, n=64), tmp_path, method=method)
    assert _recipe(bigger)["method_args"] != _recipe(mine)["method_args"]


def test_local_crops_cost_the_papers_share_of_a_step_at_any_resolution(tmp_path):
    from selfsup.views.multicrop import local_crop_count, local_crop_size

    assert local_crop_count(224, local_crop_size(224)) == 8  # the paper's 8 of 96 px
    assert local_crop_count(28, local_crop_size(28)) == 8  # 12 px: the same side ratio
    assert local_crop_count(8, local_crop_size(8)) == 6  # 4-px floor: each costs more
    assert local_crop_count(28, local_crop_size(28, 7)) == 6  # 14 px for 7-px patches
    for size in (8, 16, 28, 32, 64, 96, 224):
        side = local_crop_size(size)
        share = local_crop_count(size, side) * side**2 / size**2  # global crops' worth
        assert 2 <= local_crop_count(size, side) <= 10 and 0.5 < share < 2.5
    fitted, choices = _fitted(_images(tmp_path, "mine"), tmp_path, method="dino")
    assert fitted.method_args["num_local_crops"] == 8
    assert any(c.reason.startswith("8 local crops of 12 px") for c in choices)
    small, _ = _fitted(_images(tmp_path, "small", size=8, n=64), tmp_path, method="dino")
    assert small.method_args["num_local_crops"] == 6
    named, choices = _fitted(
        _images(tmp_path, "mine"), tmp_path, method="dino", method_args={"num_local_crops": 2}
    )
    assert named.method_args["num_local_crops"] == 2
    assert not any("local crops" in c.reason for c in choices)


def test_a_value_the_user_names_is_kept(tmp_path):
    spec = _images(tmp_path, "mine")
    cfg, choices = _fitted(
        spec, tmp_path, method_args={"augment": {"crop_scale": [0.3, 1.0]}}, train={"lr": 0.01}
    )
    assert cfg.method_args["augment"]["crop_scale"] == [0.3, 1.0]
    assert not any("crop scale" in c.reason or c.reason.startswith("lr ") for c in choices)
    fitted, _ = _fitted(spec, tmp_path)
    assert fitted.method_args["augment"]["crop_scale"] == [0.6, 1.0]
    assert fitted.method_args["augment"]["blur_p"] == 0.0


def test_a_run_says_its_choices_once_and_records_them(tmp_path, capsys):
    from selfsup.pretraining import pretrain

    run = pretrain(
        method="simclr",
        data={"name": _images(tmp_path, "mine", n=64)},
        train={"max_steps": 1, "batch_size": 32, "progress": False},
        out=str(tmp_path / "run"),
        evaluate=False,
    )
    said = capsys.readouterr().out
    assert said.count("crop scale 0.6–1: images are 28 px") == 1
    assert "lr 0.00025: adamw's 0.002 per 256 samples × 32/256" in said
    written = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert written["method_args"]["augment"]["crop_scale"] == [0.6, 1.0]
    again = make_config(run.run_dir / "config.yaml")  # the file reproduces the fitted run
    assert again.method_args["augment"]["crop_scale"] == [0.6, 1.0]


# ------------------------------------------------------------------------- speech: mask spans


@pytest.mark.parametrize(
    "method, prob_key, length_key, paper_prob",
    [
        ("wav2vec2", "mask_prob", "mask_length", 0.065),
        ("hubert", "mask_prob", "mask_length", 0.08),
        ("data2vec", "span_start_prob", "span_length", 0.065),
    ],
)
def test_masked_spans_last_the_papers_200_ms_at_any_frame_rate(
    method, prob_key, length_key, paper_prob
):
    """wav2vec2-tiny's hop is 160 samples: 20 ms frames at 8 kHz keep the paper's 10-frame
    spans; 10 ms frames at 16 kHz get 20-frame spans and half the start chance (the same
    expected share hidden); a hop of 320 at 16 kHz is the paper's layout again."""
    from selfsup.data.info import DataInfo

    def fitted(sample_rate, **sections):
        cfg = make_config(method=method, data="audio:random", **sections)
        info = DataInfo(modality="audio", sample_rate=sample_rate, max_samples=sample_rate)
        args = fit_to_data(cfg, info)[0].method_args
        return args[length_key], args[prob_key]

    assert fitted(8000) == (10, paper_prob)
    assert fitted(16000) == (20, pytest.approx(paper_prob / 2))
    layout = {
        "encoder_args": {
            "conv_strides": [5, 2, 2, 2, 2, 2, 2],
            "conv_kernels": [10, 3, 3, 3, 3, 2, 2],
        }
    }
    assert fitted(16000, **layout) == (10, paper_prob)
    # a named span length is kept, with the paper's start chance; a named pair is kept whole
    assert fitted(16000, method_args={length_key: 5}) == (5, paper_prob)
    assert fitted(16000, method_args={length_key: 5, prob_key: 0.3}) == (5, 0.3)


def test_an_audio_run_built_without_the_recipe_masks_at_the_papers_spans():
    from selfsup.methods.hubert import HuBERTConfig
    from selfsup.views.masking import span_or_paper

    cfg = HuBERTConfig()
    assert (cfg.mask_prob, cfg.mask_length) == (None, None)  # left to the data
    assert span_or_paper(cfg.mask_prob, cfg.mask_length, cfg.paper_span) == (0.08, 10)
    with pytest.raises(Exception, match="mask_prob must lie in"):
        HuBERTConfig(mask_length=0).validate()
