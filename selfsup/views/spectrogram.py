"""Log-mel filterbanks and MFCCs of waveform batches, as a few torch ops (no torchaudio).

The recipe is the common one (Kaldi/HTK, librosa with ``htk=True``): frames of ``win_ms``
every ``hop_ms`` (centred, reflect-padded), a Hann window, the power spectrum of an FFT of the
next power of two, ``n_mels`` triangular filters evenly spaced on the HTK mel scale
mel(f) = 2595 log10(1 + f/700) between 0 Hz and Nyquist, log(energy + 1e-6); MFCCs are the
first ``n_mfcc`` coefficients of the orthonormal DCT-II of the log-mel energies.
Defaults (25 ms / 10 ms, 40 mels, 13 MFCCs) are the speech-recognition standard.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

LOG_FLOOR = 1e-6


def hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters: filter m rises from mel point m to m + 1
    and falls to m + 2, the n_mels + 2 points evenly spaced in mel from 0 to Nyquist."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    top = hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))
    points = mel_to_hz(torch.linspace(0, float(top), n_mels + 2, dtype=torch.float64))
    low, centre, high = points[:-2, None], points[1:-1, None], points[2:, None]  # (M, 1)
    rising = (freqs - low) / (centre - low)
    falling = (high - freqs) / (high - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()  # (M, F)


def frame_sizes(sample_rate: int, win_ms: float, hop_ms: float) -> tuple[int, int, int]:
    """(window, hop, n_fft) in samples for ``sample_rate``."""
    win = round(sample_rate * win_ms / 1000)
    hop = round(sample_rate * hop_ms / 1000)
    return win, hop, 2 ** math.ceil(math.log2(win))


def log_mel(
    wave: Tensor,
    sample_rate: int,
    *,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
    center: bool = True,
) -> Tensor:
    """(B, T) float waveforms -> (B, frames, n_mels) log-mel energies, frames = T // hop + 1;
    with ``center=False`` frame t starts at sample t · hop (Kaldi's framing: frames =
    (T − n_fft) // hop + 1), so it lines up with a strided convolution's frame t."""
    win, hop, n_fft = frame_sizes(sample_rate, win_ms, hop_ms)
    window = torch.hann_window(win, periodic=True, dtype=torch.float32, device=wave.device)
    spec = torch.stft(
        wave.float(),
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=center,
        pad_mode="reflect",
        return_complex=True,
    )  # (B, F, frames)
    power = spec.real.square() + spec.imag.square()
    bank = mel_filterbank(n_mels, n_fft, sample_rate).to(wave.device)  # (M, F)
    return torch.log(torch.einsum("mf,bft->btm", bank, power) + LOG_FLOOR)  # (B, frames, M)


@functools.lru_cache(maxsize=16)
def dct_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_in, n_out) orthonormal DCT-II: x @ D gives the first n_out coefficients."""
    n = torch.arange(n_in, dtype=torch.float64)[:, None]
    k = torch.arange(n_out, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    return d.float()


def mfcc(
    wave: Tensor,
    sample_rate: int,
    *,
    n_mfcc: int = 13,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
    center: bool = True,
) -> Tensor:
    """(B, T) float waveforms -> (B, frames, n_mfcc) MFCCs."""
    mels = log_mel(wave, sample_rate, n_mels=n_mels, win_ms=win_ms, hop_ms=hop_ms, center=center)
    return mels @ dct_matrix(n_mels, n_mfcc).to(mels.device)  # (B, frames, n_mfcc)


def deltas(feats: Tensor, width: int = 2) -> Tensor:
    """(B, N, C) features -> (B, N, C) their time derivatives by the regression formula of
    HTK and Kaldi (``compute_deltas`` with window 2·width + 1), edges repeated:

        d_t = Σ_{n=1..width} n · (c_{t+n} − c_{t−n}) / (2 Σ_{n=1..width} n²)
    """
    N = feats.shape[1]
    index = torch.arange(N, device=feats.device)
    total = torch.zeros_like(feats)
    for n in range(1, width + 1):
        ahead = feats[:, (index + n).clamp(max=N - 1)]
        behind = feats[:, (index - n).clamp(min=0)]
        total = total + n * (ahead - behind)
    return total / (2 * sum(n * n for n in range(1, width + 1)))


def mfcc_deltas(wave: Tensor, sample_rate: int, hop: int, n_mfcc: int = 13) -> Tensor:
    """(B, T) waveforms -> (B, frames, 3 · n_mfcc): MFCCs over 25 ms frames every ``hop``
    samples (uncentred, frame t starts at t · hop) with their deltas and delta-deltas;
    HuBERT's first-iteration clustering features (39 dims for 13 MFCCs)."""
    feats = mfcc(wave, sample_rate, n_mfcc=n_mfcc, hop_ms=1000.0 * hop / sample_rate, center=False)
    first = deltas(feats)
    return torch.cat([feats, first, deltas(first)], dim=-1)


def frame_padding(padding: Tensor, hop: int, frames: int) -> Tensor:
    """(B, T) sample padding -> (B, frames) frame padding: a frame is padding when its centre
    sample (t · hop) is, or lies past the end."""
    centres = torch.arange(frames, device=padding.device) * hop  # (frames,)
    lengths = (~padding).sum(dim=1, keepdim=True)  # (B, 1)
    return centres[None, :] >= lengths


def mfcc_stats(wave: Tensor, padding: Tensor, sample_rate: int, n_mfcc: int = 13) -> Tensor:
    """(B, T) waveforms with (B, T) bool padding -> (B, 2 · n_mfcc): the mean and standard
    deviation of each MFCC over the utterance's own frames (the raw-input baseline of
    utterance classification)."""
    feats = mfcc(wave, sample_rate, n_mfcc=n_mfcc)  # (B, N, C)
    _, hop, _ = frame_sizes(sample_rate, 25.0, 10.0)
    keep = (~frame_padding(padding, hop, feats.shape[1])).unsqueeze(-1).float()  # (B, N, 1)
    count = keep.sum(dim=1).clamp(min=1)  # (B, 1)
    mean = (feats * keep).sum(dim=1) / count  # (B, C)
    var = ((feats - mean[:, None]) ** 2 * keep).sum(dim=1) / count
    return torch.cat([mean, var.sqrt()], dim=1)
