"""word2vec: skip-gram or CBOW with negative sampling, on any text source.

Mikolov et al. "Efficient Estimation of Word Representations in Vector Space." 2013
(arXiv:1301.3781) and "Distributed Representations of Words and Phrases and their
Compositionality." NeurIPS 2013 (arXiv:1310.4546); the defaults are word2vec.c's (and
gensim's): 5 negatives from unigram^0.75, a window of 5 shrunk at random per word,
subsampling at 1e-3, and SGD whose rate falls linearly (the preset's ``train.schedule:
linear``, lr 0.025 for skip-gram, 0.05 for CBOW, summed per-pair gradients).

The encoder is the table of input vectors (``--encoder word-vectors``); the output
vectors (word2vec's ``syn1neg``) live here and are not exported. The word counts behind
subsampling and the noise distribution are those of the training token ids
(``DataInfo.token_counts``); train on a word-level tokenizer (``data.tokenizer: word``)
for vectors of whole words. ``selfsup word-vectors RUN`` writes them in the word2vec text
format and scores them on WordSim-353, SimLex-999 and the Google analogies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.losses.sgns import SGNSLoss
from selfsup.views.skipgram import (
    cbow_windows,
    dynamic_spans,
    keep_probabilities,
    noise_cdf,
    sample_negatives,
    skipgram_pairs,
    subsample,
)


@dataclass
class Word2VecConfig:
    """word2vec.c's defaults (``-negative 5 -window 5 -sample 1e-3``)."""

    mode: Literal["skipgram", "cbow"] = "skipgram"
    """skip-gram predicts the center from each context word (better for rare words); CBOW
    predicts it from the mean of its window (faster, good for frequent words)."""
    window: int = 5
    """Largest reach on either side; each word draws its own reach in 1..window."""
    negative: int = 5
    """Noise words per prediction: 5-20 for small corpora, 2-5 for large ones (the paper)."""
    ns_exponent: float = 0.75
    """Noise words are drawn with probability count^ns_exponent; 0.75 beat 1 and 0 (the paper)."""
    sample: float = 1e-3
    """Subsampling threshold: words more frequent than this share are dropped at random;
    1e-3 to 1e-5 (lower drops more); 0 turns subsampling off."""

    def validate(self) -> None:
        if self.window < 1 or self.negative < 1:
            raise SelfsupError(
                f"window and negative must be positive, got {self.window} and {self.negative}"
            )
        if self.sample < 0:
            raise SelfsupError(f"sample must be 0 (off) or positive, got {self.sample}")


class Word2Vec(nn.Module):
    """Input vectors (the encoder) and output vectors (zero at start), trained with SGNS on
    the pairs (skip-gram) or windows (CBOW) of each batch of token rows."""

    def __init__(self, cfg: Word2VecConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        table = getattr(encoder, "vectors", None)
        if not isinstance(table, nn.Embedding):
            raise SelfsupError(
                "word2vec trains a table of word vectors: use --encoder word-vectors"
            )
        if info.token_counts is None:
            raise SelfsupError(
                "word2vec needs the token counts of text data (--data fortunes, gcide or text:PATH)"
            )
        counts = torch.as_tensor(info.token_counts)
        if len(counts) != table.num_embeddings:
            raise SelfsupError(
                f"the data has {len(counts)} token ids but the word vectors {table.num_embeddings}"
            )
        self.cfg = cfg
        self.encoder = encoder
        self.output = nn.Embedding(table.num_embeddings, table.embedding_dim)
        nn.init.zeros_(self.output.weight)
        # Plain attributes, not buffers: they follow from the data, are fixed, and need no
        # checkpointing or broadcasting.
        self.keep = keep_probabilities(counts, cfg.sample).float()  # (V,)
        self.cdf = noise_cdf(counts, cfg.ns_exponent)  # (V,)
        self.loss = SGNSLoss()

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = batch["tokens"]  # (B, L)
        rows = subsample(tokens, self.keep.to(tokens.device))  # (B, L), words first
        spans = dynamic_spans(rows, self.cfg.window)  # (B, L) in 1..window
        vectors = cast(nn.Embedding, self.encoder.vectors)  # the input vectors
        if self.cfg.mode == "skipgram":
            centers, contexts = skipgram_pairs(rows, spans)  # (P,), (P,)
            inputs = vectors(contexts)  # (P, D): word2vec.c trains the context's vector
        else:
            centers, window, mask = cbow_windows(rows, spans)  # (P,), (P, 2w), (P, 2w)
            total = (vectors(window) * mask[..., None]).sum(1)  # (P, D)
            n = mask.sum(1, keepdim=True)  # (P, 1)
            # The mean goes forward; every context word receives the whole gradient back,
            # as in word2vec.c (and gensim's cbow_mean), not 1/n of it.
            inputs = total / n + (total - total.detach()) * (1 - 1 / n)
        negatives = sample_negatives(self.cdf.to(tokens.device), (len(centers), self.cfg.negative))
        predicted = torch.cat([centers[:, None], negatives], dim=1)  # (P, 1 + K)
        loss = self.loss(inputs, self.output(predicted), negatives != centers[:, None])
        pairs = max(1, len(centers))
        with torch.no_grad():
            features = self.encoder(tokens)  # (B, D)
        return {
            "loss": loss,
            "pair_loss": loss.detach() / pairs,
            "pairs": torch.tensor(float(len(centers))),
            "features": features,
        }

    def on_step_end(self, progress: float) -> None:
        del progress
