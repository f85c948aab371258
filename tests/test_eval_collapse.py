"""Collapse indicators on embeddings whose answer is known."""

import math

import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.evaluate.collapse import effective_rank, embedding_std


def test_identity_like_embeddings_have_full_rank():
    z = torch.eye(32).repeat(4, 1)  # (128, 32), all singular values equal
    assert effective_rank(z) == pytest.approx(32, rel=1e-4)


def test_orthogonal_embeddings_have_full_rank():
    q, _ = torch.linalg.qr(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
    assert effective_rank(q * 3.0) == pytest.approx(16, rel=1e-4)


def test_rank_one_embeddings_have_rank_one():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 1, generator=g) * torch.randn(1, 64, generator=g)  # (200, 64)
    assert effective_rank(z) == pytest.approx(1.0, abs=1e-3)


def test_rank_matches_formula_on_known_spectrum():
    z = torch.diag(torch.tensor([3.0, 1.0]))
    p = torch.tensor([0.75, 0.25]) + 1e-7
    assert effective_rank(z) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-5)


def test_constant_embeddings_have_zero_std():
    z = torch.full((100, 16), 2.5)
    assert embedding_std(z) == pytest.approx(0.0, abs=1e-6)


def test_isotropic_gaussian_std_is_one_over_sqrt_d():
    d = 128
    z = torch.randn(4000, d, generator=torch.Generator().manual_seed(0))
    assert embedding_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.02)


def test_bad_embeddings_raise():
    with pytest.raises(SelfsupError, match="NaN"):
        effective_rank(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(SelfsupError, match=r"\(N, D\)"):
        embedding_std(torch.randn(3))
