"""CTC fine-tuning of a speech encoder on a few minutes of transcribed audio, scored by
character and word error rate (the wav2vec 2.0 paper's low-resource test, Baevski et al.
2020, section 4.3: "fine-tuned on 10 minutes of labeled speech").

    states, padding = encoder.forward_frames(wave, mask)      (B, N, D) context frames
    log p = log_softmax(Linear(D, V)(states))                   (B, N, V), V = alphabet + blank
    L = CTC(log p, characters)                                  blank = 0, zero_infinity

fairseq's recipe, scaled for a CPU: the convolutional feature encoder stays frozen, the
Transformer and the new output layer train, and the frames are masked during training as in
pretraining (spans of 10 frames starting at a share 0.05 of them: fairseq's ``mask_prob``
0.5; Baevski et al. call it a modified SpecAugment). Decoding is greedy: the most likely
symbol per frame, repeats merged, blanks dropped. CER and WER are edit distances summed over
the test utterances divided by the reference lengths (characters; words).

The model trains through the engine's loop like fine-tuning does (`selfsup.evaluate.finetune`):
AdamW, warm-up then cosine decay, precision and progress bar from the engine.
"""

from __future__ import annotations

import copy
import random
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError

BLANK = 0
ENGLISH = "abcdefghijklmnopqrstuvwxyz' "
"""wav2vec 2.0's English letter vocabulary (LibriSpeech ``ltr``): letters, apostrophe and the
word boundary, here a space."""
SEPARATORS = re.compile(r"[-/_]+")
"""Characters that join words ("call-forward") and become a word boundary."""
DROPPED = re.compile(r"[.,!?;:\"()…“”‘’«»¿¡]+")
"""Punctuation the letters-only vocabulary leaves out."""
NON_SPEECH = re.compile(r"^\s*\[.*\]\s*$")
"""A transcript that describes a sound instead of words ("[ascending tones]")."""


def normalise(text: str) -> str:
    """A transcript as the letter vocabulary reads it: lower case, word joiners as spaces,
    punctuation dropped, runs of spaces as one."""
    text = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    text = DROPPED.sub(" ", SEPARATORS.sub(" ", text))
    return " ".join(text.split())


class Alphabet:
    """Characters <-> ids; id 0 is CTC's blank, characters are 1..len(characters)."""

    def __init__(self, characters: str) -> None:
        if len(set(characters)) != len(characters) or not characters:
            raise SelfsupError(
                f"the CTC alphabet must list distinct characters, got {characters!r}"
            )
        self.characters = characters
        self.ids = {c: i + 1 for i, c in enumerate(characters)}

    def __len__(self) -> int:
        """Output symbols, the blank included."""
        return len(self.characters) + 1

    def outside(self, text: str) -> str:
        """The characters of ``text`` the alphabet lacks, in order of appearance."""
        return "".join(dict.fromkeys(c for c in text if c not in self.ids))

    def encode(self, text: str) -> list[int]:
        missing = self.outside(text)
        if missing:
            raise SelfsupError(
                f"transcript {text!r} has characters outside the CTC alphabet: {missing!r}"
            )
        return [self.ids[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.characters[i - 1] for i in ids if i != BLANK)


def greedy_decode(log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
    """(B, N, V) frame scores and (B,) real frame counts -> per utterance, the best symbol
    of each real frame with repeats merged and blanks dropped."""
    best = log_probs.argmax(dim=-1)  # (B, N)
    out = []
    for row, n in zip(best.tolist(), lengths.tolist(), strict=True):
        merged = [s for t, s in enumerate(row[:n]) if t == 0 or s != row[t - 1]]
        out.append([s for s in merged if s != BLANK])
    return out


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each costing 1."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus CER and WER: summed edit distances over summed reference lengths."""
    chars = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    words = sum(
        edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses, strict=True)
    )
    return {
        "cer": chars / max(1, sum(len(r) for r in references)),
        "wer": words / max(1, sum(len(r.split()) for r in references)),
    }


class Transcribed(Dataset):
    """Samples of an audio data set with their transcripts as alphabet ids:
    ``{"audio": (T,), "targets": int64 (L,)}``."""

    def __init__(self, audio: Any, indices: list[int], targets: list[list[int]]) -> None:
        self.audio, self.indices, self.targets = audio, indices, targets
        self.input_key = "audio"

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        wave = self.audio[self.indices[i]]["audio"]
        return {"audio": wave, "targets": torch.tensor(self.targets[i], dtype=torch.long)}


def collate_transcribed(samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stacked waveforms (NaN tails mark padding) cut to the longest recording of the batch,
    targets padded with -1, their lengths."""
    lengths = torch.tensor([len(s["targets"]) for s in samples], dtype=torch.long)
    targets = torch.full((len(samples), int(lengths.max())), -1, dtype=torch.long)
    for row, s in enumerate(samples):
        targets[row, : len(s["targets"])] = s["targets"]
    audio = torch.stack([s["audio"] for s in samples])  # (B, T)
    real = (~audio.isnan()).any(dim=0).nonzero()
    return {
        "audio": audio[:, : int(real.max()) + 1] if len(real) else audio,
        "targets": targets,
        "target_lengths": lengths,
    }


@dataclass
class CTCConfig:
    """CTC fine-tuning's settings: fairseq's low-resource recipe, scaled for a CPU."""

    minutes: float = 10.0
    """Labelled audio to train on (the paper's smallest split is 10 minutes)."""
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    """Peak AdamW learning rate (not scaled by the batch)."""
    mask_start: float | None = None
    """Share of frames that start a masked span of ``mask_span`` frames; 0 turns masking off.
    None: fairseq's ``mask_prob`` 0.5 / 10 = 0.05 for 20 ms frames, scaled with the span so
    about the same share of the audio is hidden."""
    mask_span: int | None = None
    """Frames per masked span. None: the 10 frames of 20 ms (200 ms) of the paper's recipe, in
    the encoder's frames."""
    max_seconds: float = 6.0
    """Utterances longer than this are left out (a cut recording would not match its
    transcript)."""
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        if not self.minutes > 0 or self.epochs < 1 or self.batch_size < 1:
            raise SelfsupError(
                f"CTC fine-tuning needs minutes > 0, epochs ≥ 1 and batch_size ≥ 1, got "
                f"{self.minutes}, {self.epochs} and {self.batch_size}"
            )
        start = 0.0 if self.mask_start is None else self.mask_start
        span = 1 if self.mask_span is None else self.mask_span
        if not 0 < self.lr < 1 or not 0 <= start < 1 or span < 1:
            raise SelfsupError(
                f"CTC fine-tuning needs 0 < lr < 1, 0 ≤ mask_start < 1 and mask_span ≥ 1, got "
                f"{self.lr}, {self.mask_start} and {self.mask_span}"
            )


PAPER_CTC_SPAN = (0.05, 10)
"""fairseq's fine-tuning masks: a start chance of 0.05 (``mask_prob`` 0.5 over spans of 10)
and spans of 10 frames of 20 ms."""


def fitted_ctc_span(cfg: CTCConfig, encoder: nn.Module) -> tuple[float, int]:
    """The start chance and span length CTC fine-tuning masks with: the ones named, else the
    paper's 200 ms spans in the encoder's frames (``hop`` samples at its sample rate)."""
    from selfsup.modalities.audio import span_for_frames

    paper_prob, paper_length = PAPER_CTC_SPAN
    rate = (getattr(encoder, "build_args", None) or {}).get("sample_rate")
    if cfg.mask_span is not None or not rate:
        length = paper_length if cfg.mask_span is None else cfg.mask_span
        return (paper_prob if cfg.mask_start is None else cfg.mask_start), length
    length, prob = span_for_frames(paper_prob, paper_length, int(encoder.hop) / int(rate))
    return (prob if cfg.mask_start is None else cfg.mask_start), length


class CTCModel(nn.Module):
    """A copy of a speech encoder with a linear layer over its frames, trained by the engine
    with the CTC loss; its feature encoder is frozen (fairseq's ``feature_grad_mult`` 0)."""

    def __init__(self, encoder: nn.Module, symbols: int, cfg: CTCConfig) -> None:
        super().__init__()
        for needed in ("forward_frames", "feature_encoder", "embed_dim"):
            if not hasattr(encoder, needed):
                raise SelfsupError(
                    f"CTC fine-tuning needs a speech encoder with frame outputs (wav2vec2-*); "
                    f"{type(encoder).__name__} has no {needed}"
                )
        self.encoder = copy.deepcopy(encoder).train()
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        for p in self.encoder.feature_encoder.parameters():
            p.requires_grad_(False)
        self.head = nn.Linear(int(encoder.embed_dim), symbols)
        self.mask_start, self.mask_span = fitted_ctc_span(cfg, encoder)
        self.cfg = cfg

    def frame_log_probs(self, wave: Tensor, train: bool = False) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms -> (B, N, V) log-probabilities (float32) and (B,) frame counts."""
        from selfsup.views.masking import span_mask

        mask = None
        if train and self.mask_start > 0:
            _, padding = self.encoder.extract(wave)
            mask = span_mask(padding, start_prob=self.mask_start, span=self.mask_span)
        states, padding = self.encoder.forward_frames(wave, mask)
        return F.log_softmax(self.head(states).float(), dim=-1), (~padding).sum(dim=1)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        log_probs, lengths = self.frame_log_probs(batch["audio"], train=True)
        targets = batch["targets"]
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),  # (N, B, V)
            targets.clamp(min=0),
            lengths,
            batch["target_lengths"],
            blank=BLANK,
            zero_infinity=True,
        )
        return {"loss": loss}

    def on_step_end(self, progress: float) -> None:
        """No schedule of its own."""


def transcribed_split(
    dataset: Any, alphabet: Alphabet, max_seconds: float, *, skip_bad: bool
) -> tuple[list[int], list[list[int]], list[float], list[str]]:
    """The utterances of ``dataset`` that CTC can use: a spoken transcript ("[beep]" is left
    out) of alphabet characters, and audio no longer than ``max_seconds``. Returns their
    indices, ids, durations (s) and the keys skipped for characters outside the alphabet
    (an error unless ``skip_bad``)."""
    import soundfile as sf

    texts = getattr(dataset, "transcripts", None)
    if texts is None or not any(t.strip() for t in texts):
        raise SelfsupError(
            f"{getattr(dataset, 'name', 'the data')} has no transcripts: CTC fine-tuning needs a "
            "same-stem .txt beside each recording or a manifest with a text column"
        )
    keep, ids, seconds, skipped = [], [], [], []
    for i, (path, text) in enumerate(zip(dataset.paths, texts, strict=True)):
        if not text.strip() or NON_SPEECH.match(text):
            continue
        line = normalise(text)
        if alphabet.outside(line):
            if not skip_bad:
                raise SelfsupError(
                    f"{dataset.keys[i]}: transcript {line!r} has characters outside the CTC "
                    f"alphabet ({alphabet.outside(line)!r}); spell them out, widen "
                    "eval.ctc_alphabet, or pass --skip-bad to leave such recordings out"
                )
            skipped.append(dataset.keys[i])
            continue
        duration = sf.info(str(path)).duration
        if duration > max_seconds or not line:
            continue
        keep.append(i)
        ids.append(alphabet.encode(line))
        seconds.append(duration)
    return keep, ids, seconds, skipped


def labelled_minutes(seconds: Sequence[float], minutes: float, seed: int) -> list[int]:
    """Positions of a seeded random subset of the utterances, taken in order until their
    audio adds up to ``minutes`` (all of them when there is less)."""
    order = list(range(len(seconds)))
    random.Random(seed).shuffle(order)
    chosen, total = [], 0.0
    for i in order:
        if total >= minutes * 60:
            break
        chosen.append(i)
        total += seconds[i]
    return sorted(chosen)


def ctc_finetune(
    models: dict[str, nn.Module],
    train_audio: Any,
    test_audio: Any,
    cfg: CTCConfig,
    alphabet: Alphabet,
    *,
    skip_bad: bool = False,
    precision: str = "auto",
) -> list[dict[str, Any]]:
    """One row per encoder: CER and WER (%) on ``test_audio``'s transcribed utterances after
    CTC fine-tuning on ``cfg.minutes`` of ``train_audio``'s (the same utterances for each)."""
    from selfsup.engine import make_fabric, train
    from selfsup.evaluate.finetune import FinetuneConfig, _engine_config, _own_random_state

    cfg.validate()
    rows_train, ids_train, secs_train, skipped = transcribed_split(
        train_audio, alphabet, cfg.max_seconds, skip_bad=skip_bad
    )
    rows_test, ids_test, _, skipped_test = transcribed_split(
        test_audio, alphabet, cfg.max_seconds, skip_bad=skip_bad
    )
    if not rows_train or not rows_test:
        raise SelfsupError(
            f"no transcribed recordings of at most {cfg.max_seconds:g} s in the "
            f"{'training' if not rows_train else 'test'} split to fine-tune CTC on"
        )
    chosen = labelled_minutes(secs_train, cfg.minutes, cfg.seed)
    train_set = Transcribed(
        train_audio, [rows_train[i] for i in chosen], [ids_train[i] for i in chosen]
    )
    test_set = Transcribed(test_audio, rows_test, ids_test)
    batch = min(cfg.batch_size, len(train_set))
    run_cfg = _engine_config(
        FinetuneConfig(
            epochs=cfg.epochs,
            batch_size=batch,
            lr=cfg.lr,
            weight_decay=0.0,
            precision=precision,  # type: ignore[arg-type]
            seed=cfg.seed,
            progress=cfg.progress,
        ),
        batch,
        cfg.lr,
        0,
    )
    run_cfg.train.grad_clip = 1.0  # CTC's early gradients spike where blanks dominate
    fabric = make_fabric(run_cfg, None)
    rows = []
    for label, encoder in models.items():
        start = time.perf_counter()
        with _own_random_state(fabric.device):
            torch.manual_seed(cfg.seed)
            model = CTCModel(encoder, len(alphabet), cfg).to(fabric.device)
            trained = train(
                fabric,
                run_cfg,
                model,
                train_set,
                None,
                description=f"CTC {label}",
                collate=collate_transcribed,
            )
        references, hypotheses = _transcribe(fabric, model, test_set, alphabet, batch)
        last = list(trained.losses.values())[-max(1, len(train_set) // batch) :]
        rows.append(
            {
                "encoder": label,
                "protocol": "ctc",
                **{k: 100 * v for k, v in error_rates(references, hypotheses).items()},
                "data": getattr(test_audio, "name", None),
                "labelled_minutes": round(sum(secs_train[i] for i in chosen) / 60, 2),
                "num_train": len(train_set),
                "num_test": len(test_set),
                "skipped": len(skipped) + len(skipped_test),
                "train_loss": sum(last) / len(last),
                "steps": trained.steps,
                "mask": {"start": model.mask_start, "span": model.mask_span},
                "seconds": time.perf_counter() - start,
                "example": {"reference": references[0], "hypothesis": hypotheses[0]},
            }
        )
    return rows


@torch.no_grad()
def _transcribe(
    fabric: Any, model: CTCModel, test_set: Transcribed, alphabet: Alphabet, batch: int
) -> tuple[list[str], list[str]]:
    model.eval()
    references, hypotheses = [], []
    for start in range(0, len(test_set), batch):
        samples = [test_set[i] for i in range(start, min(len(test_set), start + batch))]
        b = collate_transcribed(samples)
        with fabric.autocast():
            log_probs, lengths = model.frame_log_probs(b["audio"].to(fabric.device))
        for ids, row, n in zip(
            greedy_decode(log_probs, lengths), b["targets"], b["target_lengths"], strict=True
        ):
            hypotheses.append(alphabet.decode(ids))
            references.append(alphabet.decode(row[:n].tolist()))
    model.train()
    return references, hypotheses
