"""Speech synthesis with espeak-ng (Debian `espeak-ng`): one utterance, any voice, speed and pitch.

espeak-ng is a formant synthesizer: ~10 ms per utterance on one core, 131 voices, each with variants (`en-us+f2`),
so whole ASR corpora are generated at run time rather than shipped.
"""

import functools
import io
import shutil
import subprocess

import soundfile
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.speech.data.audio import SAMPLE_RATE, resample


@functools.cache
def espeak_executable() -> str:
    """The espeak-ng command, or a `ConfigError` saying how to install it."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise ConfigError("espeak-ng is not installed: it synthesizes the default corpora (apt-get install espeak-ng)")
    return found


def synthesize(
    text: str,
    voice: str = "en-us",
    speed: int = 160,
    pitch: int = 50,
    sample_rate: int = SAMPLE_RATE,
) -> torch.Tensor:
    """The waveform [S] (float32, mono, at `sample_rate`) of espeak-ng speaking `text`.

    Args:
        text: what to say (passed as one argument, never through a shell).
        voice: an espeak-ng voice with an optional variant, such as "en-us+f2" (`espeak-ng --voices`).
        speed: words per minute (espeak-ng's -s, 80-450).
        pitch: 0-99 (espeak-ng's -p).
    """
    if not text.strip():
        raise DataError("cannot synthesize an empty transcript")
    command = [espeak_executable(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", "--", text]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise DataError(f"espeak-ng failed on voice {voice!r}: {done.stderr.decode(errors='replace').strip()}")
    samples, rate = soundfile.read(io.BytesIO(done.stdout), dtype="float32")
    return resample(torch.from_numpy(samples), rate, sample_rate)
