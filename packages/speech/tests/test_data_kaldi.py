"""Kaldi data directories: the fixture in the exact format, segments cutting the exact samples, a write/read
round trip, and a `DataError` naming the file and line for every malformed input."""

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.speech.data.audio import SAMPLE_RATE, read_audio
from paperzoo.speech.data.kaldi import read_kaldi_dir, write_kaldi_dir
from paperzoo.speech.data.utterance import Utterance

FIXTURE = Path(__file__).parent / "fixtures" / "kaldi"


def test_fixture_train_is_segmented_and_cuts_the_phrases():
    utterances = read_kaldi_dir(FIXTURE / "train")
    assert [(u.id, u.text) for u in utterances] == [
        ("a-1", "the dog saw a car"),
        ("a-2", "my key"),
        ("b-1", "sit on the sky"),
        ("b-2", "no gas"),
    ]
    assert {u.audio.name for u in utterances} == {"rec-a.wav", "rec-b.wav"}
    for name in ("rec-a", "rec-b"):
        recording = read_audio(FIXTURE / "audio" / f"{name}.wav")
        covered = torch.zeros(recording.numel(), dtype=torch.bool)
        for u in (u for u in utterances if u.audio.stem == name):
            first, last = round(u.start * SAMPLE_RATE), round(u.end * SAMPLE_RATE)
            segment = u.waveform()
            assert torch.equal(segment, recording[first:last])  # the segment is exactly these samples
            margin = round(0.05 * SAMPLE_RATE)  # the generator pads each phrase by 50 ms of silence
            assert segment[:margin].abs().max() == 0 and segment[-margin:].abs().max() == 0
            assert segment[margin:-margin].abs().max() > 0.05
            covered[first:last] = True
        assert recording[~covered].abs().max() == 0  # all speech lies inside a segment, none between them


def test_fixture_dev_and_test_are_whole_files_resampled_to_16k():
    dev = read_kaldi_dir(FIXTURE / "dev")
    assert [(u.id, u.text, u.start, u.end) for u in dev] == [
        ("dev-1", "hot jet", None, None),
        ("dev-2", "say me", None, None),
    ]
    test = read_kaldi_dir(FIXTURE / "test")
    assert [u.audio.suffix for u in test] == [".flac", ".wav"]
    for utterance, rate in zip(test, (22_050, 8_000), strict=True):
        info = soundfile.info(str(utterance.audio))
        assert info.samplerate == rate
        assert utterance.waveform().numel() == pytest.approx(info.frames * SAMPLE_RATE / rate, abs=1)
    # the scp lists audio relative to the data directory, as the fixture generator writes it
    assert (FIXTURE / "test" / "wav.scp").read_text().splitlines()[0] == "test-1 ../audio/test-1.flac"


def ramp_file(path: Path, samples: int, rate: int) -> Path:
    """A float WAV whose sample i holds i * 1e-5, so a cut shows which samples it took."""
    soundfile.write(path, (np.arange(samples) * 1e-5).astype(np.float32), rate, subtype="FLOAT")
    return path


def write(directory: Path, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name.replace("_", ".")).write_text(content)
    return directory


def test_segments_cut_the_right_samples_at_the_file_rate(tmp_path):
    ramp_file(tmp_path / "ramp.wav", 8_000, 8_000)  # 1 s at 8 kHz
    data = write(
        tmp_path / "data",
        wav_scp="rec ../ramp.wav\n",
        text="u1 one\nu2 two\nu3 three\n",
        segments="u1 rec 0.25 0.5\nu2 rec 0.1 0.1005\nu3 rec 0.9 -1\n",
    )
    u1, u2, u3 = read_kaldi_dir(data)
    assert (u1.start, u1.end, u3.end) == (0.25, 0.5, None)
    expected = {u1: (2000, 4000), u2: (800, 804), u3: (7200, 8000)}  # seconds x 8000, end exclusive
    for utterance, (first, last) in expected.items():
        samples = utterance.waveform(sample_rate=8_000)
        assert torch.allclose(samples, torch.arange(first, last) * 1e-5, atol=1e-9), utterance.id
    assert u1.duration() == 0.25 and u3.duration() == pytest.approx(0.1)


def test_write_then_read_round_trips(tmp_path):
    plain = [
        Utterance("b", "second  one", ramp_file(tmp_path / "b.wav", 1600, SAMPLE_RATE)),
        Utterance("a", "first", ramp_file(tmp_path / "a.wav", 800, SAMPLE_RATE)),
    ]
    back = read_kaldi_dir(write_kaldi_dir(plain, tmp_path / "plain"))
    assert back == [Utterance("a", "first", tmp_path / "a.wav"), Utterance("b", "second one", tmp_path / "b.wav")]
    assert not (tmp_path / "plain" / "segments").exists()
    assert (tmp_path / "plain" / "wav.scp").read_text() == f"a {tmp_path / 'a.wav'}\nb {tmp_path / 'b.wav'}\n"

    recording = ramp_file(tmp_path / "long recording.wav", 16_000, SAMPLE_RATE)
    segmented = [
        Utterance("s2", "later", recording, 0.5, 0.75),
        Utterance("s1", "early", recording, 0.0123125, 0.25),
        Utterance("whole", "everything", tmp_path / "a.wav"),
    ]
    directory = write_kaldi_dir(segmented, tmp_path / "segmented")
    assert (directory / "segments").read_text() == (
        "s1 long_recording 0.012313 0.25\ns2 long_recording 0.5 0.75\nwhole a 0 -1\n"
    )
    back = read_kaldi_dir(directory)
    assert [(u.id, u.audio, u.end) for u in back] == [
        ("s1", recording, 0.25),
        ("s2", recording, 0.75),
        ("whole", tmp_path / "a.wav", None),
    ]
    assert torch.equal(back[0].waveform(), segmented[1].waveform())  # microsecond times select the same samples
    # writing a plain listing over it removes the stale segments file
    write_kaldi_dir(plain, directory)
    assert not (directory / "segments").exists() and len(read_kaldi_dir(directory)) == 2


def test_audio_paths_modes(tmp_path):
    inside = ramp_file(write(tmp_path / "d") / "x.wav", 100, SAMPLE_RATE)
    outside = ramp_file(tmp_path / "y.wav", 100, SAMPLE_RATE)
    utterances = [Utterance("x", "x", inside), Utterance("y", "y", outside)]
    scp = lambda mode: (write_kaldi_dir(utterances, tmp_path / "d", mode) / "wav.scp").read_text()  # noqa: E731
    assert scp("auto") == f"x x.wav\ny {outside}\n"
    assert scp("relative") == "x x.wav\ny ../y.wav\n"
    assert scp("absolute") == f"x {inside}\ny {outside}\n"
    with pytest.raises(ConfigError, match="audio_paths 'home'"):
        write_kaldi_dir(utterances, tmp_path / "d", "home")


def test_writer_rejects_what_kaldi_cannot_hold(tmp_path):
    audio = tmp_path / "a.wav"
    for utterances, message in [
        ([Utterance("has space", "t", audio)], "utterance id 'has space'"),
        ([Utterance("a", "t", audio), Utterance("a", "u", audio)], "'a' appears twice"),
        ([Utterance("a", "two\nlines", audio)], "spans several lines"),
    ]:
        with pytest.raises(DataError, match=message):
            write_kaldi_dir(utterances, tmp_path / "out")


@pytest.fixture
def audio(tmp_path):
    return ramp_file(tmp_path / "a.wav", 1600, SAMPLE_RATE).name


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"wav_scp": "r1 ../a.wav\nr2 flac -c -d -s r2.flac |\n"},
            r"wav.scp line 2: recording 'r2' is a piped command",
        ),
        ({"wav_scp": "r1 ../a.wav\nr2 data/raw.ark:1234\n"}, r"wav.scp line 2: recording 'r2' is an archive offset"),
        (
            {"wav_scp": "r1 ../a.wav\n\nr2 ../missing.wav\n"},
            r"wav.scp line 3: audio file .*missing.wav of recording 'r2'",
        ),
        ({"wav_scp": "r1 ../a.wav\nr1 ../a.wav\n"}, r"wav.scp line 2: id 'r1' repeats the id of line 1"),
        ({"wav_scp": "r1\n"}, r"wav.scp line 1: expected 2 fields"),
        ({"text": "r1 hello\nr9 world\n"}, r"text line 2: utterance 'r9' is not a recording of .*wav.scp"),
        ({"text": "r1 hello\nr1 again\n"}, r"text line 2: id 'r1' repeats the id of line 1"),
        ({"text": "r1 hello\nr2\n"}, r"text line 2: utterance 'r2' has an empty transcript"),
        ({"segments": "s1 r1 0 0.05\n"}, r"text line 1: utterance 'r1' is not in .*segments"),
        ({"text": "s1 hi\n", "segments": "s1 r1 0\n"}, r"segments line 1: expected 4 fields"),
        (
            {"text": "s1 hi\n", "segments": "s1 r1 0 0.5s\n"},
            r"segments line 1: start '0' and end '0.5s' must be numbers",
        ),
        ({"text": "s1 hi\n", "segments": "\ns1 r1 0.5 0.2\n"}, r"segments line 2: segment \[0.5, 0.2\] s must satisfy"),
        ({"text": "s1 hi\n", "segments": "s1 r7 0 0.1\n"}, r"segments line 1: recording 'r7' is not in .*wav.scp"),
    ],
)
def test_malformed_directories_name_file_and_line(tmp_path, audio, files, message):
    contents = {"wav_scp": f"r1 ../{audio}\nr2 ../{audio}\n", "text": "r1 hello\nr2 world\n", **files}
    with pytest.raises(DataError, match=message):
        read_kaldi_dir(write(tmp_path / "data", **contents))


def test_missing_directory_and_files(tmp_path, audio):
    with pytest.raises(DataError, match=r"Kaldi data directory .*nowhere does not exist"):
        read_kaldi_dir(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"Kaldi file .*text does not exist"):
        read_kaldi_dir(write(tmp_path / "data", wav_scp=f"r1 ../{audio}\n"))
    (tmp_path / "data" / "text").write_bytes(b"r1 \xff\xfe\n")
    with pytest.raises(DataError, match=r"Kaldi file .*text is not UTF-8"):
        read_kaldi_dir(tmp_path / "data")


def test_empty_transcripts_error_skip_or_keep(tmp_path, audio):
    data = write(
        tmp_path / "data", wav_scp=f"r1 ../{audio}\nr2 ../{audio}\nr3 ../{audio}\n", text="r1 hi\nr2   \nr3 yo\n"
    )
    with pytest.raises(DataError, match=re.escape(f"{data / 'text'} line 2: utterance 'r2' has an empty transcript")):
        read_kaldi_dir(data)
    with pytest.warns(UserWarning, match=r"skipped 1 utterances with empty transcripts \(lines \[2\]\)"):
        assert [u.id for u in read_kaldi_dir(data, empty_transcripts="skip")] == ["r1", "r3"]
    assert [u.text for u in read_kaldi_dir(data, empty_transcripts="keep")] == ["hi", "", "yo"]
    with pytest.raises(ConfigError, match="empty_transcripts 'drop'"):
        read_kaldi_dir(data, empty_transcripts="drop")


def test_check_audio_can_be_deferred(tmp_path):
    data = write(tmp_path / "data", wav_scp="r1 /not/there.wav\n", text="r1 hi\n")
    (utterance,) = read_kaldi_dir(data, check_audio=False)
    with pytest.raises(DataError, match="audio file /not/there.wav does not exist"):
        utterance.waveform()
