"""Adapting and trusting an encoder: few-shot episodes, the supervised reference, LoRA
(peft) and ONNX export (onnxruntime), through the modality plug-ins."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import EvalConfig
from selfsup.data.images import TensorImageDataset
from selfsup.encoders import ENCODERS, build_encoder
from selfsup.errors import SelfsupError
from selfsup.evaluate.fewshot import fewshot_rows, prototype_accuracies, sample_episodes
from selfsup.evaluate.finetune import FinetuneConfig, finetune
from selfsup.modalities import MODALITIES
from selfsup.views import prepare
from selfsup.views.corruptions import IMAGE_CORRUPTIONS

FAST: dict[str, dict[str, Any]] = {
    "resnet18": {"width": 8},
    "resnet18-narrow": {"width": 4},
    "convnet": {"width": 8},
    "vit-tiny": {"depth": 2, "embed_dim": 48, "num_heads": 3},
    "vit-small": {"depth": 1, "embed_dim": 48, "num_heads": 3},
    "transformer-tiny": {"depth": 1, "embed_dim": 32, "num_heads": 2},
    "transformer-small": {"depth": 1, "embed_dim": 32, "num_heads": 2},
    "gpt-tiny": {"depth": 1, "embed_dim": 32, "num_heads": 2},
    "wav2vec2-tiny": {"conv_dim": 16, "depth": 1, "embed_dim": 32, "num_heads": 2},
    "wav2vec2-base": {
        "conv_dim": 16,
        "depth": 1,
        "embed_dim": 32,
        "num_heads": 2,
        "pos_kernel": 16,
        "pos_groups": 4,
    },
    "clip-tiny": {
        "image_options": {"width": 8},
        "text_options": {"depth": 1, "embed_dim": 32, "num_heads": 2},
        "proj_dim": 16,
    },
    "ts2vec-dilated": {"width": 8, "embed_dim": 16, "depth": 2},
    "video-vit-tiny": {"depth": 1, "embed_dim": 48, "num_heads": 3},
}
INPUTS = {
    "image": {"in_channels": 1, "image_size": 16},
    "text": {"vocab_size": 50, "max_length": 12, "pad_id": 0},
    "audio": {"sample_rate": 8000},
    "pairs": {"in_channels": 1, "image_size": 16, "vocab_size": 50, "max_length": 12, "pad_id": 0},
    "series": {"in_channels": 2},
    "video": {"in_channels": 1, "image_size": 16, "frames": 4},
    "graph": {"in_channels": 8},
}
TENSORLESS = {"graph"}
"""Modalities whose encoders read something other than one tensor (a PyG batch): no example
input, so no ONNX export; both refuse with one line."""


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def tiny(name: str) -> nn.Module:
    return build_encoder(name, **INPUTS[ENCODERS[name].modality], **FAST.get(name, {})).eval()


# --- few-shot ------------------------------------------------------------------------------


def test_episodes_are_class_balanced_and_deterministic() -> None:
    train_y = np.repeat(np.arange(8), 30)
    test_y = np.repeat(np.arange(8), 20)
    a = sample_episodes(train_y, test_y, n_way=5, k_shot=3, queries=15, episodes=40, seed=3)
    b = sample_episodes(train_y, test_y, n_way=5, k_shot=3, queries=15, episodes=40, seed=3)
    c = sample_episodes(train_y, test_y, n_way=5, k_shot=3, queries=15, episodes=40, seed=4)
    assert np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    assert not np.array_equal(a.support, c.support)
    assert a.support.shape == (40, 5, 3) and a.query.shape == (40, 5, 15)
    for e in range(40):
        assert len(set(a.classes[e])) == 5  # N distinct ways
        for n in range(5):
            assert (train_y[a.support[e, n]] == a.classes[e, n]).all()  # K of that class
            assert (test_y[a.query[e, n]] == a.classes[e, n]).all()  # Q of that class
            assert len(set(a.support[e, n])) == 3 and len(set(a.query[e, n])) == 15
    # every class is drawn about equally often (40 × 5 = 200 draws over 8 classes)
    counts = np.bincount(a.classes.ravel(), minlength=8)
    assert counts.min() >= 10


def test_episodes_refuse_too_few_classes() -> None:
    with pytest.raises(SelfsupError, match="lower n_way"):
        sample_episodes(np.repeat(np.arange(3), 10), np.repeat(np.arange(3), 20), n_way=5)


def slow_prototype_accuracy(train_x, test_x, support, query) -> float:
    """One episode the obvious way: normalise, average each way's support, nearest mean."""
    correct = total = 0
    prototypes = [
        torch.stack([train_x[i] / train_x[i].norm() for i in way]).mean(0) for way in support
    ]
    for truth, way in enumerate(query):
        for i in way:
            q = test_x[i] / test_x[i].norm()
            distances = [float(((q - p) ** 2).sum()) for p in prototypes]
            correct += int(np.argmin(distances) == truth)
            total += 1
    return correct / total


@pytest.mark.parametrize("k_shot", [1, 5])
def test_prototype_classifier_matches_the_slow_reference(k_shot: int) -> None:
    g = torch.Generator().manual_seed(0)
    train_y, test_y = np.repeat(np.arange(6), 12), np.repeat(np.arange(6), 16)
    centres = torch.randn(6, 8, generator=g)
    train_x = centres[train_y] + 0.8 * torch.randn(len(train_y), 8, generator=g)
    test_x = 3 * (centres[test_y] + 0.8 * torch.randn(len(test_y), 8, generator=g))  # scale-free
    episodes = sample_episodes(train_y, test_y, n_way=4, k_shot=k_shot, queries=5, episodes=7)
    fast = prototype_accuracies(train_x, test_x, episodes, chunk=3)
    slow = [
        slow_prototype_accuracy(train_x, test_x, episodes.support[e], episodes.query[e])
        for e in range(7)
    ]
    assert torch.allclose(fast, torch.tensor(slow, dtype=torch.float64))


def test_fewshot_rows_give_mean_and_confidence_interval() -> None:
    g = torch.Generator().manual_seed(1)
    train_y, test_y = torch.arange(10).repeat(20), torch.arange(10).repeat(20)
    centres = torch.randn(10, 16, generator=g)
    good = (
        centres[train_y] + 0.3 * torch.randn(200, 16, generator=g),
        centres[test_y] + 0.3 * torch.randn(200, 16, generator=g),
    )
    noise = (torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g))
    rows = fewshot_rows({"good": good, "noise": noise}, train_y, test_y, episodes=100)
    assert [(r["encoder"], r["k_shot"]) for r in rows] == [
        ("good", 1),
        ("noise", 1),
        ("good", 5),
        ("noise", 5),
    ]
    by = {(r["encoder"], r["k_shot"]): r for r in rows}
    assert by["good", 5]["accuracy"] > 0.9 and abs(by["noise", 5]["accuracy"] - 0.2) < 0.1
    assert by["good", 5]["accuracy"] >= by["good", 1]["accuracy"]
    r = by["noise", 1]
    assert r["ci95"] == pytest.approx(1.96 * r["std"] / math.sqrt(100))
    assert r["protocol"] == "fewshot" and r["n_way"] == 5 and r["episodes"] == 100


# --- the modality hooks --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_every_modality_gives_example_inputs(name: str) -> None:
    encoder = tiny(MODALITIES[name].default_encoder)
    if name in TENSORLESS:
        with pytest.raises(SelfsupError, match="not supported yet"):
            MODALITIES[name].example_input(encoder, 3, seed=0)
        return
    x = MODALITIES[name].example_input(encoder, 3, seed=0)
    assert torch.equal(x, MODALITIES[name].example_input(encoder, 3, seed=0))
    assert encoder(x).shape == (3, encoder.embed_dim)


# --- LoRA ----------------------------------------------------------------------------------


def images(n: int, seed: int) -> TensorImageDataset:
    """Two classes a linear probe of random features cannot split well: a bright square at
    the top left or at the bottom right."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 2
    for i in range(n):
        r, c = (2, 2) if y[i] == 0 else (9, 9)
        x[i, 0, r : r + 5, c : c + 5] = 250
    return TensorImageDataset(x, y, name="squares", split="train")


@pytest.mark.parametrize("name", ["vit-tiny", "convnet"])
def test_lora_trains_only_the_adapters_and_merges_exactly(name: str) -> None:
    pytest.importorskip("peft")
    from selfsup.evaluate.lora import add_lora, merge_lora

    encoder = tiny(name)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    cfg = FinetuneConfig(epochs=3, batch_size=16, lr=0.05, progress=False, precision="32-true")
    result = finetune(
        encoder,
        images(64, 0),
        images(32, 1),
        cfg,
        to_input=prepare,
        input_key="image",
        adapter=lambda e: add_lora(e, rank=4, alpha=8),
        return_model=True,
    )
    adapted = result["encoder"]
    trained = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    assert result["trainable_params"] < 0.2 * result["total_params"]
    # the caller's encoder is untouched, and the adapters moved off their zero start
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert any(p.abs().max() > 0 for p in lora_b)
    x = prepare(images(5, 2).as_tensor())
    with torch.no_grad():
        expected = adapted(x)
        merged = merge_lora(adapted)
        assert type(merged) is type(encoder) and not any(
            "lora" in n for n, _ in merged.named_parameters()
        )
        assert torch.allclose(merged(x), expected, atol=1e-4)
        assert not torch.allclose(merged(x), encoder(x), atol=1e-4)  # it did adapt


def test_lora_adapter_saves_alone_and_reloads(tmp_path) -> None:
    pytest.importorskip("peft")
    import peft
    from safetensors.torch import load_file

    from selfsup.evaluate.lora import add_lora, save_adapter

    encoder = tiny("vit-tiny")
    fresh = add_lora(copy.deepcopy(encoder), rank=2, alpha=4)  # a second copy of the same base
    adapted = add_lora(encoder, rank=2, alpha=4)
    for n, p in adapted.named_parameters():
        if "lora_B" in n:
            nn.init.normal_(p)
    path = save_adapter(adapted, tmp_path, label_fraction=1.0)
    state = load_file(path)
    assert state and all("lora_" in k for k in state)
    spec = json.loads((tmp_path / "adapter.json").read_text())
    assert spec["rank"] == 2 and "blocks.0.attn.qkv" in spec["target_modules"]
    peft.set_peft_model_state_dict(fresh, state)
    x = MODALITIES["image"].example_input(encoder, 2)
    with torch.no_grad():
        assert torch.allclose(fresh(x), adapted(x))


# --- the evaluation run: supervised reference, LoRA, few-shot rows --------------------------


def test_evaluation_adds_supervised_lora_and_fewshot_rows(tmp_path) -> None:
    pytest.importorskip("peft")
    from selfsup.evaluate.run import evaluate_run
    from selfsup.export import export_encoder, load_encoder

    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    export_encoder(encoder, tmp_path / "run", image_size=8, channels=1, method="test")
    ev = EvalConfig(
        protocols=("linear", "fewshot", "supervised", "lora"),
        label_fractions=(1.0,),
        seeds=(0,),
        max_train=300,
        finetune_fractions=(0.1, 1.0),
        finetune_epochs=1,
        fewshot_episodes=20,
        lora_merge=True,
        report=False,
        batch_size=256,
    )
    rows = evaluate_run(tmp_path / "run", "digits", eval_cfg=ev)
    kinds = {(r["encoder"], r["protocol"]) for r in rows}
    assert {("test", "linear"), ("raw", "fewshot"), ("random-init", "fewshot")} <= kinds
    assert {("supervised", "supervised"), ("test", "lora")} <= kinds
    lora = [r for r in rows if r["protocol"] == "lora"]
    assert [r["label_fraction"] for r in lora] == [0.1, 1.0]
    assert all(0 < r["trainable_share"] < 0.3 for r in lora)
    assert (tmp_path / "run" / "lora" / "adapter.safetensors").is_file()
    merged = load_encoder(tmp_path / "run" / "lora" / "merged")
    assert merged.embed_dim == encoder.embed_dim
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert len(saved) == len(rows)


def test_cli_refuses_an_unknown_protocol(capsys) -> None:
    from selfsup.cli import main

    assert main(["evaluate", "somewhere", "--protocol", "magic"]) == 2
    assert "invalid choice" in capsys.readouterr().err


# --- ONNX ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_onnx_export_matches_pytorch(name: str, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from selfsup.onnx_export import export_onnx

    encoder = tiny(name)
    if ENCODERS[name].modality in TENSORLESS:
        with pytest.raises(SelfsupError, match="not supported yet"):
            export_onnx(encoder, tmp_path / "encoder.onnx")
        return
    result = export_onnx(encoder, tmp_path / "encoder.onnx")
    assert (tmp_path / "encoder.onnx").is_file()
    assert result["max_abs_diff"] <= 1e-4 * max(1.0, result["max_abs_feature"])


def test_onnx_export_refuses_a_wrong_graph(tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    import selfsup.onnx_export as onnx_export

    encoder = tiny("convnet")
    real = torch.onnx.export

    def exports_another_model(model, args, path, **kwargs):  # a broken exporter
        broken = build_encoder("convnet", **INPUTS["image"], **FAST["convnet"]).eval()
        return real(broken, args, path, **kwargs)

    monkeypatch.setattr(onnx_export.torch.onnx, "export", exports_another_model)
    with pytest.raises(SelfsupError, match="away from"):
        onnx_export.export_onnx(encoder, tmp_path / "encoder.onnx")
    assert not (tmp_path / "encoder.onnx").exists()


def test_onnx_export_needs_a_registered_encoder(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from selfsup.onnx_export import export_onnx

    class Mine(nn.Module):
        embed_dim = 4

        def forward(self, x):
            return x[:, :4]

    with pytest.raises(SelfsupError, match="cannot tell what data"):
        export_onnx(Mine(), tmp_path / "encoder.onnx")


# --- robustness ----------------------------------------------------------------------------


def garments(n: int = 48, size: int = 28) -> torch.Tensor:
    """uint8 (n, 1, size, size) images with coarse shapes and fine texture."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=g)
    coarse = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = 0.6 * coarse + 0.4 * torch.rand(n, 1, size, size, generator=g)
    return (x * 255).to(torch.uint8)


@pytest.mark.parametrize("kind", sorted(IMAGE_CORRUPTIONS))
def test_image_corruption_is_identity_at_zero_and_grows(kind: str) -> None:
    from selfsup.views.corruptions import corrupt_images

    x = garments()
    assert torch.equal(corrupt_images(x, kind, 0), x)
    shifts = [
        float((corrupt_images(x, kind, s, seed=1).float() - x.float()).abs().mean())
        for s in range(6)
    ]
    assert shifts[0] == 0 and all(a < b for a, b in zip(shifts, shifts[1:])), shifts
    again = corrupt_images(x, kind, 3, seed=1)
    assert torch.equal(again, corrupt_images(x, kind, 3, seed=1)) and again.dtype == torch.uint8


@pytest.mark.parametrize("kind", ["character_noise", "word_dropout", "casing"])
def test_text_corruption_is_identity_at_zero_and_grows(kind: str) -> None:
    from selfsup.views.text_corruptions import corrupt_texts

    texts = ["The quick brown fox jumps over the lazy dog near the river bank today"] * 30
    assert corrupt_texts(texts, kind, 0) == texts
    changed = [
        sum(
            a != b
            for t, c in zip(texts, corrupt_texts(texts, kind, s, seed=2))
            for a, b in zip(t, c)
        )
        + sum(abs(len(t) - len(c)) for t, c in zip(texts, corrupt_texts(texts, kind, s, seed=2)))
        for s in range(6)
    ]
    assert changed[0] == 0 and all(a < b for a, b in zip(changed, changed[1:])), changed
    assert corrupt_texts(texts, kind, 4, seed=2) == corrupt_texts(texts, kind, 4, seed=2)


def test_corruption_refuses_unknown_kind_and_severity() -> None:
    from selfsup.views.corruptions import corrupt_images

    with pytest.raises(SelfsupError, match="unknown image corruption"):
        corrupt_images(garments(2), "fog", 1)
    with pytest.raises(SelfsupError, match="0..5"):
        corrupt_images(garments(2), "contrast", 6)


def test_robustness_rows_score_the_clean_probe_on_each_shift(tmp_path) -> None:
    from selfsup.evaluate.run import evaluate_run
    from selfsup.export import export_encoder

    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    export_encoder(encoder, tmp_path / "run", image_size=8, channels=1, method="test")
    ev = EvalConfig(
        protocols=("robustness",), seeds=(0,), max_train=300, report=True, batch_size=512
    )
    rows = evaluate_run(tmp_path / "run", "digits", eval_cfg=ev)
    means = {r["encoder"]: r for r in rows if r["corruption"] == "mean"}
    assert set(means) == {"test", "random-init", "raw"}
    kinds = MODALITIES["image"].corruptions
    shifted = [r for r in rows if r["encoder"] == "raw" and r["corruption"] != "mean"]
    assert len(shifted) == 5 * len(kinds)
    assert means["raw"]["accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in shifted]))
    # the strongest noise hurts the raw pixels' probe more than the mildest
    noise = {r["severity"]: r["accuracy"] for r in shifted if r["corruption"] == "gaussian_noise"}
    assert noise[5] < noise[1] <= means["raw"]["clean_accuracy"] + 0.02
    assert "Robustness to corruptions" in (tmp_path / "run" / "report.html").read_text()
