"""Real recordings: KLettres labels from sounds.xml (or file names), the ALSA voice prompts, and clear errors."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.speech.data.audio import SAMPLE_RATE
from paperzoo.speech.data.real import KLETTRES_ROOT, alsa_utterances, klettres_utterances, klettres_words

needs_klettres = pytest.mark.skipif(not (KLETTRES_ROOT / "en").is_dir(), reason="klettres-data is not installed")
needs_alsa = pytest.mark.skipif(not Path("/usr/share/sounds/alsa/Front_Center.wav").is_file(), reason="no alsa-utils")


@needs_klettres
def test_klettres_english_letters_and_syllables():
    utterances = klettres_utterances("en")
    letters = [u for u in utterances if "-alpha-" in u.id]
    syllables = [u for u in utterances if "-syllab-" in u.id]
    assert [u.text for u in letters] == list("abcdefghijklmnopqrstuvwxyz")
    assert {"car", "dog", "sky", "key", "th"} <= {u.text for u in syllables}
    assert len(syllables) == 19 and len({u.id for u in utterances}) == len(utterances) == 45
    assert all(u.audio.stem.lower() == u.text for u in utterances)  # English files are named by their label
    assert klettres_utterances("en", kinds=("syllab",)) == syllables
    assert klettres_words("en", kinds=("syllab",)) == [u.text for u in syllables]
    for utterance in (letters[0], syllables[1]):
        waveform = utterance.waveform()
        assert 0.2 < waveform.numel() / SAMPLE_RATE < 5 and float(waveform.abs().max()) > 0.05


@needs_klettres
def test_klettres_labels_come_from_sounds_xml_not_file_names():
    french = klettres_utterances("fr", kinds=("alpha",))
    assert french[0].audio.name == "a-0.ogg" and french[0].text == "a"
    assert french[1].audio.name == "a-1.ogg" and french[1].text == "b"


def test_klettres_without_sounds_xml_uses_file_names(tmp_path):
    for kind, names in (("alpha", ["B", "A"]), ("syllab", ["Dog", "notes"])):
        (tmp_path / "xx" / kind).mkdir(parents=True)
        for name in names:
            suffix = ".txt" if name == "notes" else ".wav"
            soundfile.write(tmp_path / "xx" / kind / f"{name}{suffix}", np.zeros(800, np.float32), 8000, format="WAV")
    utterances = klettres_utterances("xx", root=tmp_path)
    assert [(u.id, u.text) for u in utterances] == [
        ("klettres-xx-alpha-A", "a"),
        ("klettres-xx-alpha-B", "b"),
        ("klettres-xx-syllab-Dog", "dog"),
    ]


def test_klettres_missing_recordings_and_bad_arguments(tmp_path):
    (tmp_path / "yy").mkdir()
    (tmp_path / "yy" / "sounds.xml").write_text(
        '<klettres><language code="yy"><alphabet><sound name="A" file="yy/alpha/a.ogg"/>'
        '<sound name="B" file="yy/alpha/b.ogg"/></alphabet></language></klettres>'
    )
    (tmp_path / "yy" / "alpha").mkdir()
    soundfile.write(tmp_path / "yy" / "alpha" / "b.ogg", np.zeros(800, np.float32), 8000, format="OGG")
    with pytest.warns(UserWarning, match=r"KLettres yy: 1 recordings .* not installed \(first: .*a.ogg\)"):
        assert [u.text for u in klettres_utterances("yy", root=tmp_path)] == ["b"]
    with pytest.raises(DataError, match=r"KLettres yy \['syllab'\] has no installed recordings"):
        klettres_utterances("yy", kinds=("syllab",), root=tmp_path)
    with pytest.raises(DataError, match=r"KLettres language 'zz' is not in .* \(found \['yy'\]\)"):
        klettres_utterances("zz", root=tmp_path)
    with pytest.raises(ConfigError, match=r"KLettres kinds \['words'\]"):
        klettres_utterances("yy", kinds=("words",), root=tmp_path)
    (tmp_path / "yy" / "sounds.xml").write_text("<klettres><broken>")
    with pytest.raises(DataError, match=r"KLettres index .*sounds.xml is not valid XML"):
        klettres_utterances("yy", root=tmp_path)


@needs_alsa
def test_alsa_voice_prompts():
    utterances = alsa_utterances()
    assert [u.text for u in utterances] == [
        "front center",
        "front left",
        "front right",
        "rear center",
        "rear left",
        "rear right",
        "side left",
        "side right",
    ]
    assert all(u.audio.stem.lower() != "noise" for u in utterances)
    waveform = utterances[0].waveform()
    assert 0.5 < waveform.numel() / SAMPLE_RATE < 3 and float(waveform.abs().max()) > 0.1


def test_alsa_missing_directory(tmp_path):
    with pytest.raises(DataError, match="no ALSA voice prompts"):
        alsa_utterances(tmp_path)
