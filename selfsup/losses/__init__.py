"""Losses: small ``nn.Module``s, pure tensors in, a scalar out; each docstring gives the formula."""

from selfsup.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss"]
