"""Acoustic features: Kaldi fbank, Paraformer's low-frame-rate stacking (LFR), SpecAugment and global CMVN.

Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech Recognition
(Gao et al., Interspeech 2022, https://arxiv.org/abs/2206.08317) feeds its encoder 80-d log-mel filterbanks
stacked 7 frames at a time with a stride of 6 (LFR: 60 ms per encoder frame), normalised by CMVN statistics of
the training set, with SpecAugment during training.

Implemented here, following FunASR's `WavFrontend` (funasr/frontends/wav_frontend.py) for the facts:
- `fbank`: torchaudio's Kaldi-compatible fbank on the waveform scaled to 16-bit range, Hamming window,
  25 ms / 10 ms frames, `energy_floor=0`, `snip_edges=True`. Deviation: dither is 0 (FunASR trains with
  dither 1.0), so cached features are deterministic.
- `lfr`: (m - 1) // 2 copies of the first frame are prepended, output frame i stacks padded frames
  [i*n, i*n + m), there are ceil(T / n) of them, and the last windows are completed with copies of the last frame.
- `GlobalCMVN`: per-dimension mean and standard deviation over every frame of the training set, applied as
  (x - mean) / std (FunASR's `am.mvn` stores the same as an add-shift of -mean and a rescale of 1/std).
- `SpecAugment`: torchaudio's `FrequencyMasking` / `TimeMasking` on the (LFR) features of training batches.
"""

import math

import torch
import torchaudio.compliance.kaldi
import torchaudio.transforms

from paperzoo.core.errors import require
from paperzoo.speech.data.audio import SAMPLE_RATE

#: Kaldi fbank framing (ms) and the shortest waveform that yields one frame.
FRAME_LENGTH_MS, FRAME_SHIFT_MS = 25.0, 10.0


def fbank(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = 80) -> torch.Tensor:
    """Log-mel filterbank features [T, num_mel_bins] of a mono waveform [S] in [-1, 1].

    T = 1 + (S - 25 ms) // 10 ms (Kaldi `snip_edges`); a waveform shorter than one 25 ms frame gives T = 0.
    """
    require(waveform.ndim == 1, f"fbank expects a mono waveform [S], got shape {tuple(waveform.shape)}")
    window = int(sample_rate * FRAME_LENGTH_MS / 1000)
    if waveform.numel() < window:
        return torch.zeros(0, num_mel_bins)
    return torchaudio.compliance.kaldi.fbank(
        waveform.float().unsqueeze(0) * (1 << 15),  # Kaldi works on 16-bit sample values
        num_mel_bins=num_mel_bins,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
        dither=0.0,
        energy_floor=0.0,
        window_type="hamming",
        sample_frequency=sample_rate,
        snip_edges=True,
    )


def lfr(features: torch.Tensor, m: int = 7, n: int = 6) -> torch.Tensor:
    """Low-frame-rate stacking: [T, F] -> [ceil(T / n), m * F], padded at both ends as FunASR pads.

    Output frame i is the concatenation of frames i*n - (m-1)//2 ... i*n + m - 1 - (m-1)//2 of the input, where
    indices below 0 read frame 0 and indices past the end read frame T - 1.
    """
    require(m >= 1 and n >= 1, f"LFR needs m >= 1 and n >= 1, got m={m}, n={n}")
    frames, dim = features.shape
    if frames == 0:
        return features.new_zeros(0, m * dim)
    count = math.ceil(frames / n)
    # the same windows as FunASR's loop, as one gather: clamp reads the first/last frame for the padding
    starts = torch.arange(count) * n - (m - 1) // 2  # [T']
    index = (starts[:, None] + torch.arange(m)[None, :]).clamp(0, frames - 1)  # [T', m]
    return features[index].reshape(count, m * dim)
