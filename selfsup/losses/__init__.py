"""Losses: small ``nn.Module``s, pure tensors in, a scalar out; each docstring gives the formula."""

from selfsup.losses.barlow import BarlowTwinsLoss
from selfsup.losses.byol import BYOLLoss
from selfsup.losses.dino import DINOLoss
from selfsup.losses.infonce import InfoNCELoss, KeyQueue
from selfsup.losses.mocov3 import MoCoV3Loss
from selfsup.losses.ntxent import NTXentLoss
from selfsup.losses.simsiam import SimSiamLoss
from selfsup.losses.vicreg import VICRegLoss

__all__ = [
    "BarlowTwinsLoss",
    "BYOLLoss",
    "DINOLoss",
    "InfoNCELoss",
    "KeyQueue",
    "MoCoV3Loss",
    "NTXentLoss",
    "SimSiamLoss",
    "VICRegLoss",
]
