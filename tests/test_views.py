"""Batched kornia views: shapes, memory format, randomness per image, the recipe's switches."""

from __future__ import annotations

import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.views import ImageAugment, ImageViews, prepare


def test_two_views_of_a_batch_are_normalised_channels_last_and_differ():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    v1, v2 = ImageViews(3, 32, ImageAugment())(images)
    assert v1.shape == v2.shape == (16, 3, 32, 32)
    assert v1.dtype == torch.float32 and v1.is_contiguous(memory_format=torch.channels_last)
    assert not torch.allclose(v1, v2)
    # each image gets its own crop: the views of two identical images differ
    same = images[:1].repeat(4, 1, 1, 1)
    a, _ = ImageViews(3, 32, ImageAugment())(same)
    assert not torch.allclose(a[0], a[1])


def test_one_channel_and_tiny_images_and_output_size():
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    views = ImageViews(1, 8, ImageAugment(output_size=12), num_views=3, channels_last=False)(images)
    assert len(views) == 3 and all(v.shape == (8, 1, 12, 12) for v in views)


def test_identity_recipe_reproduces_the_evaluation_input():
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    recipe = ImageAugment(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0
    )
    (view,) = ImageViews(1, 28, recipe, num_views=1)(images)
    torch.testing.assert_close(view, prepare(images), atol=1e-4, rtol=0)


def test_seeded_views_are_reproducible():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    views = ImageViews(3, 16, ImageAugment())
    torch.manual_seed(3)
    a = views(images)
    torch.manual_seed(3)
    b = views(images)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "bad",
    [
        {"crop_scale": (0.5, 0.2)},
        {"crop_scale": (0.0, 1.0)},
        {"flip_p": 1.5},
        {"output_size": 0},
        {"blur_p": -0.1},
    ],
)
def test_impossible_recipes_are_clear_errors(bad):
    with pytest.raises(SelfsupError):
        ImageViews(3, 32, ImageAugment(**bad))


@pytest.mark.parametrize(
    ("method", "section", "kept"),
    [
        ("rotation", "augment", {"jitter_p": 0.0, "grayscale_p": 0.0}),
        ("byol", "augment_2", {"solarize_p": 0.2, "saturation": 0.2}),
        ("dino", "global_augment", {"saturation": 0.2}),
    ],
)
def test_a_partial_augment_section_keeps_the_methods_own_defaults(method, section, kept):
    """Setting one key of a method's augment (here the crop scale) changes that key only: the
    rest stays the method's default, not ImageAugment's (which would turn on colour jitter
    for rotation, or drop BYOL's solarization)."""
    from selfsup.api import make_config

    key = f"method_args.{section}.crop_scale=[0.8, 1.0]"
    cfg = make_config({"method": method}, [key], data="fashion-mnist")
    augment = cfg.method_args[section]
    assert tuple(augment["crop_scale"]) == (0.8, 1.0)
    for name, value in kept.items():
        assert augment[name] == value, name


def test_views_under_bf16_autocast_are_the_float32_views():
    """The engine runs ``training_step`` (views included) under the run's autocast; the views
    must not be computed in bf16 (kornia's crop matrices moved pixels by up to 0.5 here)."""
    views = ImageViews(1, 28, ImageAugment(), 2, True)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    torch.manual_seed(0)
    fp32 = views(images)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = views(images)
    for a, b in zip(fp32, bf16, strict=True):
        assert b.dtype == torch.float32 and torch.equal(a, b)
