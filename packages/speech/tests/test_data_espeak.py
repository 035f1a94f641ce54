"""The espeak-ng corpus generator: noise at an exact SNR (measured on the stored audio), deterministic recipes
independent of the worker count, cache hits without re-synthesis, atomic writes and clear errors."""

import math

import pytest
import soundfile
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.speech.data import espeak
from paperzoo.speech.data.audio import SAMPLE_RATE, read_audio
from paperzoo.speech.data.espeak import EspeakCorpusConfig, add_noise, espeak_corpus, espeak_plan

SENTENCES = ["the dog saw a car", "my key", "sit on the sky", "no gas here"]


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "speech" / "espeak"


def snr_db(clean: torch.Tensor, noisy: torch.Tensor, fit_scale: bool = False) -> float:
    """10 log10(P_clean / P_noise) of `noisy` = k (clean + noise): k = 1, or (`fit_scale`, for stored audio that the
    generator may have rescaled below full scale, which leaves the SNR unchanged) fitted by least squares, which
    is off by ~sqrt(P_noise / P_clean / samples), a few hundredths of a dB here."""
    clean, noisy = clean.double(), noisy.double()
    k = float(noisy @ clean / (clean @ clean)) if fit_scale else 1.0
    noise = noisy / k - clean
    return 10 * math.log10(float(clean.pow(2).mean() / noise.pow(2).mean()))


def test_add_noise_white_hits_the_snr_and_follows_the_generator():
    t = torch.arange(8000) / SAMPLE_RATE
    clean = 0.3 * torch.sin(2 * math.pi * 300 * t)
    for target in (0.0, 6.0, 20.0):
        noisy = add_noise(clean, target, torch.Generator().manual_seed(0))
        assert snr_db(clean, noisy) == pytest.approx(target, abs=1e-3)
        noise = noisy - clean  # 10 log10 of a power ratio (not 20 log10): at 20 dB the noise RMS is 1/10th
        assert float(noise.pow(2).mean().sqrt() / clean.pow(2).mean().sqrt()) == pytest.approx(10 ** (-target / 20))
    same = add_noise(clean, 10.0, torch.Generator().manual_seed(1))
    assert torch.equal(same, add_noise(clean, 10.0, torch.Generator().manual_seed(1)))
    assert not torch.equal(same, add_noise(clean, 10.0, torch.Generator().manual_seed(2)))


def test_add_noise_recording_is_tiled_circularly_and_scaled():
    clean = 0.2 * torch.sin(torch.arange(1000) * 0.05)
    recording = torch.randn(300, generator=torch.Generator().manual_seed(0))
    noisy = add_noise(clean, 5.0, torch.Generator().manual_seed(3), noise=recording)
    added = noisy - clean
    assert snr_db(clean, noisy) == pytest.approx(5.0, abs=1e-3)
    assert torch.allclose(added[300:], added[:-300], atol=1e-6)  # a 300-sample noise repeats every 300 samples
    offset = int(torch.randint(300, (1,), generator=torch.Generator().manual_seed(3)))
    scale = float(added[0] / recording[offset])
    assert torch.allclose(added[:300], scale * torch.roll(recording, -offset), atol=1e-6)
    with pytest.raises(DataError, match="silent"):
        add_noise(clean, 5.0, noise=torch.zeros(10))
    with pytest.raises(DataError, match="silent waveform"):
        add_noise(torch.zeros(10), 5.0)


def test_plan_is_seeded_per_utterance_and_spans_the_config():
    config = EspeakCorpusConfig(speeds=(120, 220), pitches=(20, 80), snr_db=(0, 30), noise_kinds=("white", "alsa"))
    sentences = [f"word {i}" for i in range(60)]
    plan = espeak_plan(sentences, config)
    assert plan == espeak_plan(sentences, config)
    assert plan[:7] == espeak_plan(sentences[:7], config)  # an utterance's draw depends on its index only
    assert plan != espeak_plan(sentences, EspeakCorpusConfig(**{**config.__dict__, "seed": 1}))
    assert [u.id for u in plan[:2]] == ["espeak0-000000", "espeak0-000001"]
    assert len({u.voice for u in plan}) > 3 and {u.voice for u in plan} <= set(config.voices)
    assert all(120 <= u.speed <= 220 and 20 <= u.pitch <= 80 and 0 <= u.snr_db <= 30 for u in plan)
    assert {u.noise_kind for u in plan} == {"white", "alsa"}
    half = espeak_plan(sentences, EspeakCorpusConfig(snr_db=10, noise_probability=0.5))
    noisy = sum(u.snr_db is not None for u in half)
    assert 10 < noisy < 50 and all(u.snr_db in (None, 10.0) for u in half)
    clean = espeak_plan(sentences, EspeakCorpusConfig())
    assert all(u.snr_db is None and u.noise_kind is None for u in clean)
    # the cache key is the recipe: the id does not matter, every audio parameter does
    assert plan[0].key() == type(plan[0])(**{**plan[0].__dict__, "id": "other"}).key()
    assert plan[0].key() != type(plan[0])(**{**plan[0].__dict__, "pitch": plan[0].pitch + 1}).key()


def test_config_validation_names_the_value():
    for bad, message in [
        (dict(speeds=(60, 100)), r"speeds range \(60, 100\)"),
        (dict(pitches=(50, 40)), r"pitches range \(50, 40\)"),
        (dict(snr_db=(20, 10)), r"snr_db range"),
        (dict(snr_db=(1, 2, 3)), r"snr_db \(1, 2, 3\)"),
        (dict(noise_kinds=("pink",)), "noise_kinds"),
        (dict(noise_probability=1.5), "noise_probability 1.5"),
        (dict(voices=()), "at least one voice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            EspeakCorpusConfig(**bad)
    single = EspeakCorpusConfig(voices="en-us", speeds=150, pitches=[40, 60], snr_db=12, noise_kinds="alsa")
    assert (single.voices, single.speeds, single.pitches, single.snr_db) == (("en-us",), (150, 150), (40, 60), (12, 12))
    with pytest.raises(DataError, match="sentence 1 is empty"):
        espeak_plan(["fine", "  "], EspeakCorpusConfig())


def test_corpus_is_deterministic_across_workers_and_cached(private_cache, tmp_path, monkeypatch, capsys):
    config = EspeakCorpusConfig(snr_db=(5, 25), noise_kinds=("white", "alsa"), seed=7)
    first = espeak_corpus(SENTENCES, config, workers=3, progress=True)
    assert "espeak-ng corpus" in capsys.readouterr().err  # the tqdm bar
    assert [u.text for u in first] == SENTENCES
    assert all(u.audio.parent == private_cache and u.audio.is_file() for u in first)
    assert not list(private_cache.glob("*.tmp")) and not list(private_cache.glob(".*"))  # atomic: no leftovers
    audio = [u.audio.read_bytes() for u in first]

    # another cache, one worker: the same bytes
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "other"))
    again = espeak_corpus(SENTENCES, config, workers=1, progress=False)
    assert [u.audio.read_bytes() for u in again] == audio

    # back in the first cache: every file is found, espeak-ng never runs
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(espeak, "synthesize", lambda *args, **kwargs: calls.append(args) or torch.full((1600,), 0.1))
    assert espeak_corpus(SENTENCES, config, workers=2, progress=False) == first
    assert calls == []
    # a changed recipe (another seed draws other voices) is synthesized anew
    espeak_corpus(SENTENCES[:1], config, seed=8, progress=False)
    assert len(calls) == 1


def test_stored_audio_has_the_requested_snr(private_cache):
    sentences = ["the quick brown fox jumps over the lazy dog", "a second sentence for the alsa noise"]
    for kind in ("white", "alsa"):
        for target in (3.0, 15.0):
            config = EspeakCorpusConfig(voices=("en-us",), speeds=160, pitches=50, snr_db=target, noise_kinds=kind)
            for utterance in espeak_corpus(sentences, config, progress=False):
                clean = espeak.synthesize(utterance.text, "en-us", 160, 50)
                stored = utterance.waveform()
                assert stored.shape == clean.shape
                assert soundfile.info(str(utterance.audio)).samplerate == SAMPLE_RATE
                assert snr_db(clean, stored, fit_scale=True) == pytest.approx(target, abs=0.2), (kind, target)


def test_alsa_noise_is_the_real_recording(private_cache):
    config = EspeakCorpusConfig(voices=("en-us",), speeds=160, pitches=50, snr_db=0.0, noise_kinds="alsa")
    text = "a sentence long enough to outlast the one and a half seconds of noise"
    (utterance,) = espeak_plan([text], config)
    noisy = utterance.render()
    clean = espeak.synthesize(text, "en-us", 160, 50)
    added = noisy - clean
    noise = read_audio(espeak.ALSA_NOISE)
    assert noise.numel() < clean.numel()  # so the recording is tiled
    # the added noise is a scaled circular window of Noise.wav, from the start the recipe's seed draws
    offset = int(torch.randint(noise.numel(), (1,), generator=torch.Generator().manual_seed(utterance.noise_seed)))
    reference = noise[(torch.arange(clean.numel()) + offset) % noise.numel()]
    correlation = torch.dot(added, reference) / (added.norm() * reference.norm())
    assert float(correlation) > 0.9999


def test_a_failing_utterance_leaves_no_partial_file(private_cache, monkeypatch):
    def broken(text, *args, **kwargs):
        if text == "my key":
            raise DataError("espeak-ng failed on voice 'x': boom")
        return torch.full((1600,), 0.1)

    monkeypatch.setattr(espeak, "synthesize", broken)
    with pytest.raises(DataError, match="boom"):
        espeak_corpus(SENTENCES, workers=1, progress=False)
    written = sorted(private_cache.iterdir())
    assert all(p.suffix == ".wav" and not p.name.startswith(".") for p in written)
    assert all(soundfile.info(str(p)).frames == 1600 for p in written)
