"""Audio I/O and the Utterance: mono float32 at 16 kHz, resampling that keeps a tone's frequency, segment bounds
read at the file's rate, and a `DataError` naming every missing, unreadable or empty file."""

import math

import numpy as np
import pytest
import soundfile
import torch

from paperzoo.core.errors import DataError
from paperzoo.speech.data.audio import SAMPLE_RATE, read_audio, resample
from paperzoo.speech.data.utterance import Utterance


def tone(frequency: float, seconds: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def peak_frequency(waveform: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(waveform).abs()
    return float(spectrum.argmax()) * rate / waveform.numel()


@pytest.mark.parametrize(("rate", "kind"), [(8_000, "WAV"), (22_050, "FLAC"), (44_100, "OGG"), (16_000, "WAV")])
def test_read_audio_resamples_to_16k_and_keeps_the_tone(tmp_path, rate, kind):
    path = tmp_path / f"tone.{kind.lower()}"
    soundfile.write(path, tone(440.0, 1.0, rate), rate, format=kind)
    waveform = read_audio(path)
    assert waveform.dtype == torch.float32 and waveform.ndim == 1
    assert waveform.numel() == pytest.approx(SAMPLE_RATE, abs=2)
    assert peak_frequency(waveform, SAMPLE_RATE) == pytest.approx(440.0, abs=1.0)
    assert float(waveform.abs().max()) == pytest.approx(0.5, abs=0.05)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(300, 0.2, SAMPLE_RATE), np.zeros(round(0.2 * SAMPLE_RATE), np.float32)
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    assert torch.allclose(read_audio(tmp_path / "stereo.wav"), torch.from_numpy(left) / 2)


def test_start_and_end_are_seconds_at_the_file_rate(tmp_path):
    ramp = (np.arange(8_000) * 1e-5).astype(np.float32)
    soundfile.write(tmp_path / "ramp.wav", ramp, 8_000, subtype="FLOAT")
    segment = read_audio(tmp_path / "ramp.wav", sample_rate=8_000, start=0.5, end=0.75)
    assert torch.equal(segment, torch.from_numpy(ramp[4_000:6_000]))
    assert torch.equal(read_audio(tmp_path / "ramp.wav", 8_000, start=0.875), torch.from_numpy(ramp[7_000:]))
    assert read_audio(tmp_path / "ramp.wav", start=0.5, end=0.75).numel() == 4_000  # then resampled to 16 kHz


def test_resample_identity_and_length():
    waveform = torch.randn(2, 4_410)
    assert resample(waveform, 16_000, 16_000) is waveform
    assert resample(waveform, 44_100, 16_000).shape == (2, 1_600)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"audio file .*absent.wav does not exist"):
        read_audio(tmp_path / "absent.wav")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF not audio at all")
    with pytest.raises(DataError, match=r"audio file .*garbage.wav cannot be read"):
        read_audio(tmp_path / "garbage.wav")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(DataError, match=r"audio file .*empty.wav holds no samples"):
        read_audio(tmp_path / "empty.wav")
    soundfile.write(tmp_path / "short.wav", np.zeros(100, np.float32), SAMPLE_RATE)
    with pytest.raises(DataError, match=r"short.wav holds no samples in \[1.0, 2.0\] s"):
        read_audio(tmp_path / "short.wav", start=1.0, end=2.0)


def test_utterance_waveform_and_duration(tmp_path):
    soundfile.write(tmp_path / "t.flac", tone(200, 1.5, 22_050), 22_050, format="FLAC")
    whole = Utterance("u", "text", tmp_path / "t.flac")
    part = Utterance("p", "text", tmp_path / "t.flac", start=0.5, end=1.0)
    tail = Utterance("t", "text", tmp_path / "t.flac", start=1.25)
    assert whole.duration() == pytest.approx(1.5) and part.duration() == 0.5 and tail.duration() == 0.25
    assert whole.waveform().numel() == 24_000 and part.waveform().numel() == 8_000
    assert part.waveform(sample_rate=22_050).numel() == 11_025
    assert Utterance("x", "t", tmp_path / "t.flac", 1.0, 9.0).duration() == 0.5  # the end is clipped to the file
    assert math.isclose(peak_frequency(part.waveform(), SAMPLE_RATE), 200, abs_tol=2)
    with pytest.raises(DataError, match=r"audio file .*nothing.wav cannot be read"):
        Utterance("n", "t", tmp_path / "nothing.wav").duration()
    with pytest.raises(AttributeError):
        whole.text = "changed"  # frozen: utterances are shared between splits and caches
