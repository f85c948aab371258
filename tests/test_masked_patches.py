"""Masked patches (PatchTST-style) for series: the patch mask, the patching with its instance
normalisation and the reconstruction loss against slow references written the obvious way;
what the patch encoder may and may not see; a tiny run from the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.encoders import build_encoder
from selfsup.errors import SelfsupError
from selfsup.losses.masked_patches import MaskedPatchLoss
from selfsup.methods import DataInfo, build_method
from selfsup.views.series import patch_mask


def tiny_encoder(channels: int = 1, patch: int = 4):
    torch.manual_seed(0)
    return build_encoder(
        "patch-tst",
        in_channels=channels,
        patch_len=patch,
        stride=patch,
        d_model=8,
        depth=2,
        num_heads=2,
        dropout=0.0,
    ).eval()


@pytest.mark.parametrize(
    "rows, patches, ratio", [(5, 10, 0.4), (3, 7, 0.4), (4, 2, 0.4), (6, 12, 0.75)]
)
def test_patch_mask_matches_the_slow_reference(rows, patches, ratio):
    """The reference: draw the same noise, and in each row hide the patches whose noise is
    not among the int(N·(1 - ratio)) smallest."""
    mask = patch_mask(rows, patches, ratio, generator=torch.Generator().manual_seed(3))
    noise = torch.rand(rows, patches, generator=torch.Generator().manual_seed(3)).tolist()
    keep = int(patches * (1 - ratio))
    for r in range(rows):
        visible = sorted(range(patches), key=lambda n: noise[r][n])[:keep]
        assert mask[r].tolist() == [n not in visible for n in range(patches)]
        assert int(mask[r].sum()) == patches - keep  # exactly, in every row


def test_patch_mask_is_uniform_over_positions():
    mask = patch_mask(20000, 10, 0.4, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(dim=1) == 4).all()
    share = mask.double().mean(dim=0)  # each position hidden 40% of the time
    assert (share - 0.4).abs().max() < 0.015  # 5 sigma of 20,000 draws
    with pytest.raises(SelfsupError, match=r"lie in \(0, 1\)"):
        patch_mask(2, 4, 1.0)


def slow_patches(x: torch.Tensor, patch: int, stride: int, normalise: bool = True) -> list:
    """Per series and channel: normalise by the observed values' mean and (biased) std,
    pad the end with NaN to whole strides, cut patches one by one; channel-major order."""
    B, T, C = x.shape
    out = []
    for b in range(B):
        rows = []
        for c in range(C):
            values = [float(v) for v in x[b, :, c]]
            seen = [v for v in values if not math.isnan(v)]
            mean = sum(seen) / len(seen)
            std = math.sqrt(sum((v - mean) ** 2 for v in seen) / len(seen) + 1e-5)
            values = [(v - mean) / std for v in values] if normalise else values
            n = max(0, math.ceil((T - patch) / stride)) + 1
            values += [math.nan] * ((n - 1) * stride + patch - T)
            rows += [values[i * stride : i * stride + patch] for i in range(n)]
        out.append(rows)
    return out


@pytest.mark.parametrize(
    "T, patch, stride, normalise",
    [(12, 4, 4, True), (13, 4, 4, True), (10, 4, 2, True), (3, 4, 4, True), (13, 4, 4, False)],
)
def test_patchify_matches_the_slow_reference(T, patch, stride, normalise):
    g = torch.Generator().manual_seed(T)
    x = torch.randn(2, T, 3, generator=g) * 3 + 1
    x[0, 1, 2] = math.nan
    x[1, T - 2 :, :] = math.nan  # a shorter series
    encoder = build_encoder(
        "patch-tst",
        in_channels=3,
        patch_len=patch,
        stride=stride,
        d_model=8,
        depth=1,
        num_heads=2,
        instance_norm=normalise,
    )
    patches, observed = encoder.patchify(x)
    slow = torch.tensor(slow_patches(x, patch, stride, normalise), dtype=torch.float32)
    torch.testing.assert_close(patches, slow, equal_nan=True, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(observed, ~torch.isnan(slow).all(dim=-1))


def test_masked_patch_loss_matches_the_slow_reference():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    target[0, 1, 2:] = math.nan  # a half-missing patch
    target[2, 4] = math.nan  # a patch of padding
    hidden = torch.rand(3, 5, generator=g) < 0.5
    hidden[2, 4] = hidden[0, 1] = True
    errors = []
    for b in range(3):
        for m in range(5):
            seen = [p for p in range(4) if not math.isnan(target[b, m, p])]
            if hidden[b, m] and seen:
                errors.append(sum((pred[b, m, p] - target[b, m, p]) ** 2 for p in seen) / len(seen))
    assert float(MaskedPatchLoss()(pred, target, hidden)) == pytest.approx(
        float(sum(errors) / len(errors)), rel=1e-6
    )


def test_hidden_patches_padding_and_other_channels_are_not_seen():
    encoder = tiny_encoder(channels=2)
    x = torch.randn(1, 16, 2)
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, 1] = True  # channel 0's second patch
    other = x.clone()
    other[0, 5, 0] += 2.0  # inside the hidden patch ...
    other[0, 0, 0] -= 2.0  # ... and balanced, so the channel's mean and std stay close
    base = encoder.forward_tokens(x, mask)
    changed = encoder.forward_tokens(other, mask)
    torch.testing.assert_close(base[:, 4:], changed[:, 4:])  # channel 1 never sees channel 0
    # padding past the end changes nothing on the real patches (the length is whole patches)
    padded = torch.cat([x, torch.full((1, 8, 2), math.nan)], dim=1)
    tokens = encoder.forward_tokens(padded)  # (1, 2·6, D): 4 real + 2 padding per channel
    real = torch.cat([tokens[:, 0:4], tokens[:, 6:10]], dim=1)
    torch.testing.assert_close(real, encoder.forward_tokens(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(encoder(padded), encoder(x), rtol=1e-4, atol=1e-5)
    # a hidden patch's own values are zeroed before the embedding: changing them changes nothing
    hidden_only = x.clone()
    hidden_only[0, 4:8, 0] = x[0, 4:8, 0].flip(0)  # same values, same stats, other order
    torch.testing.assert_close(
        encoder.forward_tokens(hidden_only, mask), encoder.forward_tokens(x, mask)
    )


def test_masked_patches_learns_and_refuses_other_encoders():
    info = DataInfo(modality="series", channels=1)
    with pytest.raises(SelfsupError, match="--encoder patch-tst"):
        build_method("masked-patches", {}, build_encoder("ts2vec-dilated", in_channels=1), info)
    torch.manual_seed(0)
    encoder = build_encoder(
        "patch-tst",
        in_channels=1,
        patch_len=4,
        stride=4,
        d_model=32,
        depth=1,
        num_heads=2,
        dropout=0.0,
    )
    method = build_method("masked-patches", {"head_dropout": 0.0}, encoder, info)
    t = torch.linspace(0, 6, 24)
    x = torch.stack([torch.sin(t * (1 + k % 2) + k) for k in range(8)])[:, :, None]
    optimizer = torch.optim.AdamW(method.parameters(), lr=5e-3)
    losses = []
    for _ in range(60):
        loss = method.training_step({"series": x})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # the values are normalised, so 1 is what predicting zeros scores
    assert np.mean(losses[:5]) > 1.0 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])


def test_masked_patches_pretrains_and_evaluates_from_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 4 * np.pi, 32)
    y = np.arange(48) % 2
    x = np.stack([np.sin(t * (1 + k)) for k in y])[:, :, None] + rng.normal(0, 0.1, (48, 32, 1))
    path = tmp_path / "waves.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    out = tmp_path / "run"
    args = ["pretrain", "--method", "masked-patches", "--encoder", "patch-tst"]
    args += ["--data", f"series:{path}", "--out", str(out), "--batch-size", "8"]
    args += ["--max-steps", "3", "--set", "train.progress=false"]
    args += ["--set", "encoder_args={patch_len: 8, stride: 8, d_model: 16, depth: 1, num_heads: 2}"]
    args += ["--set", "eval.label_fractions=[1.0]", "--set", "eval.seeds=[0]"]
    args += ["--set", "eval.report=false"]
    assert main(args) == 0
    rows = json.loads((out / "eval.json").read_text())
    assert {r["encoder"] for r in rows} == {"masked-patches", "random-init", "raw"}
    svm = json.loads((out / "svm.json").read_text())
    assert {r["encoder"] for r in svm} == {"masked-patches", "random-init", "raw"}
