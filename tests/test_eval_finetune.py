"""Fine-tuning: it learns what frozen features cannot, leaves the caller's encoder alone,
applies layer-wise lr decay exactly, runs on the engine (precision, NaN guard, time budget,
DDP), stops on time and repeats with its seed; evaluation streams its data."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
import torch
from engine_clock import one_second_steps
from lightning_fabric import Fabric
from spawn import launch_two
from torch import Tensor, nn
from torch.utils.data import Dataset

from selfsup.config import EvalConfig, from_dict
from selfsup.data.images import TensorImageDataset
from selfsup.encoders.transformer import TextTransformer
from selfsup.encoders.vit import VisionTransformer
from selfsup.engine import TrainingDiverged
from selfsup.engine.optim import cosine_lr
from selfsup.errors import SelfsupError
from selfsup.evaluate.finetune import (
    FinetuneConfig,
    finetune,
    finetune_param_groups,
    image_finetune_augment,
    layer_ids,
)
from selfsup.evaluate.linear import linear_probe
from selfsup.views import prepare


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: on a busy 2-core machine a second thread makes them ~10× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(**changes) -> FinetuneConfig:
    """The tests' fine-tuning settings: the defaults, without the progress bar."""
    return FinetuneConfig(progress=False, **changes)


class Labelled(Dataset):
    """A map-style data set of ``{input_key: x[i], "label": int}`` samples, without a
    ``labels()`` of its own (fine-tuning then reads the labels sample by sample)."""

    def __init__(self, x: Tensor, y: Tensor, input_key: str = "x") -> None:
        self.x, self.y, self.input_key = x, y, input_key

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {self.input_key: self.x[index], "label": int(self.y[index])}


class MLP(nn.Module):
    """A tiny encoder without blocks: 32 -> 64 -> embed_dim."""

    def __init__(self, embed_dim: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed_dim = embed_dim
        self.net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def quadrant_task(n: int, seed: int) -> Labelled:
    """x ~ N(0, I_32); the class is the quadrant of (x·w1, x·w2) for two fixed directions,
    which a random 4-d projection mostly loses."""
    w = torch.randn(2, 32, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))
    s = x @ w.T  # (n, 2)
    return Labelled(x, (s[:, 0] > 0).long() + 2 * (s[:, 1] > 0).long())


def stripes(n: int, seed: int) -> TensorImageDataset:
    """uint8 (n, 1, 8, 8) noisy stripes 2 px wide at a random phase: horizontal (class 0) or
    vertical (class 1), a pattern that survives flips and crops of half the area."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    phase = torch.randint(0, 4, (n, 1, 1), generator=g)
    r = torch.arange(8)
    horizontal = ((r[None, :, None] + phase) // 2 % 2).expand(n, 8, 8)
    vertical = ((r[None, None, :] + phase) // 2 % 2).expand(n, 8, 8)
    pattern = torch.where(y[:, None, None].bool(), vertical, horizontal)
    noise = torch.randint(0, 100, (n, 8, 8), generator=g)
    images = (60 + 100 * pattern + noise).to(torch.uint8)[:, None]
    return TensorImageDataset(images, y, name="stripes", split=str(seed))


def tiny_vit(depth: int = 2) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        in_channels=1, image_size=8, patch_size=4, embed_dim=32, depth=depth, num_heads=2
    )


def no_channels_last(x: torch.Tensor) -> torch.Tensor:
    return prepare(x, channels_last=False)


def frozen_probe(encoder: nn.Module, train: Labelled, test: Labelled) -> float:
    with torch.no_grad():
        return linear_probe(encoder(train.x), train.y, encoder(test.x), test.y)["accuracy"]


def test_finetuning_learns_what_frozen_random_features_miss():
    train, test = quadrant_task(2000, seed=0), quadrant_task(1000, seed=1)
    encoder = MLP()
    frozen = frozen_probe(encoder, train, test)
    result = finetune(encoder, train, test, config(epochs=10, batch_size=64, lr=1e-2))
    assert frozen < 0.6
    assert result["accuracy"] > 0.85
    assert result["steps"] == 10 * (2000 // 64) and result["epochs"] == 10.0
    assert result["lr"] == pytest.approx(1e-2 * 64 / 256)
    assert not result["stopped_early"] and result["num_test"] == 1000


def test_vit_on_images_with_to_input_and_augment():
    result = finetune(
        tiny_vit(),
        stripes(256, seed=0),
        stripes(200, seed=1),
        config(epochs=12, batch_size=32, lr=3e-2),
        to_input=no_channels_last,
        augment=image_finetune_augment,
    )
    assert result["accuracy"] > 0.9


def test_caller_encoder_is_never_modified(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    encoder = tiny_vit()
    encoder.blocks[0].requires_grad_(False)  # a caller's frozen block stays frozen
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    flags = {n: p.requires_grad for n, p in encoder.named_parameters()}
    rng = torch.get_rng_state()
    python_rng, numpy_rng = random.getstate(), np.random.get_state()
    data = stripes(64, seed=0)
    out = finetune(
        encoder,
        data,
        data,
        config(epochs=2, batch_size=32),
        to_input=no_channels_last,
        augment=image_finetune_augment,
        return_model=True,
    )
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == {n: p.requires_grad for n, p in encoder.named_parameters()}
    assert encoder.training
    assert torch.equal(rng, torch.get_rng_state())  # the run's seeding is forked off
    assert random.getstate() == python_rng  # the engine seeds Python and NumPy too
    assert np.array_equal(np.random.get_state()[1], numpy_rng[1])
    assert "PL_GLOBAL_SEED" not in os.environ  # and leaves Lightning's seed variables
    trained = out["encoder"]
    assert trained is not encoder
    assert not torch.equal(trained.blocks[0].mlp[0].weight, encoder.blocks[0].mlp[0].weight)


def test_layer_ids_and_group_scales_follow_mae():
    encoder, head = tiny_vit(depth=3), nn.Linear(32, 5)
    ids = layer_ids(encoder)
    assert ids is not None
    for name, layer in ids.items():
        if name.startswith(("cls_token", "mask_token", "pos_embed", "patch_embed")):
            assert layer == 0, name
        elif name.startswith("blocks."):
            assert layer == int(name.split(".")[1]) + 1, name
        else:
            assert name.startswith("norm.") and layer == 4, name
    groups = finetune_param_groups(encoder, head, weight_decay=0.05, layer_decay=0.5)
    params = dict(encoder.named_parameters()) | {f"head.{n}": p for n, p in head.named_parameters()}
    seen = []
    for group in groups:
        for name, p in zip(group["param_names"], group["params"], strict=True):
            assert p is params[name]
            layer = 4 if name.startswith("head.") else ids[name]
            assert group["lr_scale"] == pytest.approx(0.5 ** (4 - layer)), name
            assert group["weight_decay"] == (0.05 if p.ndim > 1 else 0.0), name
            seen.append(name)
    assert sorted(seen) == sorted(params)
    assert min(g["lr_scale"] for g in groups) == pytest.approx(0.5**4)  # embeddings


def test_text_transformer_layers_and_finetuning():
    """Token inputs need no to_input; the embeddings are layer 0, the final norm the top."""
    torch.manual_seed(0)
    encoder = TextTransformer(
        vocab_size=24, max_length=12, embed_dim=32, depth=2, num_heads=2, dropout=0.0
    )
    ids = layer_ids(encoder)
    assert ids is not None
    assert ids["token_embed.weight"] == ids["pos_embed"] == ids["mask_token"] == 0
    assert ids["blocks.1.mlp.0.weight"] == 2 and ids["norm.weight"] == 3

    def marked(n, seed):  # class c: token 3 + c hidden among random tokens 5..23
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(5, 24, (n, 12), generator=g)
        y = torch.arange(n) % 2
        tokens[torch.arange(n), torch.randint(0, 12, (n,), generator=g)] = 3 + y
        return Labelled(tokens, y, input_key="tokens")

    result = finetune(
        encoder, marked(256, seed=0), marked(200, seed=1), config(epochs=10, batch_size=32, lr=3e-2)
    )
    assert result["accuracy"] > 0.9


def test_encoder_without_blocks_gets_plain_adamw_groups():
    groups = finetune_param_groups(MLP(), nn.Linear(4, 3), weight_decay=0.1, layer_decay=0.75)
    assert all(g["lr_scale"] == 1.0 for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.1]
    no_decay = groups[0]["param_names"]
    assert sorted(no_decay) == ["head.bias", "net.0.bias", "net.2.bias"]
    vit_groups = finetune_param_groups(
        tiny_vit(), nn.Linear(32, 2), weight_decay=0.1, layer_decay=None
    )
    assert all(g["lr_scale"] == 1.0 for g in vit_groups)


def test_optimizer_lr_of_every_group_each_step(monkeypatch):
    """The engine's AdamW sees peak_lr(t) × 0.5^(depth + 1 - layer) in every group at every
    step."""
    recorded = []

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            recorded.append([(g["param_names"], g["lr"]) for g in self.param_groups])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    data = stripes(64, seed=0)
    encoder = tiny_vit(depth=2)
    ids = layer_ids(encoder)
    result = finetune(
        encoder,
        data,
        data,
        config(epochs=3, batch_size=16, lr=2e-3, layer_decay=0.5, warmup_fraction=0.25),
        to_input=no_channels_last,
    )
    total, peak = 3 * 4, 2e-3 * 16 / 256
    assert len(recorded) == result["steps"] == total
    names_seen = set()
    for step, groups in enumerate(recorded):
        base = cosine_lr(step, total, peak, warmup_steps=3)
        for names, lr in groups:
            layer = 3 if names[0].startswith("head.") else ids[names[0]]
            assert all((3 if n.startswith("head.") else ids[n]) == layer for n in names)
            assert lr == pytest.approx(base * 0.5 ** (3 - layer), rel=1e-9)
            names_seen.update(names)
    assert len(names_seen) == len(ids) + 2


def test_layer_decay_slows_the_embeddings():
    data = stripes(64, seed=0)
    start = tiny_vit(depth=1)

    def moved(layer_decay):
        settings = config(
            epochs=2, batch_size=16, lr=1e-2, weight_decay=0.0, layer_decay=layer_decay
        )
        out = finetune(start, data, data, settings, to_input=no_channels_last, return_model=True)
        delta = out["encoder"].patch_embed.weight - start.patch_embed.weight
        return float(delta.detach().abs().max())

    # scale 1e-3² = 1e-6 on the embeddings: AdamW steps of lr·1e-6 barely move them
    assert moved(1e-3) < 1e-3 * moved(None)


def test_max_time_stops_early_and_still_evaluates():
    train, test = quadrant_task(512, seed=0), quadrant_task(256, seed=1)
    result = finetune(MLP(), train, test, config(epochs=100000, batch_size=64, max_time=0.3))
    assert result["stopped_early"]
    assert 1 <= result["steps"] < 100000 * 8
    assert result["epochs"] == pytest.approx(result["steps"] / 8)
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["seconds"] < 10
    once = finetune(MLP(), train, test, config(epochs=5, max_time=0.0))
    assert once["steps"] == 1 and once["stopped_early"]


def test_the_time_budget_is_honoured(monkeypatch):
    """The budget covers the LP-FT starting probe and the training loop: on a clock where
    each step takes 1 s and the probe 7 s, a 30 s budget leaves the loop about 23 steps, and
    the schedule was fitted to them (stopped early though its epochs were far from done)."""
    import importlib
    import types

    ft = importlib.import_module("selfsup.evaluate.finetune")  # the module, not the function

    seen = one_second_steps(monkeypatch)
    probe_cost = 7.0
    spent = {"probe": 0.0}

    def clock() -> float:
        return float(len(seen)) + spent["probe"]

    fitted = ft._probe_head

    def slow_probe(*args, **kwargs):
        fitted(*args, **kwargs)
        spent["probe"] += probe_cost

    monkeypatch.setattr(ft, "_probe_head", slow_probe)
    monkeypatch.setattr(ft, "time", types.SimpleNamespace(perf_counter=clock))
    budget = 30
    result = finetune(
        MLP(),
        quadrant_task(512, seed=0),
        quadrant_task(256, seed=1),
        config(epochs=100000, batch_size=64, max_time=budget, head_init="probe"),
    )
    assert spent["probe"] == probe_cost
    assert result["stopped_early"] and result["steps"] > 12  # past the speed calibration
    assert budget - probe_cost - 2 <= result["steps"] <= budget - probe_cost + 1
    last_step, horizon = seen[-1]
    assert horizon - result["steps"] <= 1  # the schedule ended with the time left


def test_same_seed_same_result_other_seed_differs():
    train, test = stripes(96, seed=0), stripes(64, seed=1)
    encoder = tiny_vit()

    def run(seed, caller_seed):
        torch.manual_seed(caller_seed)  # the run seeds its own RNG, whatever the caller's state
        return finetune(
            encoder,
            train,
            test,
            config(epochs=2, batch_size=32, seed=seed),
            to_input=no_channels_last,
            augment=image_finetune_augment,
            return_model=True,
        )

    a, b, c = run(0, caller_seed=1), run(0, caller_seed=2), run(1, caller_seed=1)
    assert a["accuracy"] == b["accuracy"] and a["train_loss"] == b["train_loss"]
    for p, q in zip(a["encoder"].parameters(), b["encoder"].parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(a["head"].weight, b["head"].weight)
    assert a["train_loss"] != c["train_loss"]


def test_small_training_set_is_one_batch():
    train = quadrant_task(40, seed=0)
    result = finetune(MLP(), train, train, config(epochs=3, batch_size=128))
    assert result["steps"] == 3 and result["lr"] == pytest.approx(1e-3 * 40 / 256)


def test_augment_identity_mirror_and_zoom_are_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 6, 10, generator=g)
    whole = (10 / 6, 10 / 6)  # the image's own width / height
    same = image_finetune_augment(x, scale=(1, 1), ratio=whole, flip_p=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    mirror = image_finetune_augment(x, scale=(1, 1), ratio=whole, flip_p=1.0)
    assert torch.allclose(mirror, x.flip(-1), atol=1e-5)
    # a crop of a quarter of the area of a linear ramp is a ramp of half the slope
    ramp = torch.arange(16.0).expand(4, 1, 16, 16).contiguous()
    zoom = image_finetune_augment(
        ramp, scale=(0.25, 0.25), ratio=(1, 1), flip_p=0.0, generator=g.manual_seed(3)
    )
    assert torch.allclose(zoom.diff(dim=-1), torch.full_like(zoom.diff(dim=-1), 0.5), atol=1e-3)
    assert torch.allclose(zoom.diff(dim=-2), torch.zeros_like(zoom.diff(dim=-2)), atol=1e-3)
    # the 8-px-wide window's left edge lies in [0, 8] px; output pixels are 0.5 px wide,
    # so the first samples the ramp 0.25 px right of that edge, i.e. at value edge - 0.25
    starts = zoom[:, 0, 0, 0] + 0.25
    assert (starts >= -1e-3).all() and (starts <= 8 + 1e-3).all()
    assert starts.unique().numel() == 4


def test_augment_is_batched_random_in_range_and_seedable():
    x = torch.rand(64, 3, 12, 12)
    a = image_finetune_augment(x, generator=torch.Generator().manual_seed(1))
    b = image_finetune_augment(x, generator=torch.Generator().manual_seed(1))
    c = image_finetune_augment(x, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= x.min() - 1e-6 and a.max() <= x.max() + 1e-6
    assert not torch.allclose(a, x)
    with pytest.raises(SelfsupError, match="prepare"):
        image_finetune_augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_bad_inputs_raise_advice():
    data = quadrant_task(32, seed=0)
    with pytest.raises(SelfsupError, match="embed_dim"):
        finetune(nn.Linear(32, 4), data, data)
    with pytest.raises(SelfsupError, match="to_input"):
        images = stripes(8, seed=0)
        finetune(tiny_vit(), images, images)
    with pytest.raises(SelfsupError, match="'label'"):  # samples without labels
        bare = [{"x": x} for x in data.x]
        finetune(MLP(), bare, bare, input_key="x")
    with pytest.raises(SelfsupError, match=r"unlabelled \(-1\)"):  # a source without labels
        unlabelled = TensorImageDataset(stripes(8, seed=0).as_tensor(), None, name="u", split="")
        finetune(tiny_vit(), unlabelled, unlabelled, to_input=no_channels_last)
    with pytest.raises(SelfsupError, match="input_key"):
        finetune(MLP(), data, data, input_key="image")
    with pytest.raises(SelfsupError, match="num_classes"):
        finetune(MLP(), data, data, num_classes=2)
    with pytest.raises(SelfsupError, match="layer_decay"):
        finetune(MLP(), data, data, config(layer_decay=1.5))

    class Tokens(MLP):
        def forward(self, x):
            return super().forward(x)[:, None].expand(-1, 3, -1)  # (B, 3, D): not pooled

    with pytest.raises(SelfsupError, match="pool"):
        finetune(Tokens(), data, data, config(epochs=1))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_probe_head_starts_fine_tuning_at_the_linear_probe(precision):
    """LP-FT: with head_init="probe" and a learning rate too small to move anything, the
    result is the frozen features' linear probe (the standardisation folded into the head);
    the default small head stays at chance. Under bf16-mixed the features are bfloat16 but
    the probe is fitted in float32 (L-BFGS under autocast lost 12 points here)."""
    train, test = quadrant_task(2000, seed=0), quadrant_task(1000, seed=1)
    encoder = MLP(embed_dim=16)
    probe = frozen_probe(encoder, train, test)
    still = {"epochs": 1, "batch_size": 64, "lr": 1e-12, "label_smoothing": 0.0}
    still["precision"] = precision
    started = finetune(encoder, train, test, config(head_init="probe", **still))
    small = finetune(encoder, train, test, config(**still))
    assert probe > 0.4
    assert started["accuracy"] == pytest.approx(probe, abs=0.02)
    assert small["accuracy"] < probe - 0.1


def test_time_limited_schedule_fits_the_time(monkeypatch):
    """On a clock where each step takes 1 s, a 40 s budget fits 40 of 800 planned steps: the
    engine's cosine schedule is refitted to end there (lr → 0 at the last step), not cut at
    its peak."""
    seen = one_second_steps(monkeypatch)
    train, test = quadrant_task(512, seed=0), quadrant_task(256, seed=1)
    result = finetune(MLP(), train, test, config(epochs=100, batch_size=64, max_time=40))
    assert result["stopped_early"]
    last_step, horizon = seen[-1]
    assert horizon < 100 * 8  # refitted
    assert last_step + 1 == result["steps"]
    assert horizon - result["steps"] <= 1  # the schedule ended with the time
    assert 30 <= result["steps"] <= 40
    untimed = finetune(MLP(), train, test, config(epochs=2, batch_size=64))
    assert not untimed["stopped_early"] and untimed["steps"] == 16


def test_a_step_budget_ends_the_run_and_its_schedule(monkeypatch):
    """``max_steps`` stops the run after exactly that many steps, whatever the machine's
    speed, and the cosine schedule is fitted to it (its horizon is the budget)."""
    seen = one_second_steps(monkeypatch)
    train, test = quadrant_task(512, seed=0), quadrant_task(256, seed=1)
    result = finetune(MLP(), train, test, config(epochs=100, batch_size=64, max_steps=13))
    assert result["steps"] == 13 and result["stopped_early"]
    assert seen[-1] == (12, 13)  # the last step ran at the end of a 13-step schedule


# ------------------------------------------------------------------- on the engine's loop


def test_bf16_mixed_finetuning_computes_in_bf16_and_learns_as_float32():
    train, test = quadrant_task(1000, seed=0), quadrant_task(500, seed=1)

    def run(precision):
        settings = config(epochs=6, batch_size=64, lr=1e-2, precision=precision)
        return finetune(MLP(), train, test, settings)

    bf16, fp32 = run("bf16-mixed"), run("32-true")
    assert (bf16["precision"], fp32["precision"]) == ("bf16-mixed", "32-true")
    assert math.isfinite(bf16["train_loss"])
    assert bf16["train_loss"] != fp32["train_loss"]  # the steps really ran in bfloat16
    assert bf16["accuracy"] == pytest.approx(fp32["accuracy"], abs=0.03)


class TurnsNaN(MLP):
    """Its features become NaN from the third forward pass on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        z = super().forward(x)
        return z * float("nan") if self.calls >= 3 else z


def test_a_nan_loss_stops_fine_tuning_with_one_line():
    data = quadrant_task(256, seed=0)
    with pytest.raises(
        TrainingDiverged, match=r"fine-tuning loss became nan at step 3; lower lr"
    ) as error:
        finetune(TurnsNaN(), data, data, config(epochs=2, batch_size=64))
    assert "\n" not in str(error.value) and error.value.step == 3


def _fine_tune_share(fabric: Fabric) -> tuple[float, int, float, dict]:
    """Fine-tune on this process's share of a global batch of 32 (LP-FT head, no augment,
    no dropout: every process computes the same thing as one process would)."""
    settings = config(
        epochs=2,
        batch_size=32 // fabric.world_size,
        lr=1e-2,
        head_init="probe",
        warmup_fraction=0.2,
    )
    out = finetune(
        MLP(),
        quadrant_task(256, seed=0),
        quadrant_task(120, seed=1),
        settings,
        fabric=fabric,
        return_model=True,
    )
    named = [*out["encoder"].named_parameters(), *out["head"].named_parameters(prefix="head")]
    weights = {n: p.detach().numpy().copy() for n, p in named}  # numpy: safe across processes
    return out["accuracy"], out["steps"], out["train_loss"], weights


@pytest.mark.slow
def test_two_processes_fine_tune_like_one_with_the_whole_batch():
    one = Fabric(accelerator="cpu", devices=1).launch(_fine_tune_share)
    two = launch_two(_fine_tune_share)
    assert two[1] == one[1] == 2 * (256 // 32)
    assert two[0] == one[0]
    assert two[2] == pytest.approx(one[2], rel=1e-5)
    for name, weight in one[3].items():
        np.testing.assert_allclose(two[3][name], weight, rtol=1e-4, atol=1e-6, err_msg=name)


class Series(Dataset):
    """Series of 3-12 steps, ``{"series": float32 (T,), "label": int}``: class 1 drifts up,
    class 0 down."""

    input_key = "series"

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels_ = torch.arange(n) % 2
        lengths = torch.randint(3, 13, (n,), generator=g)
        self.series = [
            torch.randn(int(t), generator=g) + (2.0 * float(y) - 1.0)
            for t, y in zip(lengths, self.labels_)
        ]

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, index: int) -> dict:
        return {"series": self.series[index], "label": int(self.labels_[index])}


def pad_series(samples: list[dict]) -> dict[str, Tensor]:
    """Pad to the longest series: (B, T, 2), values then a 1/0 mask of the real steps."""
    longest = max(len(s["series"]) for s in samples)
    x = torch.zeros(len(samples), longest, 2)
    for i, s in enumerate(samples):
        x[i, : len(s["series"]), 0] = s["series"]
        x[i, : len(s["series"]), 1] = 1.0
    return {"series": x, "label": torch.tensor([s["label"] for s in samples])}


class MaskedMean(nn.Module):
    """Mean of the real steps of a padded series, then a linear map to 4 features."""

    embed_dim = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(1, 4)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 2)
        mean = (x[..., 0] * x[..., 1]).sum(1) / x[..., 1].sum(1)  # (B,)
        return self.proj(mean[:, None])  # (B, 4)


def test_variable_length_inputs_batch_through_a_padding_collate():
    from selfsup.api import extract_features

    train, test = Series(256, seed=0), Series(128, seed=1)
    features = extract_features(
        MaskedMean(), test, batch_size=50, device="cpu", to_input=lambda x: x, collate=pad_series
    )
    assert features.shape == (128, 4)
    result = finetune(
        MaskedMean(), train, test, config(epochs=3, batch_size=32, lr=1e-1), collate=pad_series
    )
    assert result["accuracy"] > 0.9


@pytest.mark.slow
def test_evaluate_run_streams_its_data_and_fine_tunes_on_the_engine(monkeypatch):
    """Evaluation reads the splits batch by batch: a data set whose ``as_tensor`` fails
    (as a folder of files too large for memory would) is still evaluated, fine-tuning
    included."""
    from selfsup.api import evaluate_run
    from selfsup.encoders import build_encoder

    def refused(self):
        raise AssertionError("evaluation must not hold a whole split in memory")

    monkeypatch.setattr(TensorImageDataset, "as_tensor", refused)
    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    ev = EvalConfig(
        protocols=("linear", "finetune"),
        label_fractions=(1.0,),
        seeds=(0,),
        finetune_epochs=1,
        finetune_batch_size=64,
        max_train=600,
        report=False,
    )
    rows = evaluate_run(encoder, "digits", eval_cfg=ev, name="convnet")
    got = {(r["encoder"], r["protocol"]): r for r in rows}
    assert {("convnet", "linear"), ("raw", "linear"), ("convnet", "finetune")} <= set(got)
    assert got[("convnet", "finetune")]["num_train"] == 600
    assert 0.1 < got[("convnet", "finetune")]["accuracy"] <= 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 0}, "epochs and batch_size"),
        ({"batch_size": 0}, "epochs and batch_size"),
        ({"max_time": -1.0}, "max_time"),
        ({"max_steps": 0}, "max_steps"),
        ({"lr": 0.0}, "lr > 0"),
        ({"lr": float("nan")}, "lr > 0"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"layer_decay": 0.0}, "layer_decay"),
        ({"layer_decay": 1.5}, "layer_decay"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"warmup_fraction": -0.1}, "warmup_fraction"),
        ({"head_init": "zeros"}, "head_init must be one of small, probe"),
        ({"precision": "bf16"}, "precision"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_validation_is_one_line_advice(change, message):
    FinetuneConfig().validate()  # the defaults are valid
    with pytest.raises(SelfsupError, match=message) as error:
        FinetuneConfig(**change).validate()
    assert "\n" not in str(error.value)
    with pytest.raises(SelfsupError):  # a mapping from a YAML file is checked too
        from_dict(FinetuneConfig, change)
    data = quadrant_task(8, seed=0)
    with pytest.raises(SelfsupError, match=message):  # and finetune checks what it is given
        finetune(MLP(), data, data, FinetuneConfig(**change))
