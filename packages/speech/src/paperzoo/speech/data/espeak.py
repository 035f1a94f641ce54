"""Speech synthesis with espeak-ng (Debian `espeak-ng`): one utterance, any voice, speed and pitch.

espeak-ng is a formant synthesizer: ~10 ms per utterance on one core, 131 voices, each with variants (`en-us+f2`),
so whole ASR corpora are generated at run time rather than shipped.

`espeak_corpus` turns a list of sentences into a cached corpus: each utterance gets a voice (accent + variant),
a speed, a pitch and optionally additive noise at a signal-to-noise ratio (white Gaussian noise, or the real ALSA
`Noise.wav` recording), all drawn deterministically from the corpus seed and the utterance's index.
"""

import functools
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import soundfile
import torch
from tqdm.auto import tqdm

from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.core.io import atomic_open, cache_dir
from paperzoo.speech.data.audio import SAMPLE_RATE, read_audio, resample
from paperzoo.speech.data.utterance import Utterance


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


# --- corpora ---------------------------------------------------------------------------------------------------
#: English voices with variants (`espeak-ng --voices=en`, `--voices=variant`): accents x male/female/klatt timbres.
DEFAULT_VOICES = (
    "en-us",
    "en-us+f2",
    "en-us+m3",
    "en-gb",
    "en-gb+f3",
    "en-gb-scotland+m2",
    "en-gb-x-rp+f4",
    "en-029+m5",
    "en-us-nyc+klatt",
    "en-gb-x-gbclan+f1",
)
#: the ALSA test recording of pink-ish noise, the real noise source (`noise_kinds=("alsa",)`).
ALSA_NOISE = Path("/usr/share/sounds/alsa/Noise.wav")
NOISE_KINDS = ("white", "alsa")
# bumped when the generated audio changes for the same parameters, so stale caches are not reused.
_CACHE_VERSION = 1


def add_noise(
    waveform: torch.Tensor,
    snr_db: float,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """`waveform` [S] plus noise scaled to a signal-to-noise ratio of `snr_db` (powers over the whole waveform).

    Args:
        waveform: the clean signal [S].
        snr_db: 10 log10(mean(waveform^2) / mean(noise^2)) of the result.
        generator: draws the white noise, or the random start in `noise`.
        noise: a recording [M] to add instead of white Gaussian noise; it is tiled when shorter than the
            waveform and read from a random start (circularly), then rescaled to the SNR.
    """
    if waveform.numel() == 0:
        raise DataError("cannot add noise to an empty waveform")
    if noise is None:
        added = torch.randn(waveform.shape, generator=generator, dtype=waveform.dtype)
    else:
        if noise.numel() == 0 or not bool(noise.abs().max() > 0):
            raise DataError("the noise recording is empty or silent")
        offset = int(torch.randint(noise.numel(), (1,), generator=generator))
        index = (torch.arange(waveform.numel()) + offset) % noise.numel()  # circular read: tiles a short noise
        added = noise.to(waveform.dtype)[index]
    signal_power = waveform.pow(2).mean()
    noise_power = added.pow(2).mean()
    if not bool(signal_power > 0):
        raise DataError("cannot set an SNR on a silent waveform")
    scale = torch.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return waveform + scale * added


@dataclass(frozen=True)
class EspeakCorpusConfig:
    """How the utterances of an espeak-ng corpus vary. Each utterance draws its own voice, speed, pitch and noise
    from these, deterministically from (`seed`, its index), so a corpus is the same whatever `workers` is.

    Args:
        voices: espeak-ng voices with optional variants, drawn uniformly.
        speeds: words per minute, a range (low, high) drawn uniformly (integers), or one value.
        pitches: espeak-ng pitch 0-99, a range (low, high) drawn uniformly (integers), or one value.
        snr_db: None for clean speech; else the SNR in dB, one value or a range (low, high) drawn uniformly.
        noise_kinds: which noises to draw from: "white" (Gaussian) and/or "alsa" (the ALSA `Noise.wav` recording).
        noise_probability: the fraction of utterances that get noise (the rest stay clean).
        seed: the corpus seed.
        sample_rate: of the stored WAVs (Hz).
    """

    voices: tuple[str, ...] = DEFAULT_VOICES
    speeds: tuple[int, int] | int = (130, 200)
    pitches: tuple[int, int] | int = (30, 70)
    snr_db: tuple[float, float] | float | None = None
    noise_kinds: tuple[str, ...] = ("white",)
    noise_probability: float = 1.0
    seed: int = 0
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        # accept one value for a range, a string for one voice or kind, and lists (from YAML) for tuples
        object.__setattr__(self, "voices", (self.voices,) if isinstance(self.voices, str) else tuple(self.voices))
        object.__setattr__(self, "speeds", _as_range(self.speeds, "speeds"))
        object.__setattr__(self, "pitches", _as_range(self.pitches, "pitches"))
        if self.snr_db is not None:
            object.__setattr__(self, "snr_db", _as_range(self.snr_db, "snr_db"))
        kinds = (self.noise_kinds,) if isinstance(self.noise_kinds, str) else tuple(self.noise_kinds)
        object.__setattr__(self, "noise_kinds", kinds)
        require(len(self.voices) > 0, "an espeak corpus needs at least one voice")
        for name, (low, high), lo, hi in (("speeds", self.speed_range, 80, 450), ("pitches", self.pitch_range, 0, 99)):
            require(lo <= low <= high <= hi, f"{name} range ({low}, {high}) must lie within [{lo}, {hi}], low <= high")
        if self.snr_range is not None:
            require(self.snr_range[0] <= self.snr_range[1], f"snr_db range {self.snr_db} must have low <= high")
        bad = [kind for kind in self.noise_kinds if kind not in NOISE_KINDS]
        require(not bad and len(self.noise_kinds) > 0, f"noise_kinds {self.noise_kinds} must be from {NOISE_KINDS}")
        require(0.0 <= self.noise_probability <= 1.0, f"noise_probability {self.noise_probability} must be in [0, 1]")
        require(self.sample_rate > 0, f"sample_rate {self.sample_rate} must be > 0")

    @property
    def speed_range(self) -> tuple[int, int]:
        return cast(tuple[int, int], self.speeds)

    @property
    def pitch_range(self) -> tuple[int, int]:
        return cast(tuple[int, int], self.pitches)

    @property
    def snr_range(self) -> tuple[float, float] | None:
        return cast(tuple[float, float] | None, self.snr_db)


def _as_range(value: Any, name: str) -> tuple[Any, Any]:
    bounds = (value, value) if isinstance(value, int | float) else tuple(value)
    require(len(bounds) == 2, f"{name} {value} must be one value or a (low, high) range")
    return bounds[0], bounds[1]


@dataclass(frozen=True)
class EspeakUtterance:
    """The full recipe of one synthesized utterance: everything its audio depends on (and its cache key)."""

    id: str
    text: str
    voice: str
    speed: int
    pitch: int
    snr_db: float | None
    noise_kind: str | None
    noise_seed: int
    sample_rate: int

    def key(self) -> str:
        """A hash of the recipe (not the id) and the espeak-ng version: the cached WAV's name."""
        recipe = asdict(self)
        del recipe["id"]
        recipe.update(version=_CACHE_VERSION, espeak=espeak_version())
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]

    def render(self) -> torch.Tensor:
        """The waveform [S]: espeak-ng speech, plus noise at `snr_db` when set."""
        waveform = synthesize(self.text, self.voice, self.speed, self.pitch, self.sample_rate)
        if self.snr_db is None:
            return waveform
        generator = torch.Generator().manual_seed(self.noise_seed)
        noise = None if self.noise_kind == "white" else _alsa_noise(self.sample_rate)
        return add_noise(waveform, self.snr_db, generator, noise)


@functools.cache
def espeak_version() -> str:
    """`espeak-ng --version` (part of every cache key: another version speaks differently)."""
    done = subprocess.run([espeak_executable(), "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


@functools.cache
def _alsa_noise(sample_rate: int) -> torch.Tensor:
    if not ALSA_NOISE.is_file():
        raise DataError(f"the ALSA noise recording {ALSA_NOISE} is missing (apt-get install alsa-utils)")
    return read_audio(ALSA_NOISE, sample_rate)


def espeak_plan(sentences: Sequence[str], config: EspeakCorpusConfig) -> list[EspeakUtterance]:
    """The recipe of each utterance of the corpus (ids `espeak<seed>-<index>`), drawn from `config`."""
    plan = []
    for index, text in enumerate(sentences):
        if not text.strip():
            raise DataError(f"sentence {index} is empty: an espeak corpus needs a transcript for every utterance")
        rng = random.Random(f"{config.seed}/{index}")  # per utterance: independent of order and workers
        noisy = config.snr_db is not None and rng.random() < config.noise_probability
        plan.append(
            EspeakUtterance(
                id=f"espeak{config.seed}-{index:06d}",
                text=text,
                voice=rng.choice(config.voices),
                speed=rng.randint(*config.speed_range),
                pitch=rng.randint(*config.pitch_range),
                snr_db=round(rng.uniform(*config.snr_range), 3) if noisy and config.snr_range is not None else None,
                noise_kind=rng.choice(config.noise_kinds) if noisy else None,
                noise_seed=rng.randrange(2**31) if noisy else 0,
                sample_rate=config.sample_rate,
            )
        )
    return plan


def _render_to_cache(utterance: EspeakUtterance, directory: Path) -> Path:
    path = directory / f"{utterance.key()}.wav"
    if path.is_file():
        return path
    waveform = utterance.render()
    peak = float(waveform.abs().max())
    if peak > 0.999:  # noise pushed it past full scale: rescale (the SNR is unchanged) rather than clip
        waveform = waveform * (0.999 / peak)
    with atomic_open(path, "wb") as handle:
        soundfile.write(handle, waveform.numpy(), utterance.sample_rate, format="WAV", subtype="PCM_16")
    return path


def espeak_corpus(
    sentences: Sequence[str],
    config: EspeakCorpusConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> list[Utterance]:
    """Synthesize (or find cached) one utterance per sentence, in parallel; the result is in sentence order.

    WAVs (16-bit PCM at `config.sample_rate`) are cached atomically under
    `cache_dir("speech", "espeak")/<recipe hash>.wav`, keyed by the utterance recipe and the espeak-ng version,
    so a run killed mid-way resumes, and corpora sharing utterances share files.

    Args:
        sentences: the transcripts (normalized text, `paperzoo.speech.data.text`).
        config: how voices, speeds, pitches and noise vary; `overrides` replace its fields
            (`espeak_corpus(s, voices=("en-us",), seed=3)`).
        workers: parallel espeak-ng processes (threads wait on them); default min(8, CPU count).
        progress: show a tqdm bar.
    """
    config = replace(config or EspeakCorpusConfig(), **overrides)
    plan = espeak_plan(sentences, config)
    directory = cache_dir("speech", "espeak")
    workers = workers or min(8, os.cpu_count() or 1)
    require(workers >= 1, f"workers {workers} must be >= 1")
    paths: list[Path | None] = [None] * len(plan)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(plan), desc="espeak-ng corpus", unit="utt", disable=not progress) as bar,
    ):
        futures = {pool.submit(_render_to_cache, utterance, directory): i for i, utterance in enumerate(plan)}
        for future in as_completed(futures):
            paths[futures[future]] = future.result()
            bar.update()
    return [Utterance(u.id, u.text, path) for u, path in zip(plan, paths, strict=True) if path is not None]
