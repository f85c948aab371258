"""Masked-prediction losses against slow references written with loops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.data2vec import Data2VecLoss, data2vec_targets
from selfsup.losses.mae import MAELoss, patchify, unpatchify
from selfsup.losses.mlm import MaskedTokenLoss, causal_lm_loss
from selfsup.losses.simmim import SimMIMLoss


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SHAPES = [(2, 1, 8, 8, 2), (3, 3, 12, 8, 4), (1, 2, 28, 28, 7)]  # B, C, H, W, patch


def patch_values(images: torch.Tensor, b: int, n: int, patch: int) -> list[float]:
    """Patch n of image b, row-major over the grid, values in (row, column, channel) order."""
    C, H, W = images.shape[1:]
    gw = W // patch
    gy, gx = divmod(n, gw)
    return [
        float(images[b, c, gy * patch + i, gx * patch + j])
        for i in range(patch)
        for j in range(patch)
        for c in range(C)
    ]


# ---------------------------------------------------------------- patchify


@pytest.mark.parametrize(("B", "C", "H", "W", "patch"), SHAPES)
def test_patchify_matches_loops_round_trips_and_follows_conv_order(B, C, H, W, patch):
    images = torch.randn(B, C, H, W, generator=gen(H * W))
    patches = patchify(images, patch)
    N = (H // patch) * (W // patch)
    assert patches.shape == (B, N, patch * patch * C)
    for b in range(B):
        for n in range(N):
            assert patches[b, n].tolist() == pytest.approx(patch_values(images, b, n, patch))
    grid = (H // patch, W // patch)
    assert torch.equal(unpatchify(patches, patch, C, grid=grid), images)
    # a ViT's patch embedding is a linear map of these patches, in the same token order
    conv = nn.Conv2d(C, 5, patch, stride=patch)
    tokens = conv(images).flatten(2).transpose(1, 2)  # (B, N, 5)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(5, -1)  # (5, p·p·C), (row, col, channel)
    torch.testing.assert_close(patches @ weight.T + conv.bias, tokens, atol=1e-5, rtol=1e-5)


def test_unpatchify_guesses_square_grids_and_rejects_bad_shapes():
    images = torch.randn(2, 3, 8, 8)
    assert torch.equal(unpatchify(patchify(images, 4), 4), images)
    with pytest.raises(SelfsupError, match="square"):
        unpatchify(torch.randn(1, 6, 16), 2)
    with pytest.raises(SelfsupError, match="channels"):
        unpatchify(torch.randn(1, 4, 12), 2, 2)
    with pytest.raises(SelfsupError, match="multiples of 3"):
        patchify(images, 3)


# ---------------------------------------------------------------- MAE


def mae_reference(pred, images, mask, patch, norm_pix) -> float:
    total, hidden = 0.0, 0
    B, N, P = pred.shape
    for b in range(B):
        for n in range(N):
            if not mask[b, n]:
                continue
            x = patch_values(images, b, n, patch)
            if norm_pix:
                mean = sum(x) / P
                var = sum((v - mean) ** 2 for v in x) / (P - 1)
                x = [(v - mean) / math.sqrt(var + 1e-6) for v in x]
            total += sum((float(pred[b, n, j]) - x[j]) ** 2 for j in range(P)) / P
            hidden += 1
    return total / hidden


@pytest.mark.parametrize(("B", "C", "H", "W", "patch"), SHAPES)
@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_matches_reference(B, C, H, W, patch, norm_pix):
    g = gen(B + H + int(norm_pix))
    images = torch.rand(B, C, H, W, generator=g) * 3
    N, P = (H // patch) * (W // patch), patch * patch * C
    pred = torch.randn(B, N, P, generator=g)
    mask = torch.rand(B, N, generator=g) < 0.6
    mask[0, 0] = True
    loss = MAELoss(norm_pix)(pred, images, mask, patch)
    assert float(loss) == pytest.approx(
        mae_reference(pred, images, mask, patch, norm_pix), rel=1e-4
    )
    # target given as patches gives the same loss
    same = MAELoss(norm_pix)(pred, patchify(images, patch), mask)
    assert float(same) == pytest.approx(float(loss), rel=1e-6)


def test_mae_loss_ignores_visible_patches():
    images = torch.rand(2, 1, 8, 8)
    pred = torch.randn(2, 16, 4, requires_grad=True)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :5] = True
    MAELoss()(pred, images, mask, 2).backward()
    assert pred.grad is not None
    assert pred.grad[:, 5:].abs().sum() == 0 and pred.grad[:, :5].abs().sum() > 0
    assert float(MAELoss()(pred.detach(), images, torch.zeros_like(mask), 2)) == 0.0
    with pytest.raises(SelfsupError, match="patch size"):
        MAELoss()(pred, images, mask)


def test_mae_norm_pix_hand_computed_case():
    # one 1×1×2×2 image = one patch [0, 1, 2, 3]: mean 1.5, unbiased var 5/3
    images = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    pred = torch.zeros(1, 1, 4)
    mask = torch.ones(1, 1, dtype=torch.bool)
    target = [(v - 1.5) / math.sqrt(5 / 3 + 1e-6) for v in (0, 1, 2, 3)]
    expected = sum(t * t for t in target) / 4
    assert float(MAELoss()(pred, images, mask, 2)) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- SimMIM


def simmim_reference(pred, images, mask, patch) -> float:
    B, C, H, W = images.shape
    gw = W // patch
    total, pixels = 0.0, 0
    for b in range(B):
        for y in range(H):
            for x in range(W):
                if not mask[b, (y // patch) * gw + x // patch]:
                    continue
                pixels += 1
                for c in range(C):
                    total += abs(float(pred[b, c, y, x]) - float(images[b, c, y, x]))
    return total / (pixels + 1e-5) / C


@pytest.mark.parametrize(("B", "C", "H", "W", "patch"), SHAPES)
def test_simmim_loss_matches_reference(B, C, H, W, patch):
    g = gen(7 * B + W)
    images, pred = torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g)
    mask = torch.rand(B, (H // patch) * (W // patch), generator=g) < 0.5
    loss = SimMIMLoss()(pred, images, mask, patch)
    assert float(loss) == pytest.approx(simmim_reference(pred, images, mask, patch), rel=1e-5)


def test_simmim_loss_only_counts_hidden_pixels_and_checks_the_mask():
    images = torch.zeros(1, 2, 4, 4)
    pred = torch.ones(1, 2, 4, 4)
    mask = torch.tensor([[True, False, False, False]])  # one 2×2 patch of 4 pixels
    pred[0, :, 2:, 2:] = 100.0  # error on a visible patch does not count
    assert float(SimMIMLoss()(pred, images, mask, 2)) == pytest.approx(8 / (4 + 1e-5) / 2)
    with pytest.raises(SelfsupError, match=r"\(1, 4\)"):
        SimMIMLoss()(pred, images, mask[:, :3], 2)


# ---------------------------------------------------------------- token losses


def log_softmax_at(row: list[float], k: int) -> float:
    top = max(row)
    return row[k] - top - math.log(sum(math.exp(v - top) for v in row))


@pytest.mark.parametrize(("B", "L", "K"), [(1, 5, 3), (4, 9, 11), (3, 16, 50)])
def test_masked_token_loss_matches_reference(B, L, K):
    g = gen(B * L + K)
    logits = torch.randn(B, L, K, generator=g) * 2
    targets = torch.randint(0, K, (B, L), generator=g)
    targets[torch.rand(B, L, generator=g) < 0.5] = -100
    targets[0, 0] = 1
    terms = [
        -log_softmax_at(logits[b, t].tolist(), int(targets[b, t]))
        for b in range(B)
        for t in range(L)
        if targets[b, t] != -100
    ]
    loss = MaskedTokenLoss()(logits, targets)
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    keep = targets != -100  # gathered positions give the same loss
    assert float(MaskedTokenLoss()(logits[keep], targets[keep])) == pytest.approx(
        float(loss), rel=1e-6
    )


def test_masked_token_loss_with_nothing_to_predict_is_zero_not_nan():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = MaskedTokenLoss()(logits, torch.full((2, 3), -100))
    assert float(loss.detach()) == 0.0
    loss.backward()
    with pytest.raises(SelfsupError, match="leading shape"):
        MaskedTokenLoss()(logits, torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize(("B", "L", "K"), [(1, 2, 3), (3, 8, 7), (2, 12, 20)])
@pytest.mark.parametrize("pad_id", [None, 0])
def test_causal_lm_loss_matches_reference(B, L, K, pad_id):
    g = gen(B + L + K)
    logits = torch.randn(B, L, K, generator=g)
    tokens = torch.randint(1, K, (B, L), generator=g)
    tokens[0, L - L // 3 :] = 0  # a padded row
    terms = [
        -log_softmax_at(logits[b, t].tolist(), int(tokens[b, t + 1]))
        for b in range(B)
        for t in range(L - 1)
        if pad_id is None or tokens[b, t + 1] != pad_id
    ]
    expected = sum(terms) / len(terms)
    assert float(causal_lm_loss(logits, tokens, pad_id)) == pytest.approx(expected, rel=1e-5)


def test_causal_lm_loss_of_a_uniform_model_is_log_vocab():
    logits = torch.zeros(2, 6, 32)
    tokens = torch.randint(1, 32, (2, 6))
    assert float(causal_lm_loss(logits, tokens, pad_id=0)) == pytest.approx(math.log(32))


# ---------------------------------------------------------------- data2vec


def normalise_reference(x: list, norm: str, eps: float = 1e-5) -> list:
    """x[b][n][d] as nested lists; instance norm per (b, d) over n, layer norm per (b, n) over d."""
    B, N, D = len(x), len(x[0]), len(x[0][0])
    out = [[[0.0] * D for _ in range(N)] for _ in range(B)]
    for b in range(B):
        if norm == "instance":
            for d in range(D):
                col = [x[b][n][d] for n in range(N)]
                mean = sum(col) / N
                var = sum((v - mean) ** 2 for v in col) / N
                for n in range(N):
                    out[b][n][d] = (x[b][n][d] - mean) / math.sqrt(var + eps)
        elif norm == "layer":
            for n in range(N):
                row = x[b][n]
                mean = sum(row) / D
                var = sum((v - mean) ** 2 for v in row) / D
                out[b][n] = [(v - mean) / math.sqrt(var + eps) for v in row]
        else:
            out[b] = [list(r) for r in x[b]]
    return out


@pytest.mark.parametrize(
    ("B", "N", "D", "layers", "top_k"), [(2, 5, 4, 3, 2), (1, 7, 6, 4, 4), (3, 4, 8, 6, 1)]
)
@pytest.mark.parametrize(
    ("norm", "final_norm"),
    [("instance", "none"), ("layer", "none"), ("none", "layer"), ("layer", "instance")],
)
def test_data2vec_targets_match_reference(B, N, D, layers, top_k, norm, final_norm):
    g = gen(B * N * D + layers)
    outputs = [torch.randn(B, N, D, generator=g) * (i + 1) + i for i in range(layers)]
    got = data2vec_targets(outputs, top_k, norm, final_norm)  # type: ignore[arg-type]
    normed = [normalise_reference(o.tolist(), norm) for o in outputs[-top_k:]]
    avg = [
        [[sum(layer[b][n][d] for layer in normed) / top_k for d in range(D)] for n in range(N)]
        for b in range(B)
    ]
    expected = torch.tensor(normalise_reference(avg, final_norm))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_data2vec_targets_check_their_arguments():
    outputs = [torch.randn(2, 3, 4) for _ in range(3)]
    with pytest.raises(SelfsupError, match="top_k"):
        data2vec_targets(outputs, 4)
    with pytest.raises(SelfsupError, match="norm"):
        data2vec_targets(outputs, 2, "batch")  # type: ignore[arg-type]


def data2vec_loss_reference(pred, target, mask, beta: float, scale: float | None) -> float:
    B, N, D = pred.shape
    s = scale if scale is not None else 1 / math.sqrt(D)
    total, count = 0.0, 0
    for b in range(B):
        for n in range(N):
            if not mask[b, n]:
                continue
            for d in range(D):
                e = abs(float(pred[b, n, d]) - float(target[b, n, d]))
                if beta == 0:
                    total += s * e * e
                else:
                    total += s * (0.5 * e * e / beta if e <= beta else e - 0.5 * beta)
            count += 1
    return total / count


@pytest.mark.parametrize(("B", "N", "D"), [(1, 4, 3), (3, 7, 8), (2, 10, 16)])
@pytest.mark.parametrize("beta", [0.0, 0.25, 2.0, 4.0])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_data2vec_loss_matches_reference(B, N, D, beta, scale):
    g = gen(B * N + D)
    pred, target = torch.randn(B, N, D, generator=g) * 3, torch.randn(B, N, D, generator=g)
    mask = torch.rand(B, N, generator=g) < 0.5
    mask[0, 0] = True
    loss = Data2VecLoss(beta, scale)(pred, target, mask)
    expected = data2vec_loss_reference(pred, target, mask, beta, scale)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # gathered positions without a mask give the same loss
    assert float(Data2VecLoss(beta, scale)(pred[mask], target[mask])) == pytest.approx(
        float(loss), rel=1e-6
    )


def test_data2vec_loss_ignores_unmasked_positions():
    pred = torch.randn(2, 5, 4, requires_grad=True)
    target = torch.randn(2, 5, 4)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, 1] = True
    Data2VecLoss(2.0)(pred, target, mask).backward()
    assert pred.grad is not None
    assert pred.grad[:, [0, 2, 3, 4]].abs().sum() == 0 and pred.grad[:, 1].abs().sum() > 0
    with pytest.raises(SelfsupError, match="beta"):
        Data2VecLoss(-1.0)
