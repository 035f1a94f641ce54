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
import pickle
from collections.abc import Iterable
from pathlib import Path

import torch
import torchaudio.compliance.kaldi
import torchaudio.transforms
from torch import nn

from paperzoo.core.errors import DataError, require
from paperzoo.core.io import atomic_torch_save, load_checkpoint_file
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


class SpecAugment(nn.Module):
    """SpecAugment (Park et al., 2019, https://arxiv.org/abs/1904.08779) on the features of one utterance, with
    torchaudio's `FrequencyMasking` and `TimeMasking` (no time warping, as Paraformer's recipe).

    On LFR features [T', m * F] a frequency mask covers the same mel bins in each of the m stacked frames (as
    FunASR's `SpecAugLFR`), so the mask means the same thing it would before stacking. The masked value is 0,
    the mean after `GlobalCMVN`. Deviation: a time mask covers at most `max_time_fraction` of the utterance
    (torchaudio's `p`), so a short utterance is never blanked out entirely.

    Args:
        freq_mask_width: the widest frequency mask, in mel bins (widths are uniform in [0, freq_mask_width)).
        num_freq_masks: frequency masks per utterance.
        time_mask_width: the widest time mask, in (LFR) frames.
        num_time_masks: time masks per utterance.
        stack: m, the number of frames LFR stacked into each row (1 without LFR).
        max_time_fraction: the largest share of the frames one time mask may cover.
    """

    def __init__(
        self,
        freq_mask_width: int = 30,
        num_freq_masks: int = 1,
        time_mask_width: int = 12,
        num_time_masks: int = 1,
        stack: int = 1,
        max_time_fraction: float = 0.2,
    ):
        super().__init__()
        require(freq_mask_width >= 0 and num_freq_masks >= 0, "SpecAugment frequency masks must be >= 0")
        require(time_mask_width >= 0 and num_time_masks >= 0, "SpecAugment time masks must be >= 0")
        require(stack >= 1, f"SpecAugment stack must be >= 1, got {stack}")
        require(0 < max_time_fraction <= 1, f"max_time_fraction must be in (0, 1], got {max_time_fraction}")
        self.stack, self.num_freq_masks, self.num_time_masks = stack, num_freq_masks, num_time_masks
        self.freq_masking = torchaudio.transforms.FrequencyMasking(freq_mask_width)
        self.time_masking = torchaudio.transforms.TimeMasking(time_mask_width, p=max_time_fraction)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`features` [T, D] (D = stack * mel bins) -> a masked copy [T, D]."""
        frames, dim = features.shape
        require(dim % self.stack == 0, f"SpecAugment stack {self.stack} does not divide the feature size {dim}")
        spectrogram = features.reshape(frames, self.stack, dim // self.stack).permute(1, 2, 0)  # [m, F, T]
        for _ in range(self.num_freq_masks):
            spectrogram = self.freq_masking(spectrogram)  # one band, the same in each stacked frame
        for _ in range(self.num_time_masks):
            spectrogram = self.time_masking(spectrogram)
        return spectrogram.permute(2, 0, 1).reshape(frames, dim)


class GlobalCMVN:
    """Global cepstral mean and variance normalisation: (x - mean) / std per feature dimension, with the
    statistics of every frame of the training set.

    Args:
        mean, std: [D] statistics (`fit` computes them).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        require(mean.shape == std.shape and mean.ndim == 1, "GlobalCMVN mean and std must be [D] of one size")
        self.mean, self.std = mean.float(), std.float()

    @classmethod
    def fit(cls, features: Iterable[torch.Tensor], min_std: float = 1e-5) -> "GlobalCMVN":
        """Statistics over all frames of `features` (each [T_i, D]), accumulated in float64; the standard
        deviation is floored at `min_std` so constant dimensions are not divided by zero."""
        count, total, squares = 0, None, None
        for frames in features:
            frames = frames.double()
            total = frames.sum(0) if total is None else total + frames.sum(0)
            squares = (frames**2).sum(0) if squares is None else squares + (frames**2).sum(0)
            count += frames.shape[0]
        if total is None or squares is None or count == 0:
            raise DataError("cannot fit CMVN statistics on a training set without frames")
        mean = total / count
        variance = (squares / count - mean**2).clamp_min(0)
        return cls(mean, variance.sqrt().clamp_min(min_std))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """`features` [..., D] normalised."""
        return (features - self.mean) / self.std

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    def save(self, path: str | Path) -> None:
        """Write the statistics atomically (a torch file with "mean" and "std")."""
        atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "GlobalCMVN":
        """Statistics written by `save` (a `DataError` names a missing, corrupt or malformed file)."""
        try:
            state = load_checkpoint_file(path)
        except pickle.UnpicklingError as error:  # not a torch file at all
            raise DataError(f"CMVN file {path} is not a torch file ({error})") from error
        if not isinstance(state, dict) or not {"mean", "std"} <= set(state):
            raise DataError(f"CMVN file {path} does not hold 'mean' and 'std' statistics")
        return cls(state["mean"], state["std"])
