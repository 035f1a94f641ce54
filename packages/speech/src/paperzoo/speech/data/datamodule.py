"""`SpeechDataModule`: utterances -> fbank -> LFR -> global CMVN (-> SpecAugment on train) and tokens, batched
as every recognizer expects.

Sources: by default a synthesized espeak-ng corpus (random sentences over a closed vocabulary of frequent
Wikipedia words, or real Wikipedia sentences; several voices, speeds, pitches and additive noise), or `path`, a
directory holding Kaldi data directories `train/`, `dev/` and `test/` (LibriSpeech, AISHELL, ... prepared by the
user with Kaldi's or ESPnet's scripts).

Batches (the contract of `paperzoo.speech.asr.recognizer`): a dict with
    features        [B, T, F] float, 0-padded (F = num_mel_bins * lfr_m)
    feature_lengths [B] long
    tokens          [B, N] long, IGNORE_ID-padded
    token_lengths   [B] long
    audio_seconds   [B] float

Bad data (checked before any training):
- an empty transcript: `DataError` naming the utterance and its split;
- a missing, unreadable or empty audio file: `DataError` naming the file (from `read_audio`);
- an utterance longer than `max_seconds`: dropped, with one warning per split naming how many and the longest
  (a recognizer's memory grows with length; a corpus with a few long outliers should still train). A split left
  empty is a `DataError`;
- audio shorter than one 25 ms frame: `DataError` naming the utterance.
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from tqdm.auto import tqdm

from paperzoo.core.checks import torch_threads
from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.core.io import atomic_torch_save, cache_dir, load_checkpoint_file
from paperzoo.speech.data.audio import SAMPLE_RATE
from paperzoo.speech.data.features import GlobalCMVN, SpecAugment, fbank, lfr
from paperzoo.speech.data.tokenizer import IGNORE_ID, TOKENIZERS, fit_tokenizer
from paperzoo.speech.data.utterance import Utterance

SPLITS = ("train", "dev", "test")
#: bump when the feature computation changes, so old caches are not reused.
FEATURE_VERSION = 1


class SpeechDataset(Dataset):
    """Normalised features and token ids of utterances, optionally SpecAugmented when read.

    Args:
        features: [T_i, F] per utterance (already LFR-stacked and normalised).
        tokens: token ids per utterance.
        seconds: audio duration per utterance.
        ids: utterance ids.
        augment: applied to each utterance's features on every read (training only).
    """

    def __init__(
        self,
        features: Sequence[torch.Tensor],
        tokens: Sequence[Sequence[int]],
        seconds: Sequence[float],
        ids: Sequence[str],
        augment: SpecAugment | None = None,
    ):
        require(len(features) == len(tokens) == len(seconds) == len(ids), "SpeechDataset parts differ in length")
        self.features, self.seconds, self.ids, self.augment = list(features), list(seconds), list(ids), augment
        self.tokens = [torch.as_tensor(list(t), dtype=torch.long) for t in tokens]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        features = self.features[index]
        if self.augment is not None:
            features = self.augment(features)
        return {"features": features, "tokens": self.tokens[index], "audio_seconds": self.seconds[index]}


def collate_speech(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad a list of `SpeechDataset` items into the batch contract (features 0-padded, tokens IGNORE_ID-padded)."""
    features = [item["features"] for item in items]
    tokens = [item["tokens"] for item in items]
    return {
        "features": pad_sequence(features, batch_first=True, padding_value=0.0),  # [B, T, F]
        "feature_lengths": torch.tensor([f.shape[0] for f in features], dtype=torch.long),  # [B]
        "tokens": pad_sequence(tokens, batch_first=True, padding_value=IGNORE_ID),  # [B, N]
        "token_lengths": torch.tensor([t.numel() for t in tokens], dtype=torch.long),  # [B]
        "audio_seconds": torch.tensor([float(item["audio_seconds"]) for item in items]),  # [B]
    }


def _audio_identity(utterance: Utterance) -> list[Any]:
    """What the features of `utterance` depend on: its file (path, size, modification time) and segment."""
    path = Path(utterance.audio).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError as error:
        raise DataError(
            f"audio file {utterance.audio} of utterance {utterance.id!r} cannot be read: {error}"
        ) from error
    return [utterance.id, str(path), stat.st_size, stat.st_mtime_ns, utterance.start, utterance.end]


def compute_fbanks(
    utterances: Sequence[Utterance], num_mel_bins: int = 80, description: str = "fbank"
) -> tuple[list[torch.Tensor], list[float]]:
    """The fbank [T_i, num_mel_bins] and duration (s) of each utterance, cached atomically under
    `cache_dir("speech", "features")`, keyed by the feature settings and every audio file's path, size,
    modification time and segment (so an edited or regenerated file is recomputed)."""
    key = json.dumps(
        [FEATURE_VERSION, SAMPLE_RATE, num_mel_bins, [_audio_identity(u) for u in utterances]], separators=(",", ":")
    )
    cached = cache_dir("speech", "features") / f"fbank-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
    if cached.exists():
        state = load_checkpoint_file(cached)
        return state["features"], state["seconds"]
    features, seconds = [], []
    for utterance in tqdm(utterances, desc=description, unit="utt", leave=False):
        waveform = utterance.waveform(SAMPLE_RATE)
        with torch_threads(1):  # small FFTs: on a busy machine, 2 spinning threads made fbank 16x slower
            frames = fbank(waveform, SAMPLE_RATE, num_mel_bins)
        if frames.shape[0] == 0:
            raise DataError(
                f"utterance {utterance.id!r} ({utterance.audio}) is {waveform.numel() / SAMPLE_RATE * 1000:.1f} ms "
                "long, shorter than one 25 ms feature frame"
            )
        features.append(frames.clone())
        seconds.append(waveform.numel() / SAMPLE_RATE)
    atomic_torch_save({"features": features, "seconds": seconds}, cached)
    return features, seconds


def check_transcripts(utterances: Sequence[Utterance], split: str) -> None:
    """A `DataError` naming the first utterance of `split` whose transcript is empty, or a repeated id."""
    seen: set[str] = set()
    for utterance in utterances:
        if not utterance.text.strip():
            raise DataError(f"utterance {utterance.id!r} in the {split} split has an empty transcript")
        if utterance.id in seen:
            raise DataError(f"utterance id {utterance.id!r} occurs twice in the {split} split")
        seen.add(utterance.id)


class SpeechDataModule(BaseDataModule):
    """Speech recognition data: a synthesized espeak-ng corpus by default, or Kaldi data directories at `path`.

    The tokenizer is fitted on the training transcripts in `__init__` (text only, cheap), so `vocabulary`,
    `vocab_size` and `num_features` are known before any audio is touched and `paperzoo fit` links them into the
    task. Audio is synthesized in `prepare_data`; features are computed (and cached) in `setup`, CMVN statistics
    are fitted on the training split, and the training set is SpecAugmented on every read.

    Args:
        path: a directory with Kaldi data directories `train/`, `dev/` and `test/` (`wav.scp`, `text`, optional
            `segments`); None for the espeak-ng corpus.
        sentences: espeak corpus text: "vocabulary" (random word sequences over the `vocabulary_size` most frequent
            Wikipedia words plus `extra_words`) or "wikipedia" (real sentences of the Wikipedia sample).
        vocabulary_size: the most frequent Wikipedia words in the espeak corpus vocabulary ("vocabulary" sentences
            only); 0 uses `extra_words` alone (no Wikipedia parsing).
        extra_words: words added to that vocabulary (such as those of a real evaluation set).
        train_utterances, dev_utterances, test_utterances: espeak corpus size per split.
        min_words, max_words: words per espeak sentence.
        voices: espeak-ng voices (None: `espeak.DEFAULT_VOICES`, 10 accents and timbres); each utterance draws one.
        speeds, pitches: (low, high) ranges of words per minute and espeak pitch, drawn per utterance. Slower
            than espeak's default 175 wpm: at 60 ms per LFR frame, fast speech has fewer frames than characters.
        test_voices: voices of the dev and test splits (unseen speakers); None uses `voices`.
        snr_db: additive white noise at this signal-to-noise ratio (dB), a value or a (low, high) range; None
            for clean audio.
        noise_probability: the share of utterances that get noise.
        synthesis_workers: parallel espeak-ng processes (None: the generator's default).
        tokenizer: "char" (characters, "▁" between words) or "bpe" (metaspace BPE of `bpe_vocab_size` pieces).
        bpe_vocab_size: BPE pieces including the specials.
        num_mel_bins: fbank dimensions.
        lfr_m, lfr_n: low-frame-rate stacking (frames stacked, stride); 1, 1 turns it off.
        spec_augment: mask the training features (SpecAugment).
        freq_mask_width, num_freq_masks, time_mask_width, num_time_masks: SpecAugment's masks (mel bins, LFR
            frames).
        max_seconds: drop utterances longer than this (with a warning); None keeps all.
        batch_size, num_workers, seed, pin_memory: see `BaseDataModule`; `seed` also seeds the corpus.

    Attributes:
        vocabulary, vocab_size, num_features, tokenizer: known after `__init__`.
        train_set, val_set (dev), test_set, cmvn: after `setup()`.
    """

    def __init__(
        self,
        path: str | None = None,
        sentences: Literal["vocabulary", "wikipedia"] = "vocabulary",
        vocabulary_size: int = 300,
        extra_words: list[str] | None = None,
        train_utterances: int = 2000,
        dev_utterances: int = 200,
        test_utterances: int = 200,
        min_words: int = 2,
        max_words: int = 6,
        voices: list[str] | None = None,
        speeds: tuple[int, int] = (120, 170),
        pitches: tuple[int, int] = (30, 70),
        test_voices: list[str] | None = None,
        snr_db: tuple[float, float] | float | None = (15.0, 35.0),
        noise_probability: float = 0.5,
        synthesis_workers: int | None = None,
        tokenizer: Literal["char", "bpe"] = "char",
        bpe_vocab_size: int = 256,
        num_mel_bins: int = 80,
        lfr_m: int = 7,
        lfr_n: int = 6,
        spec_augment: bool = True,
        freq_mask_width: int = 30,
        num_freq_masks: int = 1,
        time_mask_width: int = 12,
        num_time_masks: int = 1,
        max_seconds: float | None = 20.0,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(path, batch_size, num_workers, seed, pin_memory)
        if sentences not in ("vocabulary", "wikipedia"):
            raise ConfigError(f"unknown sentences {sentences!r}; expected 'vocabulary' or 'wikipedia'")
        if tokenizer not in TOKENIZERS:
            raise ConfigError(f"unknown tokenizer {tokenizer!r}; expected one of {list(TOKENIZERS)}")
        for name, count in (("train", train_utterances), ("dev", dev_utterances), ("test", test_utterances)):
            require(count >= 1, f"{name}_utterances must be at least 1, got {count}")
        require(1 <= min_words <= max_words, f"word range [{min_words}, {max_words}] must satisfy 1 <= min <= max")
        require(num_mel_bins >= 1, f"num_mel_bins must be positive, got {num_mel_bins}")
        require(lfr_m >= 1 and lfr_n >= 1, f"lfr_m and lfr_n must be >= 1, got {lfr_m} and {lfr_n}")
        require(max_seconds is None or max_seconds > 0, f"max_seconds must be positive or None, got {max_seconds}")
        self.save_hyperparameters()
        self.sentences, self.vocabulary_size, self.extra_words = sentences, vocabulary_size, list(extra_words or [])
        self.split_sizes = {"train": train_utterances, "dev": dev_utterances, "test": test_utterances}
        self.min_words, self.max_words = min_words, max_words
        from paperzoo.speech.data.espeak import DEFAULT_VOICES, EspeakCorpusConfig

        # validates the ranges now, before any audio; dev and test draw from `test_voices` when given
        self.corpus_config = EspeakCorpusConfig(
            voices=tuple(voices or DEFAULT_VOICES),
            speeds=speeds,
            pitches=pitches,
            snr_db=snr_db,
            noise_probability=noise_probability,
            seed=seed,
        )
        self.test_voices = tuple(test_voices) if test_voices else None
        self.synthesis_workers = synthesis_workers
        self.num_mel_bins, self.lfr_m, self.lfr_n, self.max_seconds = num_mel_bins, lfr_m, lfr_n, max_seconds
        self.augment = (
            SpecAugment(freq_mask_width, num_freq_masks, time_mask_width, num_time_masks, stack=lfr_m)
            if spec_augment
            else None
        )
        self._utterances: dict[str, list[Utterance]] = {}
        self.texts = self.split_texts()
        self.tokenizer = fit_tokenizer(tokenizer, self.texts["train"], bpe_vocab_size)
        self.vocabulary: list[str] = self.tokenizer.vocabulary
        self.vocab_size = len(self.vocabulary)
        self.num_features = num_mel_bins * lfr_m
        self.cmvn: GlobalCMVN | None = None

    # --- text (cheap: no audio) ------------------------------------------------------------------------------------
    def split_texts(self) -> dict[str, list[str]]:
        """The transcripts of each split: read from the Kaldi `text` files, or the espeak corpus sentences."""
        if self.path is not None:
            return {split: [u.text for u in self.kaldi_split(split)] for split in SPLITS}
        from paperzoo.speech.data import text

        total = sum(self.split_sizes.values())
        if self.sentences == "wikipedia":
            pool = text.wikipedia_sentences(self.min_words, self.max_words, limit=total, seed=self.seed)
            if len(pool) < total:
                raise ConfigError(
                    f"the Wikipedia sample has {len(pool)} speakable sentences of {self.min_words}-{self.max_words} "
                    f"words, fewer than the {total} utterances asked for"
                )
        else:
            if self.vocabulary_size > 0:
                words = text.default_vocabulary(self.vocabulary_size, self.extra_words)
            else:  # only the given words: no Wikipedia parsing (tiny configs and tests)
                words = list(dict.fromkeys(w for extra in self.extra_words for w in text.normalize_text(extra).split()))
                if not words:
                    raise ConfigError("vocabulary_size=0 needs extra_words: the words of the corpus")
            pool = text.vocabulary_sentences(words, total, self.min_words, self.max_words, seed=self.seed)
        texts, start = {}, 0
        for split in SPLITS:
            texts[split] = pool[start : start + self.split_sizes[split]]
            start += self.split_sizes[split]
        return texts

    def kaldi_split(self, split: str) -> list[Utterance]:
        """The utterances of `path/<split>` (read once), with their transcripts checked."""
        if split not in self._utterances:
            from paperzoo.speech.data.kaldi import read_kaldi_dir

            directory = self.check_path_exists() / split
            if not directory.is_dir():
                raise DataError(f"Kaldi data directory {directory} does not exist (expected train/, dev/ and test/)")
            utterances = read_kaldi_dir(directory)
            if not utterances:
                raise DataError(f"Kaldi data directory {directory} holds no utterances")
            check_transcripts(utterances, f"{split} ({directory})")
            self._utterances[split] = utterances
        return self._utterances[split]

    # --- audio ---------------------------------------------------------------------------------------------------
    def utterances(self, split: str) -> list[Utterance]:
        """The utterances of `split`; for the espeak corpus this synthesizes (or finds cached) audio."""
        if split in self._utterances:
            return self._utterances[split]
        if self.path is not None:
            return self.kaldi_split(split)
        from paperzoo.speech.data.espeak import espeak_corpus

        voices = self.corpus_config.voices if split == "train" or self.test_voices is None else self.test_voices
        utterances = espeak_corpus(
            self.texts[split],
            self.corpus_config,
            workers=self.synthesis_workers,
            voices=voices,
            seed=self.seed + SPLITS.index(split),  # utterance ids espeak<seed>-<index> differ between splits
        )
        check_transcripts(utterances, split)
        self._utterances[split] = utterances
        return utterances

    def within_limit(self, utterances: list[Utterance], split: str) -> list[Utterance]:
        """`utterances` without those longer than `max_seconds` (one warning names how many were dropped)."""
        if self.max_seconds is None:
            return utterances
        durations = [u.duration() for u in utterances]
        kept = [u for u, d in zip(utterances, durations, strict=True) if d <= self.max_seconds]
        if not kept:
            raise DataError(f"every {split} utterance is longer than max_seconds={self.max_seconds}")
        if len(kept) < len(utterances):
            longest = max(range(len(utterances)), key=durations.__getitem__)
            rank_zero_warn(
                f"dropped {len(utterances) - len(kept)} of {len(utterances)} {split} utterances longer than "
                f"max_seconds={self.max_seconds} (the longest: {utterances[longest].id!r}, {durations[longest]:.1f} s)"
            )
        return kept

    def prepare_data(self) -> None:
        for split in SPLITS:  # synthesizes the corpus once (on one process); features are cached by `setup`
            self.utterances(split)

    # --- features ------------------------------------------------------------------------------------------------
    def stacked_features(self, utterances: Sequence[Utterance], description: str) -> tuple[list, list[float]]:
        """LFR-stacked (not yet normalised) features [T'_i, num_features] and durations of `utterances`."""
        fbanks, seconds = compute_fbanks(utterances, self.num_mel_bins, description)
        return [lfr(f, self.lfr_m, self.lfr_n) for f in fbanks], seconds

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """LFR-stacked features [T', F] normalised with the training CMVN (after `setup`)."""
        if self.cmvn is None:
            raise DataError("the CMVN statistics are fitted in setup(); call setup() first")
        return self.cmvn(features)

    def fit_cmvn(self, train: list[Utterance], features: list[torch.Tensor]) -> GlobalCMVN:
        """CMVN statistics of the training features, cached (atomically) by the training audio and settings."""
        key = json.dumps(
            [FEATURE_VERSION, self.num_mel_bins, self.lfr_m, self.lfr_n, [_audio_identity(u) for u in train]],
            separators=(",", ":"),
        )
        cached = cache_dir("speech", "cmvn") / f"cmvn-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
        if cached.exists():
            return GlobalCMVN.load(cached)
        cmvn = GlobalCMVN.fit(features)
        cmvn.save(cached)
        return cmvn

    def dataset(
        self,
        utterances: Sequence[Utterance],
        augment: bool = False,
        name: str = "eval",
        stacked: tuple[list[torch.Tensor], list[float]] | None = None,
    ) -> SpeechDataset:
        """A `SpeechDataset` of any utterances (such as a real evaluation set) through this module's features,
        training CMVN and tokenizer (after `setup`); `max_seconds` is not applied here. `stacked`: their
        `stacked_features` when already computed."""
        stacked_features, seconds = stacked or self.stacked_features(utterances, f"fbank {name}")
        features = [self.normalize(f) for f in stacked_features]
        tokens = [self.tokenizer.encode(u.text) for u in utterances]
        return SpeechDataset(features, tokens, seconds, [u.id for u in utterances], self.augment if augment else None)

    def loader(self, utterances: Sequence[Utterance], batch_size: int | None = None) -> DataLoader:
        """An in-order loader of batches (the batch contract) over `utterances` (see `dataset`)."""
        dataset = self.dataset(utterances)
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, collate_fn=collate_speech)

    def setup(self, stage: str | None = None) -> None:
        if self.cmvn is not None:
            return
        kept = {split: self.within_limit(self.utterances(split), split) for split in SPLITS}
        train = self.stacked_features(kept["train"], "fbank train")
        self.cmvn = self.fit_cmvn(kept["train"], train[0])
        self.train_set = self.dataset(kept["train"], augment=True, stacked=train)
        self.val_set = self.dataset(kept["dev"], name="dev")
        self.test_set = self.dataset(kept["test"], name="test")
        self.warn_untrainable(self.train_set)

    def warn_untrainable(self, dataset: SpeechDataset) -> None:
        """Warn when utterances have fewer feature frames than tokens (CTC cannot align them; LFR divides the
        frame rate by `lfr_n`)."""
        short = sum(f.shape[0] < t.numel() for f, t in zip(dataset.features, dataset.tokens, strict=True))
        if short:
            rank_zero_warn(
                f"{short} of {len(dataset)} training utterances have fewer feature frames than tokens (frame rate "
                f"{100 / self.lfr_n:.1f}/s after LFR): CTC cannot align them; slow the speech, use BPE, or lower lfr_n"
            )

    def make_loader(self, dataset: Dataset, train: bool) -> StatefulDataLoader:
        loader = super().make_loader(dataset, train)
        loader.collate_fn = collate_speech
        return loader
