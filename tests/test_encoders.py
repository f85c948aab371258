"""Every registered encoder: shapes, gradients, precision, memory format, rebuild, tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from selfsup.encoders import ENCODERS, build_encoder, encoder_config
from selfsup.errors import SelfsupError

NAMES = sorted(ENCODERS)
# Shrink only what makes a test slow; the architecture family stays the registered one.
FAST: dict[str, dict[str, Any]] = {
    "resnet18": {"width": 8},
    "vit-tiny": {"depth": 2},
    "vit-small": {"depth": 2, "embed_dim": 96, "num_heads": 6},
}
SIZES = (8, 28, 32)


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from threads, and on a shared 2-core machine OpenMP
    # threads waiting on each other made this file 10× slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def make(name: str, in_channels: int = 3, image_size: int = 28, **extra: Any) -> nn.Module:
    return build_encoder(
        name, in_channels=in_channels, image_size=image_size, **{**FAST.get(name, {}), **extra}
    )


def is_token_model(encoder: nn.Module) -> bool:
    return callable(getattr(encoder, "forward_tokens", None))


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name: str) -> None:
    spec = ENCODERS[name]
    assert spec.description and "\n" not in spec.description
    encoder = build_encoder(name, in_channels=3, image_size=32)  # full default size
    assert isinstance(encoder.embed_dim, int) and encoder.embed_dim > 0
    args = encoder_config(encoder)
    assert args == {"name": name, "in_channels": 3, "image_size": 32, **spec.defaults}
    assert json.loads(json.dumps(args)) == args


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_forward_shape_and_finite(name: str, in_channels: int, size: int) -> None:
    encoder = make(name, in_channels, size)
    out = encoder(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, encoder.embed_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    encoder = make(name, 3, 28)
    # Zero-initialised scales (residual gains, biases) pass no gradient upstream at
    # init by design; nudge them so the check below sees every path.
    with torch.no_grad():
        for p in encoder.parameters():
            if not p.any():
                p.add_(0.1)
    out = encoder(torch.randn(4, 3, 28, 28))
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in encoder.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_and_bf16_autocast(name: str) -> None:
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
        encoder.train()(torch.randn(4, 1, 28, 28))
    args = json.loads(json.dumps(encoder_config(encoder)))  # as export writes and reads it
    rebuilt = build_encoder(**args)
    assert type(rebuilt) is type(encoder)
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), encoder.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
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
