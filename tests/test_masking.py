"""Masking rules of the papers on large samples: MAE random, BEiT blocks, SimMIM squares, BERT."""

from __future__ import annotations

import math
import random

import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.views.masking import (
    PatchMasking,
    TokenMasking,
    _block_mask,
    bert_mask,
    block_mask,
    default_min_block,
    random_patch_mask,
    simmim_mask,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- MAE random masking


@pytest.mark.parametrize("num_patches", [49, 196])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9, 1.0])
def test_random_mask_hides_exact_count_uniformly(num_patches, ratio):
    B = 2000
    mask = random_patch_mask(B, num_patches, ratio, generator=gen(1))
    k = math.floor(num_patches * ratio + 0.5)
    assert mask.shape == (B, num_patches) and mask.dtype == torch.bool
    assert (mask.sum(dim=1) == k).all()
    # every position hidden with probability k/N: binomial(B, k/N) per position
    p = k / num_patches
    freq = mask.float().sum(dim=0)  # (N,)
    sd = math.sqrt(B * p * (1 - p)) + 1e-9
    assert ((freq - B * p).abs() <= 5 * sd).all()


def test_random_mask_rows_and_calls_differ_and_seed_repeats():
    a = random_patch_mask(64, 49, generator=gen(3))
    b = random_patch_mask(64, 49, generator=gen(3))
    assert torch.equal(a, b)
    g = gen(3)
    first, second = random_patch_mask(64, 49, generator=g), random_patch_mask(64, 49, generator=g)
    assert not torch.equal(first, second)  # a fresh mask per call (dynamic masking)
    assert len({tuple(row.tolist()) for row in first}) == 64  # and per image


def test_mae_rounding_matches_the_papers_counts():
    assert random_patch_mask(1, 196, 0.75).sum() == 147
    assert random_patch_mask(1, 49, 0.75).sum() == 37  # 36.75 -> 37
    assert random_patch_mask(1, 10, 0.25).sum() == 3  # halves round up
    with pytest.raises(SelfsupError, match=r"\[0, 1\]"):
        random_patch_mask(2, 49, 1.5)


# ---------------------------------------------------------------- BEiT block masking


def beit_reference(
    rng: random.Random, H: int, W: int, num_masked: int, min_block: int, min_aspect: float
) -> tuple[list[list[int]], int]:
    """BEiT's Algorithm 1 written the obvious way for one image: (mask, number of blocks)."""
    mask = [[0] * W for _ in range(H)]
    count, blocks = 0, 0
    lo, hi = math.log(min_aspect), math.log(1 / min_aspect)
    while count < num_masked:
        budget = num_masked - count
        added = 0
        for _ in range(10):
            area = rng.uniform(min_block, budget)
            aspect = math.exp(rng.uniform(lo, hi))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if h < H and w < W:
                top, left = rng.randint(0, H - h), rng.randint(0, W - w)
                new = sum(
                    1 - mask[i][j] for i in range(top, top + h) for j in range(left, left + w)
                )
                if 0 < new <= budget:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            mask[i][j] = 1
                    added = new
            if added:
                break
        if not added:
            break
        count += added
        blocks += 1
    return mask, blocks


@pytest.mark.parametrize(("grid", "num_masked"), [(7, 20), (7, 29), (8, 26), (14, 75)])
def test_block_mask_matches_beits_algorithm_in_distribution(grid, num_masked):
    B = 2000 if grid < 14 else 600
    min_block = default_min_block(grid * grid)
    record: list[dict[str, torch.Tensor]] = []
    got = _block_mask(
        B, grid, grid, num_masked, min_block, num_masked, 0.3, torch.device("cpu"), gen(5), record
    ).float()  # (B, H, W)
    rng = random.Random(5)
    ref_masks, ref_blocks = zip(
        *(beit_reference(rng, grid, grid, num_masked, min_block, 0.3) for _ in range(B))
    )
    ref = torch.tensor(ref_masks, dtype=torch.float32)  # (B, H, W)
    got_count, ref_count = got.sum(dim=(1, 2)), ref.sum(dim=(1, 2))
    assert (got_count <= num_masked).all() and (ref_count <= num_masked).all()
    # same mean count and same share of rows that reach num_masked exactly
    assert abs(got_count.mean() - ref_count.mean()) < 0.02 * num_masked
    exact_got = (got_count == num_masked).float().mean()
    exact_ref = (ref_count == num_masked).float().mean()
    assert abs(exact_got - exact_ref) < 0.06
    # same number of blocks per image
    blocks = torch.bincount(torch.cat([r["row"] for r in record]), minlength=B).float()
    assert abs(blocks.mean() - sum(ref_blocks) / B) < 0.15 * blocks.mean()
    # same spatial profile: the share hidden on each ring of the grid (border ... centre)
    i = torch.arange(grid)
    ring = torch.minimum(
        torch.minimum(i[:, None], i[None, :]), grid - 1 - torch.maximum(i[:, None], i[None, :])
    )
    profile_got, profile_ref = got.mean(dim=0), ref.mean(dim=0)
    for r in range(int(ring.max()) + 1):
        assert abs(profile_got[ring == r].mean() - profile_ref[ring == r].mean()) < 0.03
    centre, corner = grid // 2, 0
    assert profile_got[centre, centre] > profile_got[corner, corner]


def test_block_mask_is_made_of_valid_rectangles():
    grid, num_masked = 7, 20
    B, min_block = 1000, default_min_block(49)
    assert min_block == 4 and default_min_block(196) == 16
    record: list[dict[str, torch.Tensor]] = []
    mask = _block_mask(
        B, grid, grid, num_masked, min_block, num_masked, 0.3, torch.device("cpu"), gen(7), record
    )
    rebuilt = torch.zeros_like(mask)
    for step in record:
        area, aspect, budget = step["area"], step["aspect"], step["budget"].float()
        h, w = step["h"], step["w"]
        # target area s drawn between min_block and the remaining budget (either order)
        lo = torch.minimum(budget, torch.full_like(budget, min_block))
        hi = torch.maximum(budget, torch.full_like(budget, min_block))
        assert ((area >= lo - 1e-4) & (area <= hi + 1e-4)).all()
        # s >= min_block whenever the budget allows it
        assert (area[budget >= min_block] >= min_block - 1e-4).all()
        # aspect ratio in [0.3, 1/0.3], rectangle sides rounded from sqrt(s·r) and sqrt(s/r)
        assert ((aspect >= 0.3 - 1e-6) & (aspect <= 1 / 0.3 + 1e-6)).all()
        assert ((h.float() - (area * aspect).sqrt()).abs() <= 0.5 + 1e-4).all()
        assert ((w.float() - (area / aspect).sqrt()).abs() <= 0.5 + 1e-4).all()
        # strictly narrower than the grid and inside it
        assert (h < grid).all() and (w < grid).all()
        top, left = step["top"], step["left"]
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= grid).all() and (left + w <= grid).all()
        for row, t, l_, hh, ww in zip(*(x.tolist() for x in (step["row"], top, left, h, w))):
            rebuilt[row, t : t + hh, l_ : l_ + ww] = True
    assert torch.equal(rebuilt, mask)  # the mask is exactly the union of its rectangles


def test_block_draws_are_log_uniform_in_aspect_and_uniform_in_area():
    record: list[dict[str, torch.Tensor]] = []
    _block_mask(2000, 14, 14, 75, 16, 75, 0.3, torch.device("cpu"), gen(8), record)
    aspect = torch.cat([r["drawn_aspect"] for r in record])
    area = torch.cat([r["drawn_area"] for r in record])
    budget = torch.cat([r["drawn_budget"] for r in record]).float()
    # log r ~ U(log 0.3, log 1/0.3): 10 equal bins of log r hold equal shares
    u = (aspect.log() - math.log(0.3)) / (2 * math.log(1 / 0.3))
    bins = torch.bincount((u * 10).long().clamp(0, 9), minlength=10).float()
    expected = aspect.numel() / 10
    assert ((bins - expected) ** 2 / expected).sum() < 30  # chi² with 9 dof, p < 0.001
    # s ~ U(min_block, budget): its position between the bounds is uniform
    wide = budget > 16 + 5
    v = (area[wide] - 16) / (budget[wide] - 16)
    bins = torch.bincount((v * 10).long().clamp(0, 9), minlength=10).float()
    expected = v.numel() / 10
    assert v.numel() > 3000 and ((bins - expected) ** 2 / expected).sum() < 30


def test_block_mask_exact_option_and_public_function():
    B, grid, num_masked = 500, 7, 29
    loose = block_mask(B, grid, grid, num_masked, generator=gen(2))
    assert loose.shape == (B, 49) and (loose.sum(dim=1) <= num_masked).all()
    assert loose.sum(dim=1).float().mean() > 0.97 * num_masked
    exact = block_mask(B, grid, grid, num_masked, exact=True, generator=gen(2))
    assert (exact.sum(dim=1) == num_masked).all()
    # topping up only adds patches to the same blocks
    assert (exact | loose).eq(exact).all()
    assert torch.equal(
        block_mask(8, 7, 7, 20, generator=gen(4)), block_mask(8, 7, 7, 20, generator=gen(4))
    )
    g = gen(4)
    assert not torch.equal(
        block_mask(8, 7, 7, 20, generator=g), block_mask(8, 7, 7, 20, generator=g)
    )
    assert block_mask(4, 7, 7, 0).sum() == 0
    with pytest.raises(SelfsupError, match="2×2"):
        block_mask(4, 1, 9, 3)
    with pytest.raises(SelfsupError, match="num_masked"):
        block_mask(4, 7, 7, 50)


# ---------------------------------------------------------------- SimMIM squares


@pytest.mark.parametrize(("grid", "mask_patch"), [(8, 2), (12, 4), (14, 2), (6, 3)])
def test_simmim_mask_hides_aligned_squares(grid, mask_patch):
    B, ratio = 1000, 0.6
    mask = simmim_mask(B, grid, grid, ratio, mask_patch, generator=gen(9))
    assert mask.shape == (B, grid * grid)
    s = grid // mask_patch
    squares = mask.view(B, s, mask_patch, s, mask_patch).permute(0, 1, 3, 2, 4)
    squares = squares.reshape(B, s, s, mask_patch * mask_patch)
    assert (squares.all(dim=-1) | ~squares.any(dim=-1)).all()  # each square all or nothing
    per_row = squares[..., 0].sum(dim=(1, 2))
    assert (per_row == math.floor(s * s * ratio + 0.5)).all()
    freq = squares[..., 0].float().mean(dim=0)  # each square equally likely
    p = per_row[0].item() / (s * s)
    assert (freq - p).abs().max() < 5 * math.sqrt(p * (1 - p) / B)


def test_simmim_mask_rejects_grids_that_do_not_split():
    with pytest.raises(SelfsupError, match=r"mask_patch in \[1, 7\]"):
        simmim_mask(2, 7, 7, 0.6, 2)


# ---------------------------------------------------------------- BERT


VOCAB, PAD, CLS, SEP, MASK = 1000, 0, 1, 2, 3
SPECIAL = [PAD, CLS, SEP]


def make_tokens(rows: int, length: int, seed: int) -> torch.Tensor:
    """[CLS] words [SEP] [PAD]...: rows of varied lengths, ids 4.. are ordinary tokens."""
    g = gen(seed)
    tokens = torch.randint(4, VOCAB, (rows, length), generator=g)
    lengths = torch.randint(length // 4, length + 1, (rows,), generator=g)
    pos = torch.arange(length).expand(rows, length)
    tokens[pos >= lengths[:, None]] = PAD
    tokens[pos == lengths[:, None] - 1] = SEP
    tokens[:, 0] = CLS
    return tokens


def test_bert_masking_proportions_on_a_million_tokens():
    tokens = make_tokens(6000, 256, seed=0)  # about 10^6 tokens
    inputs, targets = bert_mask(
        tokens, vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIAL, generator=gen(11)
    )
    special = (tokens == PAD) | (tokens == CLS) | (tokens == SEP)
    selected = targets != -100
    # specials never selected and never changed; unselected tokens unchanged
    assert not (selected & special).any()
    assert torch.equal(inputs[~selected], tokens[~selected])
    assert torch.equal(targets[selected], tokens[selected])
    # 15% of the candidates, exactly floor or ceil of 0.15·n in every row
    n = (~special).sum(dim=1)
    count = selected.sum(dim=1)
    assert ((count == (0.15 * n).floor()) | (count == (0.15 * n).ceil())).all()
    assert abs(count.sum().item() / n.sum().item() - 0.15) < 0.001
    # 80 / 10 / 10 among the selected (a random draw equals the original with prob 1/996)
    got = inputs[selected]
    original = tokens[selected]
    m = got.numel()
    assert m > 130_000
    share_mask = (got == MASK).float().mean().item()
    share_same = (got == original).float().mean().item()
    share_random = ((got != MASK) & (got != original)).float().mean().item()
    assert abs(share_mask - 0.8) < 0.005
    assert abs(share_same - (0.1 + 0.1 / 996)) < 0.004
    assert abs(share_random - (0.1 - 0.1 / 996)) < 0.004
    # random replacements are never special and spread uniformly over the 996 others
    replaced = got[(got != MASK) & (got != original)]
    assert not (
        (replaced == PAD) | (replaced == CLS) | (replaced == SEP) | (replaced == MASK)
    ).any()
    bins = torch.bincount((replaced - 4) * 10 // 996, minlength=10).float()  # 10 equal bins
    expected = replaced.numel() / 10
    chi2 = ((bins - expected) ** 2 / expected).sum().item()
    assert chi2 < 30  # 9 degrees of freedom: p < 0.001 above 27.9
    # random draws cover every ordinary id at least once, and no special
    assert torch.unique(replaced).numel() > 990


def test_bert_masking_is_seeded_and_fresh_per_call():
    tokens = make_tokens(16, 64, seed=1)
    a = bert_mask(tokens, vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIAL, generator=gen(2))
    b = bert_mask(tokens, vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIAL, generator=gen(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    g = gen(2)
    c = bert_mask(tokens, vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIAL, generator=g)
    d = bert_mask(tokens, vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIAL, generator=g)
    assert not torch.equal(c[1], d[1])


def word_spans(row: list[int], starts: list[bool]) -> list[list[int]]:
    """Positions of each word of a row, the obvious way: a start (or the first ordinary token
    after a special) opens a word, continuation tokens extend it, a special closes it."""
    words: list[list[int]] = []
    current: list[int] | None = None
    for i, t in enumerate(row):
        if t in (PAD, CLS, SEP, MASK):
            current = None
            continue
        if current is None or starts[t]:
            current = [i]
            words.append(current)
        else:
            current.append(i)
    return words


def test_whole_word_masking_selects_words_all_or_nothing():
    g = gen(21)
    word_starts = torch.rand(VOCAB, generator=g) < 0.4  # words of 2.5 tokens on average
    word_starts[:4] = False
    tokens = make_tokens(4000, 256, seed=4)
    # a continuation right after [CLS] must still open a word
    tokens[0, 1] = int((~word_starts[4:]).nonzero()[0]) + 4
    inputs, targets = bert_mask(
        tokens,
        vocab_size=VOCAB,
        mask_id=MASK,
        special_ids=SPECIAL,
        word_starts=word_starts,
        generator=gen(22),
    )
    selected = targets != -100
    special = (tokens == PAD) | (tokens == CLS) | (tokens == SEP)
    assert not (selected & special).any()
    # ~15% of the tokens overall (each word picked with probability 0.15)
    share = selected.sum().item() / (~special).sum().item()
    assert abs(share - 0.15) < 0.003
    starts = word_starts.tolist()
    lengths_selected, lengths_all = [], []
    for b in range(300):
        row, sel = tokens[b].tolist(), selected[b].tolist()
        words = word_spans(row, starts)
        picked = 0
        for word in words:
            flags = {sel[i] for i in word}
            assert len(flags) == 1, f"row {b}: word at {word} is partly selected"
            picked += flags.pop()
            lengths_all.append(len(word))
        # exactly floor or ceil of 15% of the words
        assert picked in (math.floor(0.15 * len(words)), math.ceil(0.15 * len(words)))
        assert sum(sel) == sum(len(w) for w in words if sel[w[0]])
        lengths_selected.extend(len(w) for w in words if sel[w[0]])
    assert max(lengths_all) > 2  # the sample does contain multi-token words
    # 80/10/10 still applies token by token
    share_mask = (inputs[selected] == MASK).float().mean().item()
    assert abs(share_mask - 0.8) < 0.006


def test_bert_mask_rejects_bad_input():
    tokens = make_tokens(2, 16, seed=0)
    with pytest.raises(SelfsupError, match="vocab"):
        bert_mask(tokens, vocab_size=100, mask_id=MASK, special_ids=SPECIAL)
    with pytest.raises(SelfsupError, match="at most 1"):
        bert_mask(
            tokens,
            vocab_size=VOCAB,
            mask_id=MASK,
            special_ids=SPECIAL,
            mask_prob=0.9,
            random_prob=0.2,
        )
    with pytest.raises(SelfsupError, match="word_starts"):
        bert_mask(
            tokens,
            vocab_size=VOCAB,
            mask_id=MASK,
            special_ids=SPECIAL,
            word_starts=torch.ones(5).bool(),
        )
    with pytest.raises(SelfsupError, match="integer"):
        bert_mask(tokens.float(), vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIAL)


# ---------------------------------------------------------------- module wrappers


def test_patch_masking_modules_use_the_papers_ratios():
    assert PatchMasking("random")(16, 7, 7).sum(dim=1).eq(37).all()
    assert PatchMasking("simmim")(16, 8, 8).sum(dim=1).eq(40).all()  # 10 of 16 squares
    blocks = PatchMasking("block", exact=True)(16, 14, 14)
    assert blocks.shape == (16, 196) and blocks.sum(dim=1).eq(78).all()  # 40% of 196
    masker = PatchMasking("random", 0.5)
    assert torch.equal(masker(4, 7, 7, generator=gen(1)), masker(4, 7, 7, generator=gen(1)))
    with pytest.raises(SelfsupError, match="unknown patch masking"):
        PatchMasking("tube")  # type: ignore[arg-type]


def test_token_masking_module_carries_word_starts():
    word_starts = torch.zeros(VOCAB, dtype=torch.bool)
    word_starts[::2] = True
    masker = TokenMasking(VOCAB, MASK, SPECIAL, word_starts=word_starts)
    assert "word_starts" not in masker.state_dict()  # derived from the tokenizer, not saved
    tokens = make_tokens(64, 64, seed=3)
    inputs, targets = masker(tokens, generator=gen(0))
    expected = bert_mask(
        tokens,
        vocab_size=VOCAB,
        mask_id=MASK,
        special_ids=SPECIAL,
        word_starts=word_starts,
        generator=gen(0),
    )
    assert torch.equal(inputs, expected[0]) and torch.equal(targets, expected[1])
    with pytest.raises(SelfsupError, match="outside the vocabulary"):
        TokenMasking(10, 12, SPECIAL)
