"""Masks for masked prediction, sampled for a whole batch at once on the training device.

A mask is a bool tensor, True = hidden. Every sampler draws a fresh mask at each call
(dynamic masking, as RoBERTa, MAE and BEiT do) and takes an optional ``torch.Generator``
for reproducibility; the generator must live on the device the mask is made on.

Patch masks, (B, N) over a ViT's row-major patch grid (N = grid_h·grid_w, the order of
``Conv2d(stride=patch).flatten(2)``):

- ``random_patch_mask``: MAE (He et al. 2022): exactly round(N·ratio) patches per image,
  uniform over positions (argsort of uniform noise). MAE hides 75%.
- ``block_mask``: BEiT (Bao et al. 2022, Algorithm 1): rectangles of at least ``min_block``
  patches with log-uniform aspect ratio, added until about ``num_masked`` are hidden
  (BEiT 75 of 196, about 40%; data2vec 60%).
- ``simmim_mask``: SimMIM (Xie et al. 2022): random squares of mask_patch×mask_patch model
  patches, an exact count per image (SimMIM hides 60% of 32 px squares).

Span masks, (B, N) over the frames of a sequence (speech):

- ``span_mask``: wav2vec 2.0 (Baevski et al. 2020) and HuBERT: each frame starts a span of
  ``span`` frames with probability ``start_prob`` (0.065 and 10: about half the frames
  hidden; HuBERT 0.08), spans may overlap, padding is never hidden, every row hides the same
  count (fairseq's ``compute_mask_indices``, ``require_same_masks``).

Token masks:

- ``bert_mask``: BERT (Devlin et al. 2019): 15% of the non-special tokens are selected; of
  those 80% become [MASK], 10% a random token, 10% stay; optional whole-word masking.

``PatchMasking`` and ``TokenMasking`` wrap them as ``nn.Module`` view generators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from selfsup.contracts import IGNORE_INDEX
from selfsup.errors import SelfsupError

"""Target of the positions that are not predicted (cross-entropy's ``ignore_index``)."""

MAX_FAILED_TRIES = 10
"""BEiT stops adding blocks to an image after this many draws in a row add nothing."""

DEFAULT_RATIOS = {"random": 0.75, "block": 0.4, "simmim": 0.6}
"""The papers' share of hidden patches: MAE 75%, BEiT 40% (75 of 196), SimMIM 60%."""


def _count(n: int, ratio: float) -> int:
    """round(n·ratio) with halves rounded up (robust to 0.1·30 = 3.0000000000000004)."""
    return int(math.floor(n * ratio + 0.5))


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise SelfsupError(f"{name} must lie in [0, 1], got {value}")


def _device(device: torch.device | str | None, generator: torch.Generator | None) -> torch.device:
    """The device to sample on: ``device``, else the generator's, else the CPU; they must agree."""
    if device is None:
        return generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise SelfsupError(
            f"the generator lives on {generator.device} but the mask is made on {device}: "
            f"pass torch.Generator(device={str(device)!r}).manual_seed(seed)"
        )
    return device


def _ranks(noise: Tensor) -> Tensor:
    """(B, N) -> (B, N) int64: each entry's rank in its row, 0 for the smallest."""
    order = noise.argsort(dim=1)
    ranks = torch.empty_like(order)
    positions = torch.arange(noise.shape[1], device=noise.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def random_patch_mask(
    batch: int,
    num_patches: int,
    ratio: float = 0.75,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MAE's random masking: (B, N) bool with exactly round(N·ratio) True per row.

    Each row hides the patches with the smallest of N uniform noise values, so every subset
    of that size is equally likely and each position is hidden with probability k/N.
    """
    _check_ratio("ratio", ratio)
    if batch < 1 or num_patches < 1:
        raise SelfsupError(f"need batch >= 1 and num_patches >= 1, got {batch} and {num_patches}")
    device = _device(device, generator)
    k = _count(num_patches, ratio)
    noise = torch.rand(batch, num_patches, device=device, generator=generator)  # (B, N)
    return _ranks(noise) < k


def default_min_block(num_patches: int) -> int:
    """BEiT's smallest block, 16 of 196 patches, scaled to N patches and at least 2
    (4 on a 7×7 grid, 5 on 8×8, 16 on 14×14)."""
    return max(2, _count(num_patches, 16 / 196))


def _block_mask(
    batch: int,
    grid_h: int,
    grid_w: int,
    num_masked: int,
    min_block: int,
    max_block: int,
    min_aspect: float,
    device: torch.device,
    generator: torch.Generator | None,
    record: list[dict[str, Tensor]] | None = None,
) -> Tensor:
    """BEiT's block loop, vectorised over the images: each pass draws one block for every
    image still short of ``num_masked`` -> (B, grid_h, grid_w) bool. ``record`` (for tests)
    receives each pass's accepted blocks and all its draws, kept or not."""
    mask = torch.zeros(batch, grid_h, grid_w, dtype=torch.bool, device=device)
    count = torch.zeros(batch, dtype=torch.long, device=device)
    failures = torch.zeros(batch, dtype=torch.long, device=device)
    active = torch.full((batch,), num_masked > 0, device=device)
    rows = torch.arange(grid_h, device=device).view(1, grid_h, 1)
    cols = torch.arange(grid_w, device=device).view(1, 1, grid_w)
    log_lo, log_hi = math.log(min_aspect), math.log(1 / min_aspect)
    while bool(active.any()):
        budget = (num_masked - count).clamp(max=max_block)  # (B,) patches still allowed
        u = torch.rand(batch, 4, device=device, generator=generator)
        # Target area s ~ U(min_block, budget); like Python's random.uniform the bounds may
        # be in either order, so with little budget left s lies in [budget, min_block].
        area = min_block + (budget - min_block) * u[:, 0]
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        h = torch.sqrt(area * aspect).round().long().clamp(min=1)  # (B,)
        w = torch.sqrt(area / aspect).round().long().clamp(min=1)
        fits = (h < grid_h) & (w < grid_w)  # BEiT keeps blocks narrower than the grid
        top = (u[:, 2] * (grid_h - h + 1)).floor().long().clamp(min=0)  # uniform in [0, H-h]
        left = (u[:, 3] * (grid_w - w + 1)).floor().long().clamp(min=0)
        top_, left_ = top.view(-1, 1, 1), left.view(-1, 1, 1)
        block = (
            (rows >= top_)
            & (rows < top_ + h.view(-1, 1, 1))
            & (cols >= left_)
            & (cols < left_ + w.view(-1, 1, 1))
        )  # (B, H, W)
        new = (block & ~mask).sum(dim=(1, 2))  # (B,) patches this block would add
        accept = active & fits & (new > 0) & (new <= budget)  # never exceed num_masked
        mask |= block & accept.view(-1, 1, 1)
        count += new * accept
        failures = torch.where(accept, torch.zeros_like(failures), failures + 1)
        if record is not None:
            record.append(
                {
                    "row": accept.nonzero().squeeze(1),
                    "top": top[accept],
                    "left": left[accept],
                    "h": h[accept],
                    "w": w[accept],
                    "area": area[accept],
                    "aspect": aspect[accept],
                    "budget": budget[accept],
                    "drawn_area": area[active],  # every draw, kept or not
                    "drawn_aspect": aspect[active],
                    "drawn_budget": budget[active],
                }
            )
        active &= (count < num_masked) & (failures < MAX_FAILED_TRIES)
    return mask


def block_mask(
    batch: int,
    grid_h: int,
    grid_w: int,
    num_masked: int,
    *,
    min_block: int | None = None,
    max_block: int | None = None,
    min_aspect: float = 0.3,
    exact: bool = False,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """BEiT's block-wise masking -> (B, grid_h·grid_w) bool, row-major.

    Bao, Dong, Piao, Wei. "BEiT: BERT Pre-Training of Image Transformers." ICLR 2022,
    Algorithm 1, as in the authors' code. For each image, until ``num_masked`` are hidden:

        s ~ U(min_block, min(num_masked − |M|, max_block))       target block area
        r ~ exp(U(log min_aspect, log 1/min_aspect))              aspect ratio (log-uniform)
        h = round(sqrt(s·r)),  w = round(sqrt(s/r))               kept if h < H and w < W
        top ~ U{0..H−h}, left ~ U{0..W−w}
        M ← M ∪ block   if it adds between 1 and num_masked − |M| new patches

    and stop early after 10 draws in a row that add nothing. A mask never hides more than
    ``num_masked``; an image can end a few short (with BEiT's 75 of 196 most rows are exact,
    the mean is within 1% of 75). Rows therefore may differ in count; ``exact=True`` tops
    each short row up with patches chosen uniformly among its visible ones, so every row
    hides exactly ``num_masked`` (the extra patches need not touch a block).

    Args:
        num_masked: patches to hide per image (BEiT: 75 of 196; data2vec: 60% of N).
        min_block: smallest target block area; default 16/196 of N, at least 2 (BEiT's 16
            on 14×14, 4 on 7×7). A block's rounded h·w can be a little below it.
        max_block: largest target area; default ``num_masked`` (BEiT).
        min_aspect: aspect ratios are drawn in [min_aspect, 1/min_aspect] (BEiT: 0.3).
        exact: top short rows up to exactly ``num_masked`` hidden patches.
    """
    if batch < 1 or grid_h < 2 or grid_w < 2:
        raise SelfsupError(
            f"block masking needs batch >= 1 and a patch grid of at least 2×2, got batch "
            f"{batch} and grid {grid_h}×{grid_w}; use random_patch_mask for a 1-wide grid"
        )
    n = grid_h * grid_w
    if not 0 <= num_masked <= n:
        raise SelfsupError(
            f"num_masked must lie in [0, {n}] for a {grid_h}×{grid_w} grid, got {num_masked}"
        )
    min_block = default_min_block(n) if min_block is None else min_block
    max_block = max(num_masked, 1) if max_block is None else max_block
    if min_block < 1 or max_block < 1:
        raise SelfsupError(
            f"min_block and max_block must be at least 1, got {min_block} and {max_block}"
        )
    if not 0.0 < min_aspect <= 1.0:
        raise SelfsupError(f"min_aspect must lie in (0, 1] (BEiT: 0.3), got {min_aspect}")
    device = _device(device, generator)
    mask = _block_mask(
        batch, grid_h, grid_w, num_masked, min_block, max_block, min_aspect, device, generator
    ).flatten(1)  # (B, N)
    if exact:
        deficit = num_masked - mask.sum(dim=1, keepdim=True)  # (B, 1)
        noise = torch.rand(batch, n, device=device, generator=generator)
        noise = noise.masked_fill(mask, 2.0)  # hidden patches rank after every visible one
        mask |= _ranks(noise) < deficit
    return mask


def simmim_mask(
    batch: int,
    grid_h: int,
    grid_w: int,
    ratio: float = 0.6,
    mask_patch: int = 2,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SimMIM's masking -> (B, grid_h·grid_w) bool over the model's patch grid.

    Xie et al. "SimMIM: A Simple Framework for Masked Image Modeling." CVPR 2022. The grid is
    cut into mask_patch×mask_patch squares of model patches (SimMIM: 32 px squares over
    16 px ViT patches, mask_patch = 2); exactly round(S·ratio) of the S squares are hidden
    per image, uniformly (SimMIM's code takes the ceiling: the same 22 of 36 at its sizes),
    and each hidden square hides all its model patches.
    """
    if mask_patch < 1 or grid_h % mask_patch or grid_w % mask_patch:
        common = [
            p for p in range(1, min(grid_h, grid_w) + 1) if grid_h % p == 0 and grid_w % p == 0
        ]
        raise SelfsupError(
            f"a {grid_h}×{grid_w} patch grid does not split into {mask_patch}×{mask_patch} "
            f"mask squares: use mask_patch in {common}, or a grid whose sides are multiples "
            f"of {mask_patch}"
        )
    sh, sw = grid_h // mask_patch, grid_w // mask_patch
    squares = random_patch_mask(batch, sh * sw, ratio, device=device, generator=generator)
    squares = squares.view(batch, sh, sw)
    patches = squares.repeat_interleave(mask_patch, 1).repeat_interleave(mask_patch, 2)
    return patches.reshape(batch, grid_h * grid_w)  # (B, N)


def _special_table(
    vocab_size: int, mask_id: int, special_ids: Sequence[int], device: torch.device
) -> Tensor:
    """(vocab,) bool, True for the special ids and the mask id."""
    ids = [int(i) for i in special_ids] + [mask_id]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise SelfsupError(f"special ids {bad} lie outside the vocabulary [0, {vocab_size})")
    table = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    table[torch.tensor(ids, dtype=torch.long, device=device)] = True
    return table


def bert_mask(
    tokens: Tensor,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: Sequence[int],
    select_prob: float = 0.15,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    word_starts: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-language-model corruption -> (inputs (B, L) int64, targets (B, L) int64).

    Devlin, Chang, Lee, Toutanova. "BERT: Pre-training of Deep Bidirectional Transformers for
    Language Understanding." NAACL 2019, §3.1.

    Selection: of a row's n candidate units (non-special tokens, or whole words when
    ``word_starts`` is given), exactly k = floor(select_prob·n + u), u ~ U[0, 1), are chosen
    uniformly without replacement (the count rule of fairseq's RoBERTa/data2vec masking).
    E[k] = select_prob·n exactly, so every unit is selected with probability select_prob and
    the selected share is 15% on any sample, with less spread than a Bernoulli per token.

    Each selected token independently becomes ``mask_id`` (prob. 0.8), a random token drawn
    uniformly from the non-special vocabulary (0.1; it may equal the original, as in BERT),
    or stays (0.1). Special tokens (``special_ids`` and ``mask_id``) are never selected.
    ``targets`` holds the original id at the selected positions and -100 elsewhere.

    Whole-word masking: ``word_starts`` (vocab,) bool marks the ids that begin a word; a word
    is a start token and the continuation tokens after it (a continuation after a special
    token or at the row's start begins a word too). Words are selected as units (all of a
    word's tokens or none, still 15% of tokens in expectation); the 80/10/10 choice is made
    per token, as in BERT's released whole-word masking.
    """
    if tokens.ndim != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise SelfsupError(
            f"tokens must be an integer (B, L) tensor, got {tokens.dtype} of shape {tuple(tokens.shape)}"
        )
    for name, value in [
        ("select_prob", select_prob),
        ("mask_prob", mask_prob),
        ("random_prob", random_prob),
    ]:
        _check_ratio(name, value)
    if mask_prob + random_prob > 1.0:
        raise SelfsupError(
            f"mask_prob + random_prob must be at most 1, got {mask_prob} + {random_prob}"
        )
    tokens = tokens.long()
    device = tokens.device
    _device(device, generator)
    B, L = tokens.shape
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise SelfsupError(
            f"token ids must lie in [0, {vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]: "
            "pass the tokenizer's vocab_size"
        )
    special_table = _special_table(vocab_size, mask_id, special_ids, device)  # (vocab,)
    allowed = (~special_table).nonzero().squeeze(1)  # ids a random replacement may take
    if allowed.numel() == 0:
        raise SelfsupError("every id of the vocabulary is special: nothing to mask or sample")
    special = special_table[tokens]  # (B, L)
    candidate = ~special
    if word_starts is None:
        unit_start = candidate
    else:
        if word_starts.dtype != torch.bool or tuple(word_starts.shape) != (vocab_size,):
            raise SelfsupError(
                f"word_starts must be a (vocab_size,) = ({vocab_size},) bool tensor, "
                f"got {word_starts.dtype} of shape {tuple(word_starts.shape)}"
            )
        after_special = torch.cat(
            [torch.ones(B, 1, dtype=torch.bool, device=device), special[:, :-1]], dim=1
        )
        unit_start = candidate & (word_starts.to(device)[tokens] | after_special)  # (B, L)

    # Exactly k units per row, k = floor(p·n + u): rank the units' noise, keep the k lowest.
    n_units = unit_start.sum(dim=1)  # (B,)
    u = torch.rand(B, device=device, generator=generator)
    k = (select_prob * n_units + u).floor().long().view(B, 1)
    noise = torch.rand(B, L, device=device, generator=generator).masked_fill(~unit_start, 2.0)
    chosen = unit_start & (_ranks(noise) < k)  # (B, L) chosen tokens, or chosen word starts
    if word_starts is None:
        selected = chosen
    else:
        word = (unit_start.cumsum(dim=1) - 1).clamp(min=0)  # (B, L) word of each token
        # chosen_word[b, j]: is word j of row b chosen; non-starts write to a spare slot L.
        slot = torch.where(unit_start, word, torch.full_like(word, L))
        chosen_word = torch.zeros(B, L + 1, dtype=torch.bool, device=device)
        chosen_word.scatter_(1, slot, chosen)
        selected = candidate & chosen_word.gather(1, word)

    action = torch.rand(B, L, device=device, generator=generator)
    to_mask = selected & (action < mask_prob)
    to_random = selected & (action >= mask_prob) & (action < mask_prob + random_prob)
    draws = torch.randint(allowed.numel(), (B, L), device=device, generator=generator)
    inputs = torch.where(to_mask, torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(to_random, allowed[draws], inputs)
    targets = torch.where(selected, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, targets


class PatchMasking(nn.Module):
    """A patch-mask view generator: ``PatchMasking("random")(B, grid_h, grid_w, device)``
    -> (B, grid_h·grid_w) bool, True = hidden, a fresh mask per call.

    Args:
        kind: "random" (MAE), "block" (BEiT, data2vec) or "simmim".
        ratio: share of hidden patches; default the paper's: random 0.75, block 0.4
            (data2vec uses 0.6), simmim 0.6.
        mask_patch: SimMIM's mask square side, in model patches (2 = 32 px over 16 px).
        min_block, max_block, min_aspect, exact: BEiT's block settings (see ``block_mask``).
    """

    def __init__(
        self,
        kind: Literal["random", "block", "simmim"] = "random",
        ratio: float | None = None,
        *,
        mask_patch: int = 2,
        min_block: int | None = None,
        max_block: int | None = None,
        min_aspect: float = 0.3,
        exact: bool = False,
    ) -> None:
        super().__init__()
        if kind not in DEFAULT_RATIOS:
            raise SelfsupError(
                f"unknown patch masking {kind!r}: use one of {sorted(DEFAULT_RATIOS)}"
            )
        self.kind = kind
        self.ratio = DEFAULT_RATIOS[kind] if ratio is None else ratio
        _check_ratio("ratio", self.ratio)
        self.mask_patch = mask_patch
        self.min_block = min_block
        self.max_block = max_block
        self.min_aspect = min_aspect
        self.exact = exact

    def forward(
        self,
        batch_size: int,
        grid_h: int,
        grid_w: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if self.kind == "random":
            return random_patch_mask(
                batch_size, grid_h * grid_w, self.ratio, device=device, generator=generator
            )
        if self.kind == "simmim":
            return simmim_mask(
                batch_size,
                grid_h,
                grid_w,
                self.ratio,
                self.mask_patch,
                device=device,
                generator=generator,
            )
        return block_mask(
            batch_size,
            grid_h,
            grid_w,
            _count(grid_h * grid_w, self.ratio),
            min_block=self.min_block,
            max_block=self.max_block,
            min_aspect=self.min_aspect,
            exact=self.exact,
            device=device,
            generator=generator,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, ratio={self.ratio}"


class TokenMasking(nn.Module):
    """BERT's masking as a view generator: ``TokenMasking(vocab_size, mask_id, special_ids)
    (tokens)`` -> (inputs, targets), both (B, L) int64, a fresh corruption per call.

    ``word_starts`` (vocab,) bool switches on whole-word masking; it is kept as a buffer so
    that it follows the module to the training device. See ``bert_mask`` for the rules.
    """

    word_starts: Tensor | None

    def __init__(
        self,
        vocab_size: int,
        mask_id: int,
        special_ids: Sequence[int],
        *,
        select_prob: float = 0.15,
        mask_prob: float = 0.8,
        random_prob: float = 0.1,
        word_starts: Tensor | None = None,
    ) -> None:
        super().__init__()
        _special_table(vocab_size, mask_id, special_ids, torch.device("cpu"))  # validate now
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.special_ids = [int(i) for i in special_ids]
        self.select_prob = select_prob
        self.mask_prob = mask_prob
        self.random_prob = random_prob
        self.register_buffer("word_starts", word_starts, persistent=False)

    def forward(
        self, tokens: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return bert_mask(
            tokens,
            vocab_size=self.vocab_size,
            mask_id=self.mask_id,
            special_ids=self.special_ids,
            select_prob=self.select_prob,
            mask_prob=self.mask_prob,
            random_prob=self.random_prob,
            word_starts=self.word_starts,
            generator=generator,
        )

    def extra_repr(self) -> str:
        whole = ", whole_word=True" if self.word_starts is not None else ""
        return f"vocab_size={self.vocab_size}, select_prob={self.select_prob}{whole}"


def span_or_paper(
    prob: float | None, length: int | None, paper: tuple[float, int]
) -> tuple[float, int]:
    """A span-masking method's (start chance, span frames): the configured ones, or the
    paper's where left to the data (None) and not fitted (a method built without a run)."""
    return (paper[0] if prob is None else prob), (paper[1] if length is None else length)


def check_span(prob: float | None, length: int | None, prob_name: str, length_name: str) -> None:
    """One-line error for a span start chance outside (0, 1) or a span under 1 frame."""
    if (prob is not None and not 0 < prob < 1) or (length is not None and length < 1):
        raise SelfsupError(
            f"{prob_name} must lie in (0, 1) and {length_name} be at least 1 (or both unset: "
            f"fitted to the frame rate), got {prob} and {length}"
        )


def span_mask(
    padding: Tensor,
    *,
    start_prob: float = 0.065,
    span: int = 10,
    min_spans: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """wav2vec 2.0's span masking over (B, N) frames -> (B, N) bool, True = hidden.

    Baevski, Zhou, Mohamed, Auli. "wav2vec 2.0." NeurIPS 2020, §3.1 and fairseq's
    ``compute_mask_indices`` (its ``mask_prob`` 0.65 = ``start_prob`` × ``span``). For a row
    with n real frames (``padding`` is bool (B, N), True = padding at the end):

        s = max(min_spans, floor(start_prob · n + u)),  u ~ U(0, 1)    number of spans
        starts: s distinct frames drawn uniformly from 0 .. n − span − 1
                (0 .. s when n − span ≤ s, so short rows still fit their spans)
        hidden: every start + 0 .. span − 1 below n (overlapping spans merge)

    then rows hiding more than the fewest hidden in the batch are thinned to that count by
    dropping hidden frames uniformly at random, so each row hides the same number (what a
    contrastive loss over the masked frames of every row needs).
    """
    B, N = padding.shape
    device = padding.device
    lengths = (~padding).sum(dim=1)  # (B,)
    u = torch.rand(B, device=device, generator=generator)
    spans = torch.clamp(torch.floor(start_prob * lengths + u).long(), min=min_spans)  # (B,)
    spans = torch.minimum(spans, (lengths - 1).clamp(min=0))
    high = lengths - span  # starts lie below this ...
    high = torch.where(high <= spans, spans + 1, high).clamp(max=N)  # ... or below s + 1
    scores = torch.rand(B, N, device=device, generator=generator)  # (B, N)
    scores = scores.masked_fill(torch.arange(N, device=device)[None] >= high[:, None], -1.0)
    most = int(spans.max()) if B else 0
    starts = scores.topk(most, dim=1).indices  # (B, S): a uniform subset, in random order
    used = torch.arange(most, device=device)[None] < spans[:, None]  # (B, S)
    frames = starts[:, :, None] + torch.arange(span, device=device)  # (B, S, span)
    valid = used[:, :, None] & (frames < lengths[:, None, None])
    mask = torch.zeros(B, N + span, dtype=torch.bool, device=device)
    mask.scatter_(1, torch.where(valid, frames, N).reshape(B, -1), True)
    mask = mask[:, :N]  # column N collected the unused draws
    counts = mask.sum(dim=1)
    target = int(counts.min()) if B else 0
    noise = torch.rand(B, N, device=device, generator=generator).masked_fill(~mask, -1.0)
    keep = noise.topk(target, dim=1).indices  # (B, target): a uniform subset of each row's
    return torch.zeros_like(mask).scatter_(1, keep, True)
