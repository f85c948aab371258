"""Every registered encoder: shapes, gradients, precision, memory format, rebuild, tokens.

Image encoders get (B, C, H, W) images, text encoders (B, L) token ids with padding; the
contract checks (shape, gradients, bf16, rebuild) run on both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from selfsup.encoders import ENCODERS, build_encoder, encoder_config, encoder_inputs
from selfsup.errors import SelfsupError

NAMES = sorted(n for n in ENCODERS if ENCODERS[n].modality in ("image", "text"))
"""Audio encoders (wav2vec2-*) are tested in tests/test_speech.py."""
IMAGE_NAMES = [name for name in NAMES if ENCODERS[name].modality == "image"]
TEXT_NAMES = [name for name in NAMES if ENCODERS[name].modality == "text"]
TRANSFORMER_NAMES = [name for name in TEXT_NAMES if name != "word-vectors"]
"""Text encoders with blocks and positions (the word-vector table has neither)."""
# Shrink only what makes a test slow; the architecture family stays the registered one.
FAST: dict[str, dict[str, Any]] = {
    "resnet18": {"width": 8},
    "vit-tiny": {"depth": 2},
    "vit-small": {"depth": 2, "embed_dim": 96, "num_heads": 6},
    "transformer-tiny": {"depth": 2},
    "transformer-small": {"depth": 2, "embed_dim": 64, "num_heads": 8},
    "gpt-tiny": {"depth": 2},
}
SIZES = (8, 28, 32)
VOCAB, MAX_LENGTH, PAD = 60, 32, 0
LENGTHS = (1, 7, 32)  # sequence lengths, the text counterpart of SIZES


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from threads, and on a shared 2-core machine OpenMP
    # threads waiting on each other made this file 10× slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def is_text(name: str) -> bool:
    return ENCODERS[name].modality == "text"


def inputs_for(name: str, in_channels: int = 3, image_size: int = 28) -> dict[str, int]:
    """What build_encoder needs for ``name``: image geometry or the text vocabulary."""
    if is_text(name):
        assert encoder_inputs(name) == ("vocab_size", "max_length", "pad_id")
        return {"vocab_size": VOCAB, "max_length": MAX_LENGTH, "pad_id": PAD}
    assert encoder_inputs(name) == ("in_channels", "image_size")
    return {"in_channels": in_channels, "image_size": image_size}


def make(name: str, in_channels: int = 3, image_size: int = 28, **extra: Any) -> nn.Module:
    return build_encoder(
        name, **inputs_for(name, in_channels, image_size), **{**FAST.get(name, {}), **extra}
    )


def sample(name: str, batch: int, in_channels: int = 3, size: int = 28) -> torch.Tensor:
    """A batch for ``name``: random images, or token ids (1..VOCAB-1) whose later rows are
    padded to shorter lengths."""
    if not is_text(name):
        return torch.randn(batch, in_channels, size, size)
    tokens = torch.randint(1, VOCAB, (batch, size))
    for row in range(1, batch):
        tokens[row, max(1, size - 3 * row) :] = PAD
    return tokens


def is_token_model(encoder: nn.Module) -> bool:
    return callable(getattr(encoder, "forward_tokens", None))


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name: str) -> None:
    spec = ENCODERS[name]
    assert spec.description and "\n" not in spec.description
    inputs = inputs_for(name, 3, 32)
    encoder = build_encoder(name, **inputs)  # full default size
    assert isinstance(encoder.embed_dim, int) and encoder.embed_dim > 0
    args = encoder_config(encoder)
    assert args == {"name": name, **inputs, **spec.defaults}
    assert json.loads(json.dumps(args)) == args


@pytest.mark.parametrize("name", IMAGE_NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_forward_shape_and_finite(name: str, in_channels: int, size: int) -> None:
    encoder = make(name, in_channels, size)
    out = encoder(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, encoder.embed_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", TEXT_NAMES)
@pytest.mark.parametrize("length", LENGTHS)
def test_text_forward_shape_and_finite(name: str, length: int) -> None:
    encoder = make(name)
    tokens = sample(name, 3, size=length)
    out = encoder(tokens)
    assert out.shape == (3, encoder.embed_dim)
    assert torch.isfinite(out).all()
    assert encoder.forward_tokens(tokens).shape == (3, length, encoder.embed_dim)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    encoder = make(name, 3, 28)
    # Zero-initialised scales (residual gains, biases) pass no gradient upstream at
    # init by design; nudge them so the check below sees every path.
    with torch.no_grad():
        for p in encoder.parameters():
            if not p.any():
                p.add_(0.1)
    x = sample(name, 4, 3, 28)
    out = encoder(x)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in encoder.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        if pname == "mask_token":  # in the graph of a plain forward, used only under a mask
            assert not p.grad.any()
            continue
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"
    if is_token_model(encoder) and hasattr(encoder, "mask_token"):
        encoder.zero_grad()
        n = x.shape[1] if is_text(name) else encoder.num_patches
        mask = torch.zeros(4, n, dtype=torch.bool)
        mask[:, 0] = True
        encoder.forward_tokens(x, mask, keep_masked=True).sum().backward()
        assert encoder.mask_token.grad.abs().sum() > 0, "mask_token got a zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_and_bf16_autocast(name: str) -> None:
    if is_text(name):  # token ids have no memory format: bf16 alone
        encoder = make(name)
        x = sample(name, 2, size=32)
    else:
        encoder = make(name, 3, 32).to(memory_format=torch.channels_last)
        x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        encoder.eval()
        with torch.no_grad():
            reference = encoder(x.contiguous())
            out = encoder(x)
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    encoder.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(x)
    assert out.shape == (2, encoder.embed_dim)
    assert torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["resnet18", "convnet"])
@pytest.mark.parametrize("norm", ["group", "none"])
def test_cnn_norm_options(name: str, norm: str) -> None:
    encoder = make(name, 1, 28, width=4, norm=norm)  # 4 channels: GroupNorm falls back to 4 groups
    out = encoder(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, encoder.embed_dim) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    kinds = {type(m) for m in encoder.modules()}
    assert (nn.GroupNorm in kinds) == (norm == "group") and nn.BatchNorm2d not in kinds


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_from_build_args(name: str) -> None:
    encoder = make(name, 1, 28)
    with torch.no_grad():  # make the running statistics differ from a fresh build
        encoder.train()(sample(name, 4, 1, 28))
    args = json.loads(json.dumps(encoder_config(encoder)))  # as export writes and reads it
    rebuilt = build_encoder(**args)
    assert type(rebuilt) is type(encoder)
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    x = sample(name, 3, 1, 28)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), encoder.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", IMAGE_NAMES)
@pytest.mark.parametrize("size", SIZES)
def test_forward_tokens_and_mask(name: str, size: int) -> None:
    encoder = make(name, 3, size).eval()
    if not is_token_model(encoder):
        pytest.skip(f"{name} has no tokens")
    n = encoder.num_patches
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        tokens = encoder.forward_tokens(x)
        assert tokens.shape == (3, 1 + n, encoder.embed_dim)
        # No hidden patch: the same as no mask at all.
        nothing_hidden = torch.zeros(3, n, dtype=torch.bool)
        torch.testing.assert_close(encoder.forward_tokens(x, nothing_hidden), tokens)

        n_hidden = n // 2
        mask = torch.zeros(3, n, dtype=torch.bool)
        for row in range(3):
            mask[row, torch.randperm(n)[:n_hidden]] = True
        masked = encoder.forward_tokens(x, mask)
        assert masked.shape == (3, 1 + n - n_hidden, encoder.embed_dim)
        assert torch.isfinite(masked).all()

        # Dropped means dropped: hidden pixels do not change anything.
        p = encoder.patch_size
        grid = size // p
        pixel_mask = mask.reshape(3, 1, grid, 1, grid, 1).expand(3, 3, grid, p, grid, p)
        noisy = x + 10 * torch.randn_like(x) * pixel_mask.reshape(3, 3, size, size)
        torch.testing.assert_close(encoder.forward_tokens(noisy, mask), masked)

        # Each row equals running its visible patches through the blocks alone, in order.
        for row in range(3):
            visible = (~mask[row]).nonzero().squeeze(1)  # (N_visible,)
            patches = encoder.patch_embed(x[row : row + 1]).flatten(2).transpose(1, 2)
            patches = (patches + encoder.pos_embed[:, 1:])[:, visible]  # (1, N_visible, D)
            cls = encoder.cls_token + encoder.pos_embed[:, :1]  # (1, 1, D)
            expected = torch.cat([cls, patches], dim=1)
            for block in encoder.blocks:
                expected = block(expected)
            torch.testing.assert_close(masked[row : row + 1], encoder.norm(expected))

        # keep_masked: every patch stays, hidden ones as the mask token; pixels hidden.
        kept = encoder.forward_tokens(x, mask, keep_masked=True)
        assert kept.shape == (3, 1 + n, encoder.embed_dim)
        torch.testing.assert_close(encoder.forward_tokens(noisy, mask, keep_masked=True), kept)


@pytest.mark.parametrize("name", TRANSFORMER_NAMES)
@pytest.mark.parametrize("length", LENGTHS)
def test_text_forward_tokens_and_mask(name: str, length: int) -> None:
    encoder = make(name).eval()
    tokens = sample(name, 3, size=length)
    D = encoder.embed_dim
    with torch.no_grad():
        states = encoder.forward_tokens(tokens)
        assert states.shape == (3, length, D)
        nothing_hidden = torch.zeros(3, length, dtype=torch.bool)
        torch.testing.assert_close(encoder.forward_tokens(tokens, nothing_hidden), states)
        torch.testing.assert_close(
            encoder.forward_tokens(tokens, nothing_hidden, keep_masked=False), states
        )

        n_hidden = length // 2
        mask = torch.zeros(3, length, dtype=torch.bool)
        for row in range(3):
            mask[row, torch.randperm(length)[:n_hidden]] = True
        other = torch.randint(1, VOCAB, tokens.shape)
        scrambled = torch.where(mask & (tokens != PAD), other, tokens)  # hidden ids changed

        # keep_masked (the default for text): every position stays; hidden ids do not matter.
        kept = encoder.forward_tokens(tokens, mask)
        assert kept.shape == (3, length, D) and torch.isfinite(kept).all()
        torch.testing.assert_close(encoder.forward_tokens(scrambled, mask), kept)

        # Dropped means dropped: hidden ids do not matter either.
        dropped = encoder.forward_tokens(tokens, mask, keep_masked=False)
        assert dropped.shape == (3, length - n_hidden, D) and torch.isfinite(dropped).all()
        torch.testing.assert_close(
            encoder.forward_tokens(scrambled, mask, keep_masked=False), dropped
        )

        # Each row equals running its visible tokens alone, at their original positions.
        for row in range(3):
            visible = (~mask[row]).nonzero().squeeze(1)  # (L_visible,)
            ids = tokens[row, visible]
            if not bool((ids != PAD).any()):
                continue  # nothing but padding left: its states are unspecified
            x = encoder.token_embed(ids) + encoder.pos_embed[0, visible]  # (L_visible, D)
            x = x[None]
            is_token = (ids != PAD)[None]
            attn_mask, is_causal = encoder._attention_mask(is_token)
            for block in encoder.blocks:
                x = block(x, attn_mask, None, is_causal)
            keep = ids != PAD
            torch.testing.assert_close(dropped[row, keep], encoder.norm(x)[0, keep])

        layers = encoder.forward_layers(tokens)
        assert len(layers) == len(encoder.blocks)
        assert all(t.shape == (3, length, D) for t in layers)


def test_vit_pools_attention_and_checkpointing() -> None:
    encoder = make("vit-tiny", 3, 16, pool="mean").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens = encoder.forward_tokens(x)
        torch.testing.assert_close(encoder(x), tokens[:, 1:].mean(dim=1))
        attention = encoder.get_last_attention(x)
    assert attention.shape == (2, 3, 1 + encoder.num_patches, 1 + encoder.num_patches)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 3, 17))

    plain = make("vit-tiny", 3, 16)
    checkpointed = make("vit-tiny", 3, 16, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        model(x).sum().backward()
    for (pname, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=pname)


def test_vit_other_input_size_interpolates_positions() -> None:
    encoder = make("vit-tiny", 3, 32).eval()
    with torch.no_grad():
        tokens = encoder.forward_tokens(torch.randn(2, 3, 16, 16))
    assert tokens.shape == (2, 1 + 16, encoder.embed_dim)


def test_text_pools_and_checkpointing() -> None:
    encoder = make("transformer-tiny", pool="cls").eval()
    tokens = sample("transformer-tiny", 2, size=9)
    with torch.no_grad():
        torch.testing.assert_close(encoder(tokens), encoder.forward_tokens(tokens)[:, 0])

    plain = make("gpt-tiny", dropout=0.0)
    checkpointed = make("gpt-tiny", dropout=0.0, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        model(tokens).sum().backward()
    for (pname, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=pname)


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(SelfsupError, match="did you mean 'resnet18'") as info:
        build_encoder("resnet-18", in_channels=3, image_size=32)
    assert all(name in str(info.value) for name in NAMES)


def test_unknown_or_mistyped_override() -> None:
    with pytest.raises(SelfsupError, match="'widht'.*accepted options are norm, width"):
        build_encoder("convnet", in_channels=3, image_size=32, widht=16)
    with pytest.raises(SelfsupError, match="'width' must be int"):
        build_encoder("convnet", in_channels=3, image_size=32, width="16")
    with pytest.raises(SelfsupError, match="unknown norm 'layer'"):
        build_encoder("resnet18", in_channels=3, image_size=32, norm="layer")


def test_bad_patch_size_and_bad_masks() -> None:
    with pytest.raises(SelfsupError, match="patch_size 4 does not divide image_size 30"):
        build_encoder("vit-tiny", in_channels=3, image_size=30, depth=1)
    encoder = make("vit-tiny", 3, 8)  # 2×2 patches of 4 px
    x = torch.randn(2, 3, 8, 8)
    uneven = torch.tensor([[True, False, False, False], [True, True, False, False]])
    with pytest.raises(SelfsupError, match="same number of patches"):
        encoder.forward_tokens(x, uneven)
    with pytest.raises(SelfsupError, match="bool tensor of shape"):
        encoder.forward_tokens(x, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(SelfsupError, match="multiples of 4"):
        encoder(torch.randn(2, 3, 10, 10))


def test_a_channels_last_encoder_exports_and_loads_back(tmp_path) -> None:
    """Training runs channels-last; the export writes contiguous weights all the same."""
    from selfsup.export import export_encoder, load_encoder

    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=1, image_size=28, width=8).eval()
    encoder = encoder.to(memory_format=torch.channels_last)
    export_encoder(encoder, tmp_path)
    images = torch.rand(2, 1, 28, 28)
    loaded = load_encoder(tmp_path).eval()
    torch.testing.assert_close(loaded(images), encoder(images), rtol=1e-6, atol=1e-6)
