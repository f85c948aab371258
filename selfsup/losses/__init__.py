"""Losses: small ``nn.Module``s, pure tensors in, a scalar out; each docstring gives the formula."""

from selfsup.losses.barlow import BarlowTwinsLoss
from selfsup.losses.bgrl import BGRLLoss
from selfsup.losses.byol import BYOLLoss
from selfsup.losses.data2vec import Data2VecLoss, data2vec_targets
from selfsup.losses.dino import DINOLoss
from selfsup.losses.infonce import InfoNCELoss, KeyQueue
from selfsup.losses.mae import MAELoss, patchify, unpatchify
from selfsup.losses.mlm import MaskedTokenLoss, causal_lm_loss
from selfsup.losses.mocov3 import MoCoV3Loss
from selfsup.losses.ntxent import NTXentLoss
from selfsup.losses.sce import ScaledCosineError
from selfsup.losses.simmim import SimMIMLoss
from selfsup.losses.simsiam import SimSiamLoss
from selfsup.losses.vicreg import VICRegLoss

__all__ = [
    "BGRLLoss",
    "BarlowTwinsLoss",
    "BYOLLoss",
    "DINOLoss",
    "Data2VecLoss",
    "InfoNCELoss",
    "KeyQueue",
    "MAELoss",
    "MaskedTokenLoss",
    "MoCoV3Loss",
    "NTXentLoss",
    "ScaledCosineError",
    "SimMIMLoss",
    "SimSiamLoss",
    "VICRegLoss",
    "causal_lm_loss",
    "data2vec_targets",
    "patchify",
    "unpatchify",
]
