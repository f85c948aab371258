"""word2vec's sampling, on whole batches of token rows: frequent-word subsampling, the
dynamic (shrunk) window, the (center, context) pairs and CBOW windows, and negatives drawn
from the unigram distribution raised to 0.75.

Mikolov et al. "Distributed Representations of Words and Phrases and their
Compositionality." NeurIPS 2013 (arXiv:1310.4546), and the reference C code
(word2vec.c), whose exact rules gensim follows too:

* a word of count c among T training words (of the vocabulary) is kept with probability
  ``min(1, (sqrt(c / (s·T)) + 1) · s·T / c)``, s = ``sample`` (1e-3);
* out-of-vocabulary words and the dropped ones are removed *before* windowing, so a window
  reaches past them;
* each center position draws b uniform in {0, .., window-1} and sees the
  ``window - b`` words on either side (nearer words are seen more often);
* negatives are drawn with probability ``c^0.75 / Σ c^0.75``.

    rows = subsample(tokens, keep, generator=g)              # (B, L) compacted, PAD after
    spans = dynamic_spans(rows, window=5, generator=g)       # (B, L) in 1..window, 0 at PAD
    centers, contexts = skipgram_pairs(rows, spans)          # (P,), (P,) token ids
    negatives = sample_negatives(noise_cdf(counts), (P, 5), generator=g)
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.data.tokenizer import FIRST_WORD_ID


def keep_probabilities(counts: Tensor, sample: float) -> Tensor:
    """word2vec's probability of keeping each id, (V,) float64: ``(sqrt(c/t) + 1)·t/c``
    capped at 1, t = ``sample`` × the number of word occurrences; 1 everywhere when
    ``sample`` is 0, 0 for the special ids and unseen words."""
    counts = counts.double()
    words = counts.clone()
    words[:FIRST_WORD_ID] = 0
    if sample <= 0:
        return (words > 0).double()
    threshold = sample * words.sum()
    seen = words > 0
    keep = torch.zeros_like(words)
    c = words[seen]
    keep[seen] = ((c / threshold).sqrt() + 1) * threshold / c
    return keep.clamp(max=1.0)


def subsample(tokens: Tensor, keep: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Drop special ids and each word with probability ``1 - keep[id]``, then move the
    survivors of every row to its front in their order: (B, L) int64, [PAD] (0) after them."""
    draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)  # (B, L)
    kept = draw < keep.to(tokens.device, torch.float32)[tokens]  # (B, L)
    # A stable sort of "dropped" puts the kept positions first, in their original order.
    order = torch.sort((~kept).to(torch.uint8), dim=1, stable=True).indices  # (B, L)
    rows = torch.gather(tokens, 1, order)
    return torch.where(torch.gather(kept, 1, order), rows, torch.zeros_like(rows))


def dynamic_spans(rows: Tensor, window: int, generator: torch.Generator | None = None) -> Tensor:
    """Each position's reach ``window - b``, b uniform in {0, .., window-1}: (B, L) int64,
    0 at padding."""
    b = torch.randint(0, window, rows.shape, generator=generator, device=rows.device)
    return torch.where(rows > 0, window - b, torch.zeros_like(b))


def skipgram_pairs(rows: Tensor, spans: Tensor) -> tuple[Tensor, Tensor]:
    """Every (center, context) pair of the compacted ``rows``: the context lies within the
    center's span on either side. Returns token ids (P,), (P,), grouped by offset."""
    centers, contexts = [], []
    reach = int(spans.max().item()) if spans.numel() else 0
    for offset in range(1, min(reach, rows.shape[1] - 1) + 1):
        left, right = rows[:, :-offset], rows[:, offset:]  # (B, L - offset) each
        both = (left > 0) & (right > 0)
        ahead = both & (spans[:, :-offset] >= offset)  # center left, context `offset` after
        behind = both & (spans[:, offset:] >= offset)  # center right, context before it
        centers += [left[ahead], right[behind]]
        contexts += [right[ahead], left[behind]]
    if not centers:
        empty = rows.new_zeros(0)
        return empty, empty
    return torch.cat(centers), torch.cat(contexts)


def cbow_windows(rows: Tensor, spans: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For CBOW: each center word of ``rows`` with the ids of its window (2·window slots,
    0 where empty). Returns centers (M,), window ids (M, 2·window) and a bool mask (M, 2·window),
    for the centers that have at least one context word."""
    B, L = rows.shape
    window = int(spans.max().item()) if spans.numel() else 0
    offsets = [o for k in range(1, window + 1) for o in (-k, k)]
    padded = torch.nn.functional.pad(rows, (window, window))  # (B, L + 2·window)
    columns = torch.arange(L, device=rows.device)
    ids = torch.stack([padded[:, columns + window + o] for o in offsets], dim=-1)  # (B, L, 2w)
    reach = torch.tensor([abs(o) for o in offsets], device=rows.device)  # (2w,)
    mask = (ids > 0) & (reach <= spans[..., None]) & (rows[..., None] > 0)  # (B, L, 2w)
    has = mask.any(-1)  # (B, L)
    return rows[has], torch.where(mask, ids, 0)[has], mask[has]


def noise_cdf(counts: Tensor, power: float = 0.75) -> Tensor:
    """The cumulative noise distribution over ids, (V,) float64 ending at 1: word ``v`` has
    probability ``c_v^power / Σ c^power`` (special ids 0)."""
    weights = counts.double().clone()
    weights[:FIRST_WORD_ID] = 0
    weights = weights.pow(power) * (weights > 0)
    return torch.cumsum(weights, 0) / weights.sum()


def sample_negatives(
    cdf: Tensor, shape: tuple[int, ...], generator: torch.Generator | None = None
) -> Tensor:
    """Ids drawn from the noise distribution ``cdf`` (``noise_cdf``): int64 of ``shape``.
    Inverse-CDF sampling, as gensim's ``cum_table`` bisection (word2vec.c fills a 1e8-slot
    table with the same proportions)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=cdf.device)
    return torch.searchsorted(cdf, u, right=True).clamp(max=len(cdf) - 1)
