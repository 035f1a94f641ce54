"""One utterance of any corpus: an id, its transcript and where its audio is (a file, or a segment of one).

Every source (the espeak-ng generator, Kaldi data directories, KLettres, the ALSA WAVs) returns a list of these,
so the datamodule and the evaluation harness read audio one way: `utterance.waveform()`.
"""

from dataclasses import dataclass
from pathlib import Path

import soundfile
import torch

from paperzoo.core.errors import DataError
from paperzoo.speech.data.audio import SAMPLE_RATE, read_audio


@dataclass(frozen=True)
class Utterance:
    """A transcribed stretch of audio.

    Args:
        id: unique within its corpus (the Kaldi utterance id).
        text: the transcript (may be empty only where a source documents it; the datamodule rejects empty ones).
        audio: the audio file (any format `read_audio` reads).
        start, end: the segment in seconds (Kaldi `segments`); None means the start / the end of the file.
    """

    id: str
    text: str
    audio: Path
    start: float | None = None
    end: float | None = None

    def waveform(self, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """The mono float32 waveform [S] of this utterance at `sample_rate` (a `DataError` names a bad file)."""
        return read_audio(self.audio, sample_rate, self.start, self.end)

    def duration(self) -> float:
        """Length in seconds, from the file header (no decoding) and the segment bounds."""
        try:
            info = soundfile.info(str(self.audio))
        except (RuntimeError, soundfile.LibsndfileError) as error:
            raise DataError(f"audio file {self.audio} cannot be read: {error}") from error
        end = info.duration if self.end is None else min(self.end, info.duration)
        return max(0.0, end - (self.start or 0.0))
