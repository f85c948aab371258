"""Tiny encoders, data info and batches for any registered method, shared by the method tests.

Image methods get the 8-wide ConvNet, masked-image methods (and data2vec on images) a 2-block
ViT, text methods (and data2vec on text) a 2-block Transformer over a small WordPiece
vocabulary trained on a generated corpus (word2vec: a 32-wide table of word vectors).
"""

from __future__ import annotations

import functools
import random

import torch
from torch import nn

from selfsup.data.tokenizer import encode_batch, train_tokenizer
from selfsup.encoders import build_encoder
from selfsup.methods import METHODS, DataInfo, encoder_channels

VIT_METHODS = {"mae", "simmim", "beit", "data2vec"}
"""Image methods that need a ViT (patch tokens, a mask token)."""

WORDS = (
    "the cat sat on a mat while dogs ran through green fields and birds sang "
    "about rivers mountains stars cooking bread reading books writing letters"
).split()
SEQ_LEN = 16


def cases(modalities: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(method, modality) for every registered method and every modality it accepts (of
    ``modalities``, when given)."""
    out = []
    for name, spec in sorted(METHODS.items()):
        out += [(name, m) for m in spec.modalities if modalities is None or m in modalities]
    return out


def audio_setup(name: str, size: int) -> tuple[DataInfo, nn.Module, dict[str, torch.Tensor]]:
    """A 1-block wav2vec 2.0 encoder and ``size`` chirps of 0.3 s at 8 kHz (pitch rising at
    a random rate, so masked frames are predictable from their neighbours); 0.8 s for
    HuBERT, whose k-means seeds its 100 units from the first batch's frames."""
    samples = 6400 if name == "hubert" else 2400
    info = DataInfo(modality="audio", sample_rate=8000, max_samples=samples)
    encoder = build_encoder(
        "wav2vec2-tiny", sample_rate=8000, conv_dim=16, embed_dim=32, depth=1, num_heads=2
    )
    g = torch.Generator().manual_seed(0)
    t = torch.arange(samples) / 8000
    f0 = 200 + 300 * torch.rand(size, 1, generator=g)
    slope = 1500 + 1000 * torch.rand(size, 1, generator=g)
    return info, encoder, {"audio": torch.sin(2 * torch.pi * (f0 * t + slope * t**2 / 2))}


class WaveSamples(torch.utils.data.Dataset):
    """Equal-length chirps as ``{"audio": (T,)}`` samples (no padding to collate)."""

    def __init__(self, waves: torch.Tensor) -> None:
        self.waves = waves

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"audio": self.waves[index]}


@functools.cache
def tokenizer():
    rng = random.Random(0)
    corpus = [" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(300)]
    return train_tokenizer(corpus, "wordpiece", vocab_size=120, min_frequency=1)


def text_batch(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 12))) for _ in range(size)]
    return {"tokens": encode_batch(tokenizer(), texts, SEQ_LEN)}


def text_info() -> DataInfo:
    tok = tokenizer()
    counts = torch.bincount(
        text_batch(256, seed=1)["tokens"].flatten(), minlength=tok.get_vocab_size()
    )
    return DataInfo(
        modality="text",
        vocab_size=tok.get_vocab_size(),
        max_length=SEQ_LEN,
        tokenizer=tok,
        token_counts=counts,
    )


def text_encoder(name: str) -> nn.Module:
    info = text_info()
    if name == "word2vec":
        return build_encoder(
            "word-vectors", vocab_size=info.vocab_size, max_length=SEQ_LEN, embed_dim=32
        )
    return build_encoder(
        "gpt-tiny" if name == "clm" else "transformer-tiny",
        vocab_size=info.vocab_size,
        max_length=SEQ_LEN,
        depth=2,
        embed_dim=32,
        num_heads=2,
        dropout=0.0,
    )


def image_encoder(name: str, info: DataInfo) -> nn.Module:
    channels = encoder_channels(name, info)  # what the API builds: colorization takes 1
    if name in VIT_METHODS:
        return build_encoder(
            "vit-tiny",
            in_channels=channels,
            image_size=info.image_size,
            patch_size=2,
            depth=2,
            embed_dim=32,
            num_heads=2,
        )
    return build_encoder("convnet", in_channels=channels, image_size=info.image_size, width=8)


def series_info() -> DataInfo:
    return DataInfo(modality="series", channels=2, max_length=24)


def series_encoder(name: str = "ts2vec") -> nn.Module:
    if name == "masked-patches":  # the method needs a patch encoder
        return build_encoder(
            "patch-tst", in_channels=2, patch_len=4, stride=4, d_model=16, depth=1, num_heads=2
        )
    return build_encoder(
        "ts2vec-dilated", in_channels=2, width=16, embed_dim=32, depth=3, dropout=0.0
    )


def series_batch(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sines of two frequencies with noise: (size, 24, 2)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 6.28, 24)
    freq = 1 + torch.arange(size) % 2  # (B,)
    waves = torch.sin(freq[:, None] * t[None])[..., None].expand(-1, -1, 2)  # (B, 24, 2)
    return {"series": waves + 0.1 * torch.randn(size, 24, 2, generator=g)}


def video_info() -> DataInfo:
    return DataInfo(modality="video", channels=1, image_size=8, max_length=4)


def video_encoder() -> nn.Module:
    return build_encoder(
        "video-vit-tiny",
        in_channels=1,
        image_size=8,
        frames=4,
        patch_size=2,
        embed_dim=32,
        depth=2,
        num_heads=2,
    )


def video_batch(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A bright 4-px square moving right by 1 px per frame over noise: (size, 4, 1, 8, 8)."""
    g = torch.Generator().manual_seed(seed)
    clips = torch.randint(0, 60, (size, 4, 1, 8, 8), generator=g, dtype=torch.uint8)
    for t in range(4):
        clips[:, t, :, 2:6, t : t + 4] = 255
    return {"video": clips}


def graph_setup(size: int) -> tuple[DataInfo, nn.Module, dict]:
    """A PyG batch of ``size`` small random graphs (the graph modality's tiny batch) and a GCN."""
    from selfsup.modalities import MODALITIES

    batch = MODALITIES["graph"].tiny_batch(size, seed=0)
    features = batch["graph"].x.shape[1]
    info = DataInfo(modality="graph", node_features=features)
    return info, build_encoder("gcn", in_channels=features), batch


def setup(name: str, modality: str, size: int) -> tuple[DataInfo, nn.Module, dict]:
    """(data info, encoder, batch) for method ``name`` on ``modality`` (series, video, audio,
    pairs and text; the image cases choose their channels and sizes themselves)."""
    if modality == "series":
        return series_info(), series_encoder(name), series_batch(size)
    if modality == "video":
        return video_info(), video_encoder(), video_batch(size)
    if modality == "audio":
        return audio_setup(name, size)
    if modality == "pairs":
        return pair_info(), pair_encoder(), pair_batch(size)
    if modality == "graph":
        return graph_setup(size)
    return text_info(), text_encoder(name), text_batch(size)


def image_batch(size: int, channels: int, side: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, channels, side, side), generator=g, dtype=torch.uint8)
    return {"image": images}


PAIR_SIZE = 8


def pair_info() -> DataInfo:
    tok = tokenizer()
    return DataInfo(
        3,
        PAIR_SIZE,
        modality="pairs",
        vocab_size=tok.get_vocab_size(),
        max_length=SEQ_LEN,
        tokenizer=tok,
    )


def pair_encoder() -> nn.Module:
    """The two-tower encoder of the pair methods at test size."""
    return build_encoder(
        "clip-tiny",
        in_channels=3,
        image_size=PAIR_SIZE,
        vocab_size=tokenizer().get_vocab_size(),
        max_length=SEQ_LEN,
        pad_id=0,
        image_options={"width": 8},
        text_options={"embed_dim": 32, "depth": 1, "num_heads": 2, "dropout": 0.0},
        proj_dim=16,
    )


def pair_batch(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images, each with a random caption."""
    return {**image_batch(size, 3, PAIR_SIZE, seed), **text_batch(size, seed)}


class PairSamples(torch.utils.data.Dataset):
    """``pair_batch`` as a data set of samples (the engine batches it through a loader)."""

    input_key = "image"
    in_memory = False

    def __init__(self, size: int, seed: int = 0) -> None:
        self.batch = pair_batch(size, seed)

    def __len__(self) -> int:
        return len(self.batch["image"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.batch.items()}
