"""Each loss against a slow reference written the obvious way."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import NTXentLoss


def ntxent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR's loss, anchor by anchor, straight from the paper's equation (1)."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        numerator = math.exp(float(z[i] @ z[j]) / t)
        denominator = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("batch", [2, 5, 16])
@pytest.mark.parametrize("dim", [3, 32])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_ntxent_matches_reference(batch, dim, temperature):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    z1, z2 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    got = NTXentLoss(temperature)(z1, z2)
    assert float(got) == pytest.approx(ntxent_reference(z1, z2, temperature), rel=1e-5)


def test_ntxent_hand_computed_case():
    # two images, orthogonal views: every similarity is 0 except identical pairs
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = z1.clone()
    t = 0.5
    # anchor 0: positive sim 1, negatives: z1[1] (0), z2[1] (0) -> -log(e^2 / (e^2 + 2))
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert float(NTXentLoss(t)(z1, z2)) == pytest.approx(expected, rel=1e-6)


def test_ntxent_is_scale_invariant_and_has_gradients():
    z1 = torch.randn(8, 4, requires_grad=True)
    z2 = torch.randn(8, 4)
    loss = NTXentLoss(0.2)(z1, z2)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    with torch.no_grad():
        assert float(NTXentLoss(0.2)(3 * z1, z2)) == pytest.approx(float(loss), rel=1e-5)


@pytest.mark.parametrize("block_elements", [1, 7, 40, 10**9])
def test_ntxent_blocks_give_the_reference_value_and_gradients(block_elements):
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(5, 6, generator=g, dtype=torch.float64).requires_grad_()
    z2 = torch.randn(5, 6, generator=g, dtype=torch.float64).requires_grad_()
    got = NTXentLoss(0.3, block_elements=block_elements)(z1, z2)
    got.backward()
    expected = ntxent_reference(z1.detach(), z2.detach(), 0.3)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-6)
    plain1, plain2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
    NTXentLoss(0.3, block_elements=10**9)(plain1, plain2).backward()
    torch.testing.assert_close(z1.grad, plain1.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(z2.grad, plain2.grad, rtol=1e-5, atol=1e-7)


def test_ntxent_blocks_keep_no_full_logits_matrix():
    """What autograd keeps for the backward pass: the full (2B)² logits without blocks,
    only the inputs of each block with them."""
    z1 = torch.randn(256, 8, requires_grad=True)
    z2 = torch.randn(256, 8, requires_grad=True)

    def saved_elements(block_elements):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            NTXentLoss(0.2, block_elements=block_elements)(z1, z2)
        return max(sizes)

    assert saved_elements(10**9) >= 512 * 512
    assert saved_elements(512 * 64) <= 512 * 8  # a block's inputs: (64, 8) anchors, (512, 8) keys


def test_ntxent_rejects_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="equal shape"):
        NTXentLoss()(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="positive"):
        NTXentLoss(0.0)
