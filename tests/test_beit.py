"""BEiT and its VQ-VAE tokenizer: the quantizer against hand-computed and brute-force
references, the two training phases, the loss on hidden patches only, and learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.data.info import DataInfo
from selfsup.encoders import build_encoder
from selfsup.encoders.vq import VectorQuantizerEMA, VQTokenizer
from selfsup.errors import SelfsupError
from selfsup.methods.beit import MIM_PHASE, TOKENIZER_PHASE, BEiT, BEiTConfig

SIZE = 16


def tiny_vit(size: int = SIZE, patch: int = 4) -> torch.nn.Module:
    return build_encoder(
        "vit-tiny",
        in_channels=1,
        image_size=size,
        patch_size=patch,
        depth=2,
        embed_dim=32,
        num_heads=2,
    )


def tiny_beit(**args) -> BEiT:
    cfg = BEiTConfig(**{"num_codes": 32, "code_dim": 8, "tokenizer_width": 16, **args})
    return BEiT(cfg, tiny_vit(), DataInfo(channels=1, image_size=SIZE))


def images(batch: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (batch, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)}


# ------------------------------------------------------------------------------ quantizer


@pytest.mark.parametrize("num_codes, dim", [(5, 3), (64, 16)])
def test_nearest_code_equals_a_brute_force_loop(num_codes, dim):
    torch.manual_seed(num_codes)
    vq = VectorQuantizerEMA(num_codes, dim)
    vq.codebook.normal_()
    z = torch.randn(200, dim)
    expected = []
    rows, codes = z.tolist(), vq.codebook.tolist()
    for i in range(len(rows)):
        best, best_j = math.inf, -1
        for j in range(num_codes):
            d = sum((rows[i][c] - codes[j][c]) ** 2 for c in range(dim))
            if d < best:
                best, best_j = d, j
        expected.append(best_j)
    assert vq.nearest(z).tolist() == expected


def test_ema_update_equals_a_hand_computed_step():
    vq = VectorQuantizerEMA(3, 2, decay=0.5, eps=0.1, dead_after=5)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    vq.ema_count.copy_(torch.tensor([2.0, 1.0, 1.0]))
    vq.ema_sum.copy_(torch.tensor([[2.0, 2.0], [10.0, 0.0], [0.0, 10.0]]))
    vq.idle.copy_(torch.tensor([0, 3, 0]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 1.0], [-1.0, -1.0]])
    vq.train()
    zq, codes, loss, stats = vq(z)
    assert codes.tolist() == [0, 0, 1, 0]
    # n = (3, 1, 0); s_0 = (0, 0), s_1 = (9, 1), s_2 = 0
    # N = 0.5·(2, 1, 1) + 0.5·(3, 1, 0) = (2.5, 1.0, 0.5), ΣN = 4
    # m_0 = 0.5·(2, 2) + 0.5·(0, 0) = (1, 1); m_1 = 0.5·(10, 0) + 0.5·(9, 1) = (9.5, 0.5)
    # m_2 = 0.5·(0, 10) = (0, 5)
    # Ñ_j = (N_j + 0.1) / (4 + 0.3) · 4
    smoothed = [(n + 0.1) / 4.3 * 4 for n in (2.5, 1.0, 0.5)]
    expected = torch.tensor(
        [
            [1 / smoothed[0], 1 / smoothed[0]],
            [9.5 / smoothed[1], 0.5 / smoothed[1]],
            [0.0, 5 / smoothed[2]],
        ]
    )
    torch.testing.assert_close(vq.ema_count, torch.tensor([2.5, 1.0, 0.5]))
    torch.testing.assert_close(vq.ema_sum, torch.tensor([[1.0, 1.0], [9.5, 0.5], [0.0, 5.0]]))
    torch.testing.assert_close(vq.codebook, expected)
    assert vq.idle.tolist() == [0, 0, 1]
    # the output and the commitment loss use the codebook from before the step
    old = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(zq, old)
    torch.testing.assert_close(loss, 0.25 * ((z - old) ** 2).mean())
    # usage: 2 of 3 codes picked; perplexity of (3/4, 1/4)
    assert float(stats["usage"]) == pytest.approx(2 / 3)
    p = torch.tensor([0.75, 0.25])
    assert float(stats["perplexity"]) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))


def test_eval_mode_leaves_the_codebook_alone():
    vq = VectorQuantizerEMA(8, 4).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(50, 4))
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_dead_codes_are_reseeded_from_the_batch_and_the_codebook_stays_used():
    torch.manual_seed(0)
    vq = VectorQuantizerEMA(16, 2, dead_after=3).train()
    vq.codebook.copy_(torch.full((16, 2), 100.0))  # every code far from the data ...
    vq.codebook[0] = 0.0  # ... but one
    vq.ema_sum.copy_(vq.codebook)
    vq.idle.zero_()
    data = torch.randn(256, 2)
    usage = []
    for _ in range(6):
        _, _, _, stats = vq(data)
        usage.append(float(stats["usage"]))
    assert usage[:3] == [1 / 16] * 3  # one code takes everything until the restart ...
    assert usage[-1] > 0.5  # ... after which the re-seeded codes are picked
    assert (vq.codebook.abs() < 50).all()  # every code now lies among the data
    # a re-seeded code starts as a batch vector with count 1
    vq2 = VectorQuantizerEMA(4, 2, dead_after=1).train()
    vq2.codebook.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]]))
    vq2.ema_sum.copy_(vq2.codebook)
    vq2.idle.zero_()
    z = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    vq2(z)
    rows = {tuple(r) for r in z.tolist()}
    assert all(tuple(vq2.codebook[j].tolist()) in rows for j in (1, 2, 3))
    assert vq2.ema_count[1:].tolist() == [1.0, 1.0, 1.0] and vq2.idle.tolist() == [0, 0, 0, 0]


def test_straight_through_gradient_reaches_the_encoder():
    vq = VectorQuantizerEMA(8, 4).eval()  # training mode would move the codebook after
    z = torch.randn(10, 4, requires_grad=True)
    zq, codes, _, _ = vq(z)
    w = torch.randn(10, 4)
    (zq * w).sum().backward()
    torch.testing.assert_close(z.grad, w)  # ∂z_q/∂z = I
    torch.testing.assert_close(zq.detach(), vq.codebook[codes])  # values are the codes

    torch.manual_seed(0)
    tok = VQTokenizer(1, 4, num_codes=16, code_dim=8, width=8)
    out = tok(torch.randn(4, 1, 16, 16))
    F.mse_loss(out["recon"], torch.zeros_like(out["recon"])).backward()  # decoder path only
    first = tok.encoder[0].weight.grad
    assert first is not None and first.abs().sum() > 0


@pytest.mark.parametrize("patch, size", [(1, 4), (2, 8), (4, 28), (3, 12), (7, 28)])
def test_tokenizer_gives_one_code_per_vit_patch(patch, size):
    tok = VQTokenizer(3, patch, num_codes=16, code_dim=4, width=8)
    x = torch.randn(2, 3, size, size)
    out = tok(x)
    grid = size // patch
    assert out["codes"].shape == (2, grid * grid) and out["codes"].dtype == torch.int64
    assert out["recon"].shape == x.shape
    tok.eval()
    codes = tok.encode(x)
    assert torch.equal(codes, tok(x)["codes"])
    assert tok.decode(codes, grid).shape == x.shape
    # row-major over the grid, as the ViT's patches: code r·grid + c is latent (r, c)'s
    z = tok.encoder(x)  # (B, D, grid, grid)
    for r in range(grid):
        for c in range(grid):
            assert torch.equal(codes[:, r * grid + c], tok.quantizer.nearest(z[:, :, r, c]))


def test_tokenizer_learns_to_reconstruct():
    torch.manual_seed(0)
    tok = VQTokenizer(1, 4, num_codes=32, code_dim=8, width=16, decay=0.9)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    x = torch.randn(16, 1, 16, 16).cumsum(dim=-1) / 4  # smooth-ish images
    first = None
    for _ in range(60):
        out = tok(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["recon_loss"])
    assert float(out["recon_loss"]) < 0.5 * first


# ------------------------------------------------------------------------------ BEiT


def _grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters() if p.requires_grad]


def test_phase_one_trains_only_the_tokenizer_and_phase_two_only_the_vit():
    torch.manual_seed(0)
    m = tiny_beit(tokenizer_fraction=0.25)
    assert int(m.phase) == TOKENIZER_PHASE
    out = m.training_step(images())
    assert float(out["phase"]) == 1 and "recon_loss" in out and "mim_accuracy" not in out
    assert out["features"].shape == (8, 32) and not out["features"].requires_grad
    out["loss"].backward()
    assert all(g is not None for g in _grads(m.tokenizer))
    assert any(g.abs().sum() > 0 for g in _grads(m.tokenizer))
    assert all(g is None for g in _grads(m.encoder) + _grads(m.head))
    assert not any(p.requires_grad for p in m.frozen_tokenizer.parameters())

    m.zero_grad(set_to_none=True)
    m.on_step_end(0.2)
    assert int(m.phase) == TOKENIZER_PHASE  # not yet
    m.on_step_end(0.25)
    assert int(m.phase) == MIM_PHASE
    snapshot = m.frozen_tokenizer.state_dict()
    assert all(torch.equal(v, snapshot[k]) for k, v in m.tokenizer.state_dict().items())
    out = m.training_step(images())
    assert float(out["phase"]) == 2 and 0 <= float(out["mim_accuracy"]) <= 1
    assert 0 < float(out["codebook_usage"]) <= 1
    out["loss"].backward()
    assert all(g is None for g in _grads(m.tokenizer))
    assert all(g is not None for g in _grads(m.encoder) + _grads(m.head))
    assert any(g.abs().sum() > 0 for g in _grads(m.encoder))
    # the frozen tokenizer's codebook does not move in phase 2
    assert all(torch.equal(v, snapshot[k]) for k, v in m.frozen_tokenizer.state_dict().items())


def test_the_phase_is_in_the_state_dict_and_survives_jumps():
    torch.manual_seed(0)
    a = tiny_beit()
    a.training_step(images())  # the codebook moves
    a.on_step_end(0.9)  # progress jumps past the fraction (a resumed or refitted run)
    assert int(a.phase) == MIM_PHASE
    a.on_step_end(0.05)  # a horizon refit can lower progress: the phase never goes back
    assert int(a.phase) == MIM_PHASE
    b = tiny_beit()
    assert int(b.phase) == TOKENIZER_PHASE
    b.load_state_dict(a.state_dict())  # what resuming from a checkpoint does
    assert int(b.phase) == MIM_PHASE
    x = torch.randn(2, 1, SIZE, SIZE)
    assert torch.equal(a.frozen_tokenizer.encode(x), b.frozen_tokenizer.encode(x))
    torch.manual_seed(1)
    la = a.training_step(images())["loss"]
    torch.manual_seed(1)
    lb = b.training_step(images())["loss"]
    assert torch.equal(la, lb)


def _mim_loss_with_hook(m: BEiT, x: torch.Tensor, mask: torch.Tensor, where: str) -> torch.Tensor:
    """Phase-2 loss with noise added to the head's logits at the ``where`` positions."""

    def perturb(module, inputs, logits):
        noise = 5 * torch.randn_like(logits)
        keep = ~mask if where == "visible" else mask
        return logits + noise * keep[..., None]

    handle = m.head.register_forward_hook(perturb) if where != "none" else None
    try:
        return m._mim_step(x, mask)["loss"]
    finally:
        if handle is not None:
            handle.remove()


def test_loss_counts_hidden_patches_only_and_equals_a_loop_reference():
    torch.manual_seed(0)
    m = tiny_beit()
    m.training_step(images())
    m.on_step_end(0.5)
    x = torch.randn(4, 1, SIZE, SIZE)
    mask = m.sample_mask(4, x.device)
    assert mask.any() and (~mask).any()
    plain = _mim_loss_with_hook(m, x, mask, "none")
    assert torch.equal(plain, _mim_loss_with_hook(m, x, mask, "visible"))
    assert not torch.allclose(plain, _mim_loss_with_hook(m, x, mask, "hidden"))
    # slow reference: −log softmax at the true code, averaged over the hidden patches
    with torch.no_grad():
        codes = m.frozen_tokenizer.encode(x)
        logits, _ = m.logits(x, mask)
    terms = []
    for b in range(4):
        for n in range(mask.shape[1]):
            if mask[b, n]:
                terms.append(-torch.log_softmax(logits[b, n].double(), dim=0)[codes[b, n]])
    assert float(plain.detach()) == pytest.approx(float(sum(terms) / len(terms)), rel=1e-5)


def test_block_mask_hides_about_forty_percent():
    m = BEiT(
        BEiTConfig(num_codes=16, code_dim=4, tokenizer_width=8),
        tiny_vit(28, 4),
        DataInfo(channels=1, image_size=28),
    )
    assert m.num_masked == round(0.4 * 49)
    mask = m.sample_mask(500, torch.device("cpu"))
    assert mask.shape == (500, 49)
    assert mask.sum(dim=1).max() <= m.num_masked
    assert mask.float().sum(dim=1).mean() > 0.95 * m.num_masked


def test_reconstruct_keeps_true_codes_where_visible():
    torch.manual_seed(0)
    m = tiny_beit()
    m.training_step(images())
    m.on_step_end(0.5)
    m.eval()
    x = torch.randn(3, 1, SIZE, SIZE)
    nothing = torch.zeros(3, 16, dtype=torch.bool)
    recon, _ = m.reconstruct(x, nothing)
    expected = m.frozen_tokenizer.decode(m.frozen_tokenizer.encode(x), 4)
    torch.testing.assert_close(recon, expected)
    everything = torch.ones(3, 16, dtype=torch.bool)
    recon, _ = m.reconstruct(x, everything)
    logits, _ = m.logits(x, everything)
    torch.testing.assert_close(recon, m.frozen_tokenizer.decode(logits.argmax(-1), 4))


def _losses(lr: float, steps: int = 30) -> list[float]:
    torch.manual_seed(0)
    m = tiny_beit(tokenizer_fraction=0.2)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    batch = images(32)
    losses = []
    for step in range(steps):
        torch.manual_seed(step % 3)  # a few fixed view and mask draws
        out = m.training_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.on_step_end((step + 1) / steps)
        losses.append(float(out["loss"].detach()))
    return losses


def test_beit_learns_on_a_fixed_batch():
    trained, control = _losses(3e-3), _losses(0.0)
    # steps 7-30 are BEiT's; the control's ViT never moves
    assert sum(trained[-5:]) / 5 < 0.9 * sum(control[-5:]) / 5, (trained[-5:], control[-5:])


@pytest.mark.parametrize(
    "args, message",
    [
        ({"tokenizer_fraction": 0.0}, "tokenizer_fraction"),
        ({"tokenizer_fraction": 1.0}, "tokenizer_fraction"),
        ({"mask_ratio": 1.5}, "mask_ratio"),
        ({"num_codes": 1}, "num_codes"),
        ({"commitment": -1.0}, "commitment"),
    ],
)
def test_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(SelfsupError, match=message):
        tiny_beit(**args)


def test_beit_needs_a_vit():
    convnet = build_encoder("convnet", in_channels=1, image_size=SIZE, width=8)
    with pytest.raises(SelfsupError, match="ViT"):
        BEiT(BEiTConfig(), convnet, DataInfo(channels=1, image_size=SIZE))
