"""The Modality contract: every registered modality offers the whole protocol, its tiny batch
feeds its default encoder, data specs find their modality, and the core names none."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from selfsup.config import make_config
from selfsup.data.info import DataInfo
from selfsup.encoders import ENCODERS, build_encoder, encoder_modality
from selfsup.errors import SelfsupError
from selfsup.methods import METHODS
from selfsup.modalities import (
    MODALITIES,
    Modality,
    all_sources,
    modality_of_data,
    modality_of_encoder,
    unknown_data,
)

PACKAGE = Path(__file__).resolve().parents[1] / "selfsup"
MEMBERS = [
    name
    for name in Modality.__dict__
    if not name.startswith("_") and name not in ("__annotations__",)
] + list(Modality.__annotations__)


@pytest.mark.parametrize("name", list(MODALITIES))
def test_modality_offers_the_whole_protocol(name):
    modality = MODALITIES[name]
    missing = [m for m in set(MEMBERS) if not hasattr(modality, m)]
    assert not missing, f"{name} lacks {missing}"
    assert modality.name == name
    assert modality.sources, "a modality brings at least one data source"
    assert encoder_modality(modality.default_encoder) == name


@pytest.mark.parametrize("name", list(MODALITIES))
def test_tiny_batch_feeds_the_default_encoder(name):
    modality = MODALITIES[name]
    batch = modality.tiny_batch(4, seed=0)
    assert batch["label"].shape == (4,)
    x = batch[modality.input_key]
    if isinstance(x, torch.Tensor):  # a graph batch is a PyG Batch, split by its own rules
        assert x.shape[0] == 4
        samples = [{k: v[i] for k, v in batch.items() if k != "padding"} for i in range(4)]
        again = modality.collate(samples)
        torch.testing.assert_close(
            again[modality.input_key], x, equal_nan=True
        )  # audio marks its padding with NaN
    if name == "image":
        info = DataInfo(channels=x.shape[1], image_size=x.shape[-1])
    elif name == "pairs":
        tokens = batch["tokens"]
        info = DataInfo(3, x.shape[-1], modality=name, vocab_size=64, max_length=tokens.shape[1])
    elif name == "video":  # (B, T, C, H, W) clips
        info = DataInfo(
            modality=name, channels=x.shape[2], image_size=x.shape[-1], max_length=x.shape[1]
        )
    elif name == "audio":  # (B, samples) waveforms
        info = DataInfo(modality=name, max_length=x.shape[1], sample_rate=8000)
    elif name == "graph":
        info = DataInfo(modality=name, node_features=x.x.shape[1])
    else:  # text reads the vocabulary and length; series the channels (the last axis)
        info = DataInfo(modality=name, channels=x.shape[-1], vocab_size=64, max_length=x.shape[1])
    encoder = build_encoder(
        modality.default_encoder, **modality.encoder_inputs(info), **_small(modality)
    )
    assert modality_of_encoder(encoder) is modality
    with torch.no_grad():
        features = encoder(modality.to_input(encoder)(x))
    assert features.shape == (4, encoder.embed_dim) and torch.isfinite(features).all()


def _small(modality: Modality) -> dict:
    defaults = ENCODERS[modality.default_encoder].defaults
    if "text_options" in defaults:  # two towers
        return {
            "image_options": {"width": 4},
            "text_options": {"embed_dim": 16, "depth": 1, "num_heads": 2},
        }
    if "width" in defaults:
        return {"width": 4}
    if "hidden" in defaults:
        return {"hidden": 16}
    return {"embed_dim": 16, "depth": 1, "num_heads": 2}


def test_text_batches_mark_their_padding():
    text = MODALITIES["text"]
    batch = text.tiny_batch(4)
    padded = text.collate([{k: v[i] for k, v in batch.items()} for i in range(4)])
    assert padded["padding"].dtype == torch.bool
    assert padded["padding"][:2].any() and not padded["padding"][2:].any()


def test_every_source_belongs_to_one_modality():
    seen: dict[str, str] = {}
    for name, modality in MODALITIES.items():
        for prefix in modality.sources:
            assert prefix not in seen, f"{prefix} is claimed by {seen.get(prefix)} and {name}"
            seen[prefix] = name
            assert (
                modality_of_data(
                    f"{prefix}:x"
                    if prefix in ("folder", "npz", "text", "series", "ucr")
                    else prefix
                )
                is modality
            )
    assert set(all_sources()) == set(seen)


def test_unknown_data_suggests_a_close_name_or_a_prefix(tmp_path):
    assert "did you mean 'fortunes'" in unknown_data("fortune")
    (tmp_path / "notes.txt").write_text("one\ntwo\n")
    assert f"did you mean text:{tmp_path / 'notes.txt'}" in unknown_data(
        str(tmp_path / "notes.txt")
    )
    assert f"did you mean folder:{tmp_path}" in unknown_data(str(tmp_path))
    with pytest.raises(
        SelfsupError, match="unknown data 'fashion-mnst'; did you mean 'fashion-mnist'"
    ):
        modality_of_data("fashion-mnst")


def test_every_method_declares_registered_modalities():
    for name, spec in METHODS.items():
        assert spec.modalities and set(spec.modalities) <= set(MODALITIES), name


def test_the_encoder_defaults_to_the_data_modality():
    assert make_config(data="digits").encoder == "convnet"
    assert make_config(method="mlm", data="text:notes.txt").encoder == "transformer-tiny"
    assert make_config(method="mlm", data="fortunes", encoder="gpt-tiny").encoder == "gpt-tiny"


def test_a_method_refuses_data_of_another_modality():
    with pytest.raises(SelfsupError, match="learns from text but 'digits' is image data"):
        make_config(method="mlm", data="digits")


CORE_LITERAL = re.compile(r'"(text|image)"')
PLUG_INS = ("modalities", "data", "encoders", "views", "losses", "methods")


def test_the_core_names_no_modality():
    """Outside the plug-in folders no file says "image" or "text": the kind of data is the
    modality's business (the grep of the modality plug-ins issue)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] in PLUG_INS:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if CORE_LITERAL.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_nothing_inside_the_package_imports_the_facade():
    users = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "api.py", "cli.py") or path.parent != PACKAGE
        if re.search(r"from selfsup\.api import|import selfsup\.api", path.read_text())
    ]
    assert not users


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_a_modality_without_shifts_refuses_the_robustness_protocol(name):
    modality = MODALITIES[name]
    if modality.corruptions:
        return
    with pytest.raises(SelfsupError, match=f"no distribution shifts for {name}"):
        modality.corrupted([], "noise", 1)
