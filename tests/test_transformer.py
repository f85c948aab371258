"""The text Transformer and the ViT's masked-prediction additions, against slow references."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from selfsup.encoders import (
    ENCODERS,
    TextTransformer,
    build_encoder,
    encoder_config,
    encoder_inputs,
    encoder_modality,
)
from selfsup.encoders.transformer import Attention, apply_rotary, rotary_angles
from selfsup.errors import SelfsupError

VOCAB, PAD = 50, 0


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def text_encoder(**kwargs: Any) -> TextTransformer:
    options: dict[str, Any] = {
        "vocab_size": VOCAB,
        "max_length": 24,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 4,
        "dropout": 0.0,
        **kwargs,
    }
    return TextTransformer(**options).eval()


def random_tokens(B: int, L: int, lengths: list[int] | None = None) -> Tensor:
    """(B, L) ids in 1..VOCAB-1, padded with PAD after ``lengths[b]`` tokens."""
    tokens = torch.randint(1, VOCAB, (B, L))
    for row, n in enumerate(lengths or []):
        tokens[row, n:] = PAD
    return tokens


def fixed_count_mask(B: int, L: int, n_hidden: int) -> Tensor:
    mask = torch.zeros(B, L, dtype=torch.bool)
    for row in range(B):
        mask[row, torch.randperm(L)[:n_hidden]] = True
    return mask


# --- a slow reference, written the obvious way -------------------------------------------


def rotate_slow(x: Tensor, position: int) -> Tensor:
    """One head vector (d,) turned by the block-diagonal RoFormer rotation at ``position``,
    with pairs (i, i + d/2), built as an explicit matrix."""
    d = x.shape[0]
    R = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        angle = position * 10000.0 ** (-2 * i / d)
        c, s = math.cos(angle), math.sin(angle)
        R[i, i], R[i, i + d // 2] = c, -s
        R[i + d // 2, i], R[i + d // 2, i + d // 2] = s, c
    return R @ x.double()


def reference_states(model: TextTransformer, tokens: Tensor) -> Tensor:
    """forward_tokens by loops over rows, heads, queries and keys (eval mode, no mask).

    Query i attends to key j iff j is not a pad and (not causal or j <= i); pad queries
    are left at zero (their states are unspecified)."""
    B, L = tokens.shape
    D, h = model.embed_dim, model.blocks[0].attn.num_heads
    d = D // h
    out = torch.zeros(B, L, D, dtype=torch.float64)
    for b in range(B):
        x = model.token_embed.weight[tokens[b]].double()  # (L, D)
        if model.pos_embed is not None:
            x = x + model.pos_embed[0, :L].double()
        for block in model.blocks:
            attn = block.attn
            qkv = torch.nn.functional.linear(
                torch.nn.functional.layer_norm(
                    x, (D,), block.norm1.weight.double(), block.norm1.bias.double(), 1e-6
                ),
                attn.qkv.weight.double(),
                attn.qkv.bias.double(),
            )  # (L, 3D)
            q, k, v = qkv[:, :D], qkv[:, D : 2 * D], qkv[:, 2 * D :]
            heads = torch.zeros(L, D, dtype=torch.float64)
            for head in range(h):
                cols = slice(head * d, (head + 1) * d)
                for i in range(L):
                    if tokens[b, i] == model.pad_id:
                        continue
                    qi = q[i, cols]
                    if model.positions == "rotary":
                        qi = rotate_slow(qi, i)
                    scores, values = [], []
                    for j in range(L):
                        if tokens[b, j] == model.pad_id or (model.causal and j > i):
                            continue
                        kj = k[j, cols]
                        if model.positions == "rotary":
                            kj = rotate_slow(kj, j)
                        scores.append(float(qi @ kj) / math.sqrt(d))
                        values.append(v[j, cols])
                    weights = torch.tensor(scores, dtype=torch.float64).softmax(dim=0)
                    heads[i, cols] = sum(w * val for w, val in zip(weights, values))
            x = x + torch.nn.functional.linear(
                heads, attn.proj.weight.double(), attn.proj.bias.double()
            )
            lin1, lin2 = block.mlp[0], block.mlp[2]
            hidden = torch.nn.functional.layer_norm(
                x, (D,), block.norm2.weight.double(), block.norm2.bias.double(), 1e-6
            )
            hidden = torch.nn.functional.gelu(
                torch.nn.functional.linear(hidden, lin1.weight.double(), lin1.bias.double())
            )
            x = x + torch.nn.functional.linear(hidden, lin2.weight.double(), lin2.bias.double())
        x = torch.nn.functional.layer_norm(
            x, (D,), model.norm.weight.double(), model.norm.bias.double(), 1e-6
        )
        keep = tokens[b] != model.pad_id
        out[b, keep] = x[keep]
    return out


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_loop_reference(positions: str, causal: bool) -> None:
    model = text_encoder(positions=positions, causal=causal, max_length=8, embed_dim=16)
    tokens = random_tokens(3, 7, lengths=[7, 4, 1])
    with torch.no_grad():
        states = model.forward_tokens(tokens).double()
    with torch.no_grad():
        reference = reference_states(model, tokens)
    keep = tokens != PAD
    torch.testing.assert_close(states[keep], reference[keep], rtol=1e-4, atol=1e-5)


def graph_nodes(out: Tensor) -> set[str]:
    """The names of every autograd node behind ``out``."""
    seen, todo, names = set(), [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def test_attention_gradients_match_a_column_split_reference() -> None:
    """Attention's gradients equal those of the obvious split of the qkv projection into
    q | k | v columns and heads, and the split is one unbind: three indexings ``qkv[i]``
    would each fill a zero tensor of the whole (3, B, h, N, d) in the backward (11% of an
    attention layer's forward and backward at CLIP's D 128, 65 tokens, batch 64)."""
    B, N, D, h = 2, 5, 16, 4
    attn = Attention(D, h).double()
    x = torch.randn(B, N, D, dtype=torch.float64, requires_grad=True)
    out = attn(x)
    out.square().sum().backward()
    assert "UnbindBackward0" in graph_nodes(out) and "SelectBackward0" not in graph_nodes(out)
    got = (x.grad.clone(), attn.qkv.weight.grad.clone())

    x.grad = None
    attn.zero_grad()
    qkv = torch.nn.functional.linear(x, attn.qkv.weight, attn.qkv.bias)  # (B, N, 3D)
    q, k, v = (t.reshape(B, N, h, D // h).transpose(1, 2) for t in qkv.split(D, dim=-1))
    weights = (q @ k.transpose(-2, -1) / math.sqrt(D // h)).softmax(dim=-1)  # (B, h, N, N)
    heads = (weights @ v).transpose(1, 2).reshape(B, N, D)
    reference = torch.nn.functional.linear(heads, attn.proj.weight, attn.proj.bias)
    reference.square().sum().backward()
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(got, (x.grad, attn.qkv.weight.grad))


# --- padding, causality, rotary ---------------------------------------------------------


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("causal", [False, True])
def test_padding_does_not_change_features(positions: str, causal: bool) -> None:
    model = text_encoder(positions=positions, causal=causal)
    lengths = [12, 5, 9]
    tokens = random_tokens(3, 12, lengths)
    longer = torch.cat([tokens, torch.full((3, 8), PAD)], dim=1)  # 8 more pads
    with torch.no_grad():
        features, features_longer = model(tokens), model(longer)
        states = model.forward_tokens(tokens)
        torch.testing.assert_close(features_longer, features, rtol=1e-5, atol=1e-5)
        for row, n in enumerate(lengths):
            alone = tokens[row : row + 1, :n]  # no padding at all: SDPA's unmasked path
            torch.testing.assert_close(model(alone)[0], features[row], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                model.forward_tokens(alone)[0], states[row, :n], rtol=1e-5, atol=1e-5
            )
        # Mean pooling is over the tokens only: the hand-made mean of the token states.
        expected = torch.stack([states[row, :n].mean(dim=0) for row, n in enumerate(lengths)])
        torch.testing.assert_close(features, expected)


def test_cls_pool_is_position_zero_and_ignores_padding() -> None:
    model = text_encoder(pool="cls")
    tokens = random_tokens(2, 10, [10, 6])
    with torch.no_grad():
        features = model(tokens)
        torch.testing.assert_close(features, model.forward_tokens(tokens)[:, 0])
        torch.testing.assert_close(model(tokens[1:, :6])[0], features[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_mask_by_loops(causal: bool) -> None:
    """Query i may see key j iff j is a token (and j <= i when causal), or j = i: a pad
    query sees itself, so no softmax row is empty (SDPA kernels differ on empty rows)."""
    model = text_encoder(causal=causal)
    is_token = random_tokens(3, 7, [7, 3, 0]) != PAD
    is_token[1, 0] = False  # left padding too
    allowed, is_causal = model._attention_mask(is_token)
    assert allowed is not None and allowed.shape == (3, 1, 7, 7) and not is_causal
    for b in range(3):
        for i in range(7):
            for j in range(7):
                expected = bool(is_token[b, j]) and (not causal or j <= i) or i == j
                assert bool(allowed[b, 0, i, j]) == expected, (b, i, j)
    assert model._attention_mask(torch.ones(2, 7, dtype=torch.bool)) == (None, causal)


def test_empty_rows_and_left_padding_stay_finite() -> None:
    model = text_encoder(causal=True).train()
    tokens = random_tokens(3, 10)
    tokens[0] = PAD  # nothing but padding
    tokens[1, :4] = PAD  # left padding: the first queries of a causal model see only pads
    states = model.forward_tokens(tokens)
    assert torch.isfinite(states).all()
    features = model(tokens)
    assert torch.isfinite(features).all()
    features.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causal_states_ignore_later_tokens(positions: str) -> None:
    L = 12
    causal = text_encoder(causal=True, positions=positions)
    bidirectional = text_encoder(causal=False, positions=positions)
    tokens = random_tokens(2, L, [L, 9])
    for t in range(L - 1):
        changed = tokens.clone()
        changed[:, t + 1] = (changed[:, t + 1] % (VOCAB - 1)) + 1  # another non-pad id
        with torch.no_grad():
            before, after = causal.forward_tokens(tokens), causal.forward_tokens(changed)
            torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1])
            assert not torch.allclose(after[0, t + 1], before[0, t + 1])
            # The bidirectional model is the control: position 0 sees the change.
            moved = bidirectional.forward_tokens(changed)[0, 0]
            assert not torch.allclose(moved, bidirectional.forward_tokens(tokens)[0, 0])


def test_rotary_matches_rotation_matrices_and_is_relative() -> None:
    d = 8
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)

    def turned(x: Tensor, position: int) -> Tensor:
        cos, sin = rotary_angles(torch.tensor([position]), d)  # (1, d/2)
        return apply_rotary(x[None].float(), cos, sin)[0].double()  # (d,)

    for m in (0, 1, 5, 17):
        torch.testing.assert_close(turned(q, m), rotate_slow(q, m), rtol=1e-5, atol=1e-5)
    for m, n in [(0, 3), (2, 9), (7, 1), (4, 4)]:
        score = turned(q, m) @ turned(k, n)
        for shift in (1, 6, 40):
            shifted = turned(q, m + shift) @ turned(k, n + shift)
            torch.testing.assert_close(shifted, score, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(turned(q, 0) @ turned(k, 3), turned(q, 0) @ turned(k, 4))
    # Norms are kept: a rotation.
    torch.testing.assert_close(turned(q, 11).norm(), q.norm(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_rotary_encoder_sees_offsets_only(causal: bool) -> None:
    """Dropping the first s tokens keeps their successors at positions s, s+1, ...: with
    rotary positions that is the same as the shortened sequence from position 0."""
    tokens = random_tokens(2, 12)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, :3] = True
    for positions, same in (("rotary", True), ("learned", False)):
        model = text_encoder(positions=positions, causal=causal)
        with torch.no_grad():
            dropped = model.forward_tokens(tokens, mask, keep_masked=False)  # (2, 9, D)
            shortened = model.forward_tokens(tokens[:, 3:])
        assert torch.allclose(dropped, shortened, rtol=1e-4, atol=1e-5) == same, positions


# --- masks ------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("causal", [False, True])
def test_keep_masked_is_the_mask_token_embedding(positions: str, causal: bool) -> None:
    model = text_encoder(positions=positions, causal=causal)
    special = VOCAB - 1  # an id whose embedding will be the mask token
    tokens = random_tokens(3, 12, [12, 8, 10]).clamp(max=VOCAB - 2)
    mask = torch.rand(3, 12) < 0.4  # any count per row
    is_token = tokens != PAD
    with torch.no_grad():
        model.token_embed.weight[special] = model.mask_token
        masked = model.forward_tokens(tokens, mask)  # keep_masked=True is the default
        assert masked.shape == (3, 12, model.embed_dim)
        # Hidden positions hold the mask token: the same as the id whose embedding it is.
        as_ids = torch.where(mask & is_token, special, tokens)
        torch.testing.assert_close(model.forward_tokens(as_ids)[is_token], masked[is_token])
        # So the hidden ids do not matter.
        other = torch.randint(1, VOCAB - 1, (3, 12))
        scrambled = torch.where(mask & is_token, other, tokens)
        torch.testing.assert_close(model.forward_tokens(scrambled, mask), masked)
        assert not torch.allclose(model.forward_tokens(scrambled), model.forward_tokens(tokens))
        nothing = torch.zeros(3, 12, dtype=torch.bool)
        torch.testing.assert_close(
            model.forward_tokens(tokens, nothing), model.forward_tokens(tokens)
        )


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("causal", [False, True])
def test_dropping_equals_padding_the_hidden_tokens(positions: str, causal: bool) -> None:
    """Dropped tokens vanish from attention but the rest keep their positions: exactly what
    padding the hidden tokens in place does to the visible ones."""
    model = text_encoder(positions=positions, causal=causal)
    tokens = random_tokens(3, 12)
    mask = fixed_count_mask(3, 12, 5)
    with torch.no_grad():
        dropped = model.forward_tokens(tokens, mask, keep_masked=False)
        assert dropped.shape == (3, 7, model.embed_dim)
        padded = model.forward_tokens(torch.where(mask, PAD, tokens))  # (3, 12, D)
        visible = padded[~mask].reshape(3, 7, -1)
        torch.testing.assert_close(dropped, visible, rtol=1e-5, atol=1e-5)
        scrambled = torch.where(mask, torch.randint(1, VOCAB, (3, 12)), tokens)
        torch.testing.assert_close(
            model.forward_tokens(scrambled, mask, keep_masked=False), dropped
        )


def test_bad_masks_and_tokens() -> None:
    model = text_encoder()
    tokens = random_tokens(2, 6)
    uneven = torch.tensor([[True] + [False] * 5, [True, True] + [False] * 4])
    with pytest.raises(SelfsupError, match="same number of tokens"):
        model.forward_tokens(tokens, uneven, keep_masked=False)
    model.forward_tokens(tokens, uneven)  # mask tokens: any count per row
    with pytest.raises(SelfsupError, match="bool tensor of shape"):
        model.forward_tokens(tokens, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(SelfsupError, match="integer token ids"):
        model(tokens.float())
    with pytest.raises(SelfsupError, match="larger max_length"):
        model(random_tokens(1, 25))
    with pytest.raises(SelfsupError, match="outside the vocabulary"):
        model(torch.tensor([[1, VOCAB]]))


# --- data2vec layers, checkpointing -----------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_forward_layers_are_the_ffn_branches(causal: bool) -> None:
    model = text_encoder(causal=causal, depth=3)
    tokens = random_tokens(2, 10, [10, 7])
    mask = torch.rand(2, 10) < 0.3
    with torch.no_grad():
        layers = model.forward_layers(tokens, mask)
        assert len(layers) == 3 and all(t.shape == (2, 10, model.embed_dim) for t in layers)
        # By hand: x_l = x + a + f with a = attn(LN1 x), f = MLP(LN2(x + a)); f is the target.
        x, is_token, _ = model._embed(tokens, mask, keep_masked=True)
        attn_mask, is_causal = model._attention_mask(is_token)
        for block, target in zip(model.blocks, layers):
            x = x + block.attn(block.norm1(x), attn_mask, None, is_causal)
            ffn = block.mlp(block.norm2(x))
            torch.testing.assert_close(target, ffn)
            x = x + ffn
        torch.testing.assert_close(model.norm(x), model.forward_tokens(tokens, mask))


def test_vit_forward_layers() -> None:
    vit = build_encoder("vit-tiny", in_channels=3, image_size=16, depth=3).eval()
    x = torch.randn(2, 3, 16, 16)
    mask = torch.rand(2, 16) < 0.5
    with torch.no_grad():
        layers = vit.forward_layers(x, mask)
        assert len(layers) == 3 and all(t.shape == (2, 17, vit.embed_dim) for t in layers)
        tokens = vit._embed(x, mask, keep_masked=True)
        for block, target in zip(vit.blocks, layers):
            tokens = tokens + block.attn(block.norm1(tokens))
            ffn = block.mlp(block.norm2(tokens))
            torch.testing.assert_close(target, ffn)
            tokens = tokens + ffn
        torch.testing.assert_close(vit.norm(tokens), vit.forward_tokens(x, mask, keep_masked=True))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_grad_checkpointing_gives_the_same_gradients(positions: str) -> None:
    plain = text_encoder(positions=positions, causal=True, dropout=0.1).train()
    checkpointed = text_encoder(
        positions=positions, causal=True, dropout=0.1, grad_checkpointing=True
    ).train()
    checkpointed.load_state_dict(plain.state_dict())
    tokens = random_tokens(3, 12, [12, 6, 9])
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same dropout masks
        out = model(tokens).sum() + sum(t.square().mean() for t in model.forward_layers(tokens))
        out.backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_dropout_acts_in_training_only() -> None:
    model = text_encoder(dropout=0.1)
    tokens = random_tokens(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), model(tokens))
        model.train()
        assert not torch.allclose(model(tokens), model(tokens))


def test_init_and_tied_embedding() -> None:
    model = text_encoder(embed_dim=64, depth=2, vocab_size=VOCAB)
    assert model.token_embed.weight.shape == (VOCAB, 64)
    assert abs(float(model.token_embed.weight.detach().std()) - 0.02) < 0.002
    assert abs(float(model.blocks[0].mlp[0].weight.detach().std()) - 0.02) < 0.002
    assert not any(block.attn.qkv.bias.any() for block in model.blocks)
    # The LM heads tie logits to the table: h @ Eᵀ is (B, L, vocab).
    logits = model.forward_tokens(random_tokens(2, 5)) @ model.token_embed.weight.T
    assert logits.shape == (2, 5, VOCAB)


def test_mask_token_is_always_in_the_graph() -> None:
    """DDP without find_unused_parameters fails on a parameter that gets no gradient, so
    the mask token takes part (with a zero gradient) in plain forwards too."""
    text = text_encoder()
    text(random_tokens(2, 6)).sum().backward()
    assert text.mask_token.grad is not None and not text.mask_token.grad.any()
    vit = build_encoder("vit-tiny", in_channels=1, image_size=8, depth=1)
    vit(torch.randn(2, 1, 8, 8)).sum().backward()
    assert vit.mask_token.grad is not None and not vit.mask_token.grad.any()
    mask = torch.tensor([[True, False, False, False], [False, True, False, False]])
    vit.zero_grad()
    vit.forward_tokens(torch.randn(2, 1, 8, 8), mask, keep_masked=True).sum().backward()
    assert vit.mask_token.grad.abs().sum() > 0


# --- the ViT's mask token ---------------------------------------------------------------


def test_vit_keep_masked_replaces_hidden_patches() -> None:
    vit = build_encoder("vit-tiny", in_channels=3, image_size=16, depth=2).eval()
    with torch.no_grad():
        vit.mask_token.normal_(std=0.02)
    x = torch.randn(3, 3, 16, 16)
    mask = torch.rand(3, 16) < 0.5  # any count per row
    with torch.no_grad():
        masked = vit.forward_tokens(x, mask, keep_masked=True)
        assert masked.shape == (3, 17, vit.embed_dim)
        # Hidden pixels do not matter; visible ones do.
        pixel_mask = mask.reshape(3, 1, 4, 1, 4, 1).expand(3, 3, 4, 4, 4, 4).reshape(3, 3, 16, 16)
        noisy = x + 10 * torch.randn_like(x) * pixel_mask
        torch.testing.assert_close(vit.forward_tokens(noisy, mask, keep_masked=True), masked)
        assert not torch.allclose(vit.forward_tokens(x + 1, mask, keep_masked=True), masked)
        # By hand: mask token at hidden patches, then positions, CLS, blocks, norm.
        patches = vit.patch_embed(x).flatten(2).transpose(1, 2)  # (3, 16, D)
        patches = torch.where(mask[..., None], vit.mask_token, patches) + vit.pos_embed[:, 1:]
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(3, -1, -1)
        expected = torch.cat([cls, patches], dim=1)
        for block in vit.blocks:
            expected = block(expected)
        torch.testing.assert_close(masked, vit.norm(expected))
        # Without keep_masked: MAE's dropping, unchanged.
        even = fixed_count_mask(3, 16, 12)
        assert vit.forward_tokens(x, even).shape == (3, 1 + 4, vit.embed_dim)


def test_vit_state_dict_without_mask_token_loads(tmp_path: Path) -> None:
    from selfsup.export import WEIGHTS, export_encoder, load_encoder

    vit = build_encoder("vit-tiny", in_channels=1, image_size=8, depth=1).eval()
    old = {k: v for k, v in vit.state_dict().items() if k != "mask_token"}  # before the token
    fresh = build_encoder("vit-tiny", in_channels=1, image_size=8, depth=1).eval()
    token = fresh.mask_token.detach().clone()
    fresh.load_state_dict(old, strict=True)
    torch.testing.assert_close(fresh.mask_token, token)  # kept as it was
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), vit(x), rtol=0, atol=0)
    assert "mask_token" not in old  # the caller's dict is left alone
    # A new state dict still round-trips the token itself.
    with torch.no_grad():
        vit.mask_token.fill_(0.5)
    fresh.load_state_dict(vit.state_dict())
    assert bool((fresh.mask_token == 0.5).all())
    # An export written before the mask token existed loads through load_encoder.
    export_encoder(vit, tmp_path)
    weights = load_file(str(tmp_path / WEIGHTS))
    del weights["mask_token"]
    save_file(weights, str(tmp_path / WEIGHTS))
    loaded = load_encoder(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), vit(x), rtol=0, atol=0)


# --- the registry -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transformer-tiny", "gpt-tiny"])
def test_build_encoder_rebuilds_text_encoders(name: str) -> None:
    encoder = build_encoder(
        name, vocab_size=VOCAB, max_length=16, pad_id=3, depth=1, positions="rotary"
    )
    args = json.loads(json.dumps(encoder_config(encoder)))
    assert args == {
        "name": name,
        "vocab_size": VOCAB,
        "max_length": 16,
        "pad_id": 3,
        **ENCODERS[name].defaults,
        "depth": 1,
        "positions": "rotary",
    }
    rebuilt = build_encoder(**args)
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    tokens = random_tokens(2, 16)
    tokens[1, 5:] = 3  # padding with pad_id 3
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(tokens), encoder.eval()(tokens), rtol=0, atol=0)
    assert encoder.causal == (name == "gpt-tiny") and encoder.pad_id == 3


def test_registry_modalities_and_inputs() -> None:
    assert encoder_modality("convnet") == "image" and encoder_modality("gpt-tiny") == "text"
    assert encoder_inputs("vit-tiny") == ("in_channels", "image_size")
    assert encoder_inputs("transformer-small") == ("vocab_size", "max_length", "pad_id")
    for name in ("transformer-tiny", "transformer-small", "gpt-tiny"):
        assert ENCODERS[name].modality == "text"
    tiny = build_encoder("transformer-tiny", vocab_size=VOCAB, max_length=8)
    assert tiny.build_args["pad_id"] == 0  # left out: 0
    with pytest.raises(SelfsupError, match="did you mean 'gpt-tiny'"):
        encoder_inputs("gpt-tini")


def test_registry_errors_name_the_missing_input() -> None:
    with pytest.raises(SelfsupError, match="needs vocab_size"):
        build_encoder("transformer-tiny", max_length=16)
    with pytest.raises(SelfsupError, match="needs max_length"):
        build_encoder("gpt-tiny", vocab_size=VOCAB)
    with pytest.raises(SelfsupError, match="needs in_channels"):
        build_encoder("convnet", image_size=8)
    with pytest.raises(SelfsupError, match="needs image_size"):
        build_encoder("vit-tiny", in_channels=3)
    with pytest.raises(SelfsupError, match="reads text .* not in_channels, image_size"):
        build_encoder("transformer-tiny", in_channels=3, image_size=32)
    with pytest.raises(SelfsupError, match="reads image .* not vocab_size"):
        build_encoder("convnet", in_channels=3, image_size=32, vocab_size=100)
    with pytest.raises(SelfsupError, match="pad_id 100 is not an id"):
        build_encoder("transformer-tiny", vocab_size=100, max_length=8, pad_id=100)
    with pytest.raises(SelfsupError, match="max_length must be a positive integer"):
        build_encoder("transformer-tiny", vocab_size=100, max_length=0)
    with pytest.raises(SelfsupError, match="'causal' must be bool"):
        build_encoder("transformer-tiny", vocab_size=100, max_length=8, causal="yes")
    with pytest.raises(SelfsupError, match="unknown positions 'sinusoid'"):
        build_encoder("transformer-tiny", vocab_size=100, max_length=8, positions="sinusoid")
    with pytest.raises(SelfsupError, match="use pool='mean' for a causal encoder"):
        build_encoder("gpt-tiny", vocab_size=100, max_length=8, pool="cls")
    with pytest.raises(SelfsupError, match="even head width"):
        build_encoder(
            "transformer-tiny", vocab_size=100, max_length=8, positions="rotary", embed_dim=12
        )
