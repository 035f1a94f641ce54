"""Audio I/O: read any file soundfile understands as mono float32 at the sample rate the models use.

Every corpus here (espeak-ng at 22,050 Hz, KLettres at mixed rates, user Kaldi directories) goes through
`read_audio`, so a bad file is reported once, by name, and a sample-rate mismatch is resampled with torchaudio.
"""

from pathlib import Path

import soundfile
import torch
import torchaudio.functional

from paperzoo.core.errors import DataError

#: the sample rate of every waveform the features see (Hz).
SAMPLE_RATE = 16_000


def resample(waveform: torch.Tensor, source_rate: int, target_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """`waveform` [..., S] from `source_rate` to `target_rate` (a copy only when the rates differ)."""
    if source_rate == target_rate:
        return waveform
    return torchaudio.functional.resample(waveform, source_rate, target_rate)


def read_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    start: float | None = None,
    end: float | None = None,
) -> torch.Tensor:
    """The mono waveform [S] of `path` (float32 in [-1, 1]) at `sample_rate`.

    Args:
        path: any format libsndfile reads (wav, flac, ogg).
        sample_rate: resample to this rate when the file's differs.
        start, end: optional segment bounds in seconds (Kaldi `segments`).

    Raises `DataError` naming the file when it is missing, unreadable or holds no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} does not exist")
    try:
        info = soundfile.info(str(path))
        first = 0 if start is None else int(round(start * info.samplerate))
        last = -1 if end is None else int(round(end * info.samplerate))
        samples, rate = soundfile.read(str(path), start=first, stop=None if last < 0 else last, dtype="float32")
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise DataError(f"audio file {path} cannot be read: {error}") from error
    waveform = torch.from_numpy(samples)
    if waveform.ndim == 2:  # [S, channels] -> mono
        waveform = waveform.mean(dim=1)
    if waveform.numel() == 0:
        raise DataError(f"audio file {path} holds no samples" + ("" if start is None else f" in [{start}, {end}] s"))
    return resample(waveform, rate, sample_rate)
