"""DINO: the loss against a slow reference, centering, the teacher temperature schedule, the
frozen last layer, multi-crop views, and the `selfsup attention` command."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.encoders import build_encoder
from selfsup.losses import DINOLoss
from selfsup.methods import DataInfo, build_method
from selfsup.methods.dino import DINOHead
from selfsup.views import ImageAugment
from selfsup.views.multicrop import MultiCropViews, local_crop_size


def reference_dino_loss(student, teacher, center, teacher_temp, student_temp):
    """The obvious way: every (teacher global crop i, student crop v ≠ i) pair, every sample."""
    V_t, B, _ = teacher.shape
    total, pairs = 0.0, 0
    for i in range(V_t):
        for v in range(student.shape[0]):
            if v == i:
                continue
            pair = 0.0
            for b in range(B):
                q = torch.softmax((teacher[i, b] - center) / teacher_temp, dim=0)
                log_p = torch.log_softmax(student[v, b] / student_temp, dim=0)
                pair += -(q * log_p).sum()
            total += pair / B
            pairs += 1
    return total / pairs


@pytest.mark.parametrize(
    "V_t, V_s, B, K, teacher_temp, student_temp",
    [
        (2, 2, 4, 8, 0.04, 0.1),
        (2, 8, 3, 16, 0.07, 0.1),
        (1, 3, 5, 6, 0.05, 0.2),
        (2, 5, 1, 32, 0.1, 0.5),
    ],
)
def test_loss_matches_slow_reference(V_t, V_s, B, K, teacher_temp, student_temp):
    g = torch.Generator().manual_seed(V_s * 100 + K)
    student = torch.randn(V_s, B, K, generator=g)
    teacher = torch.randn(V_t, B, K, generator=g)
    loss_fn = DINOLoss(K, student_temp=student_temp)
    loss_fn.center.copy_(0.3 * torch.randn(1, K, generator=g))
    center = loss_fn.center[0].clone()
    loss = loss_fn(student, teacher, teacher_temp)
    expected = reference_dino_loss(student, teacher, center, teacher_temp, student_temp)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_loss_gradient_reaches_the_student_only():
    student = torch.randn(4, 3, 10, requires_grad=True)
    teacher = torch.randn(2, 3, 10, requires_grad=True)
    DINOLoss(10)(student, teacher, 0.04).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_center_follows_the_teacher_batch_mean():
    K = 6
    loss_fn = DINOLoss(K, center_momentum=0.9)
    old = torch.randn(1, K)
    loss_fn.center.copy_(old)
    teacher = torch.randn(2, 5, K)
    loss_fn(torch.randn(4, 5, K), teacher, 0.04)
    expected = 0.9 * old + 0.1 * teacher.reshape(-1, K).mean(dim=0)
    torch.testing.assert_close(loss_fn.center, expected)
    assert "center" in loss_fn.state_dict()  # a buffer: checkpointed and restored


def test_the_loss_uses_the_center_from_before_its_update():
    K = 5
    loss_fn = DINOLoss(K)
    student, teacher = torch.randn(3, 2, K), torch.randn(2, 2, K) + 4.0
    first = loss_fn(student, teacher, 0.04)
    expected = reference_dino_loss(student, teacher, torch.zeros(K), 0.04, 0.1)
    torch.testing.assert_close(first, expected)


def dino(size=8, steps_per_epoch=None, **args):
    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=1, image_size=size, width=8)
    info = DataInfo(1, size, channels_last=False, steps_per_epoch=steps_per_epoch)
    return build_method("dino", {"out_dim": 64, **args}, encoder, info)


def test_teacher_temperature_warms_up_over_the_first_30_percent():
    method = dino()
    temps = {}
    for progress in (0.0, 0.15, 0.3, 0.6, 1.0):
        method.on_step_end(progress)
        temps[progress] = method.teacher_temp()
    assert temps[0.0] == pytest.approx(0.04)
    assert temps[0.15] == pytest.approx(0.055)
    assert temps[0.3] == pytest.approx(0.07) and temps[1.0] == pytest.approx(0.07)
    assert dino().teacher_temp() == pytest.approx(0.04)  # before any step


def test_teacher_is_an_ema_copy_without_gradients():
    method = dino()
    assert all(not p.requires_grad for p in method.teacher_encoder.parameters())
    assert all(not p.requires_grad for p in method.teacher_head.parameters())
    teacher_before = [p.clone() for p in method.teacher_head.parameters()]
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(1.0)
    method.on_step_end(0.0)  # momentum 0.996
    for before, t, s in zip(
        teacher_before, method.teacher_head.parameters(), method.head.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.996 * before + 0.004 * s)


def test_last_layer_is_frozen_for_the_first_epoch_then_trained():
    method = dino(steps_per_epoch=2)  # freeze_last_layer_epochs = 1: steps 0 and 1
    batch = {"image": torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)}
    last = method.head.last_layer.weight
    for step in range(3):
        method.zero_grad(set_to_none=True)
        method.training_step(batch)["loss"].backward()
        if step < 2:
            assert last.grad is None, step
            assert method.head.mlp[0].weight.grad is not None  # the rest of the head trains
        else:
            assert last.grad is not None and last.grad.abs().sum() > 0
        method.on_step_end(step / 10)
    # the step counter is a buffer, so a resumed run knows where the freeze ends
    resumed = dino(steps_per_epoch=2)
    resumed.load_state_dict(method.state_dict())
    assert int(resumed.steps_done) == 3
    resumed.training_step(batch)["loss"].backward()
    assert resumed.head.last_layer.weight.grad is not None


def test_without_steps_per_epoch_the_last_layer_is_never_frozen():
    method = dino()
    batch = {"image": torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)}
    method.training_step(batch)["loss"].backward()
    assert method.head.last_layer.weight.grad is not None


def test_head_gives_cosines_and_ignores_the_prototype_norms():
    head = DINOHead(16, 32, 8, 20)
    x = torch.randn(5, 16)
    out = head(x)
    assert out.shape == (5, 20) and out.abs().max() <= 1 + 1e-6
    with torch.no_grad():
        head.last_layer.weight.mul_(7.0)  # weight norm with its gain fixed to 1
    torch.testing.assert_close(head(x), out)


@pytest.mark.parametrize(
    "size, multiple, expected",
    [(28, 1, 12), (224, 1, 96), (8, 1, 4), (16, 4, 8), (8, 2, 4), (32, 4, 12)],
)
def test_local_crop_size(size, multiple, expected):
    assert local_crop_size(size, multiple) == expected


def test_multicrop_views_batch_each_resolution():
    views = MultiCropViews(
        3, 28, ImageAugment(crop_scale=(0.4, 1.0)), ImageAugment(crop_scale=(0.05, 0.4)), 2, 5
    )
    images = torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8)
    globals_, locals_ = views(images)
    assert globals_.shape == (8, 3, 28, 28) and locals_.shape == (20, 3, 12, 12)
    assert globals_.dtype == torch.float32 and torch.isfinite(locals_).all()
    assert not torch.equal(globals_[:4], globals_[4:])  # independent draws per crop
    no_local = MultiCropViews(3, 28, ImageAugment(), ImageAugment(), 2, 0)
    assert len(no_local(images)) == 1


def test_dino_step_with_a_vit_uses_patch_sized_local_crops():
    torch.manual_seed(0)
    encoder = build_encoder("vit-tiny", in_channels=1, image_size=16, depth=1, patch_size=4)
    method = build_method("dino", {"out_dim": 32}, encoder, DataInfo(1, 16, channels_last=False))
    assert method.views.local_size == 8  # 16·96/224 = 6.9, rounded to the 4 px patches
    out = method.training_step({"image": torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["features"].shape == (4, 192)
    assert 0 <= float(out["teacher_entropy"]) <= math.log(32) + 1e-4
    assert encoder.patch_embed.weight.grad is not None


def test_attention_command_draws_a_png_for_a_tiny_vit_dino_run(tmp_path, capsys):
    run = tmp_path / "run"
    argv = [
        "pretrain",
        "--method",
        "dino",
        "--encoder",
        "vit-tiny",
        "--data",
        "digits",
        "--out",
        str(run),
        "--no-eval",
        "--max-steps",
        "2",
        "--batch-size",
        "16",
        "--precision",
        "32-true",
        *("--set", "encoder_args.patch_size=2", "--set", "encoder_args.depth=2"),
        *("--set", "encoder_args.embed_dim=32", "--set", "encoder_args.num_heads=2"),
        *("--set", "method_args.out_dim=64", "--set", "method_args.num_local_crops=2"),
        *("--set", "train.progress=false"),
    ]
    assert main(argv) == 0
    out = tmp_path / "attention.png"
    assert main(["attention", str(run), "--images", "3", "--out", str(out)]) == 0
    with Image.open(out) as png:
        assert png.format == "PNG"
        width, height = png.size
    assert (width, height) == (150 * (2 + 2), 150 * 3)  # image + 2 heads + mean, 3 rows
    # without the export, the encoder comes from the latest checkpoint
    (run / "encoder.safetensors").unlink()
    assert main(["attention", str(run), "--images", "1", "--out", str(out)]) == 0


def test_attention_command_needs_a_vit(tmp_path, capsys):
    from selfsup.export import export_encoder

    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    export_encoder(encoder, tmp_path, method="dino", data="digits", image_size=8, channels=1)
    capsys.readouterr()
    assert main(["attention", str(tmp_path), "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: attention maps need a ViT encoder")
    assert not (tmp_path / "a.png").exists()
