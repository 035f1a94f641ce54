"""SpeechDataModule: the batch contract, a tiny espeak-ng corpus end to end, caching, CMVN, SpecAugment on train
only, and the clear errors for bad Kaldi data (empty transcript, unreadable audio, too-long utterances)."""

import math

import pytest
import soundfile
import torch

from paperzoo.core.errors import DataError
from paperzoo.speech.data import datamodule as datamodule_module
from paperzoo.speech.data.datamodule import SpeechDataModule, collate_speech
from paperzoo.speech.data.features import fbank, lfr
from paperzoo.speech.data.tokenizer import IGNORE_ID, UNK_ID

WORDS = ["yes", "no", "up", "down", "left", "right", "stop", "go", "one", "two", "three", "four"]


def test_collate_pads_to_the_batch_contract():
    items = [
        {"features": torch.ones(3, 2), "tokens": torch.tensor([5, 6]), "audio_seconds": 0.5},
        {"features": 2 * torch.ones(5, 2), "tokens": torch.tensor([7, 8, 9, 4]), "audio_seconds": 1.25},
    ]
    batch = collate_speech(items)
    assert batch["features"].shape == (2, 5, 2) and batch["features"].dtype == torch.float32
    assert batch["features"][0, 3:].eq(0).all() and batch["features"][0, :3].eq(1).all()
    assert batch["feature_lengths"].tolist() == [3, 5] and batch["feature_lengths"].dtype == torch.long
    assert batch["tokens"].tolist() == [[5, 6, IGNORE_ID, IGNORE_ID], [7, 8, 9, 4]]
    assert batch["token_lengths"].tolist() == [2, 4] and batch["token_lengths"].dtype == torch.long
    assert batch["audio_seconds"].tolist() == [0.5, 1.25]


@pytest.fixture(scope="module")
def espeak_module(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERZOO_CACHE", str(tmp_path_factory.mktemp("cache")))
        module = SpeechDataModule(
            vocabulary_size=0,
            extra_words=WORDS,
            train_utterances=8,
            dev_utterances=4,
            test_utterances=4,
            max_words=4,
            batch_size=4,
            synthesis_workers=2,
        )
        module.prepare_data()
        module.setup("fit")
        yield module


def test_tiny_espeak_module_is_fit_ready(espeak_module):
    module = espeak_module
    assert module.num_features == 80 * 7
    assert module.vocabulary[:4] == ["<blank>", "<sos/eos>", "<unk>", "▁"] and module.vocab_size == 20
    assert (len(module.train_set), len(module.val_set), len(module.test_set)) == (8, 4, 4)
    batches = list(module.train_dataloader())
    assert len(batches) == 2
    for batch in batches + list(module.val_dataloader()):
        assert set(batch) == {"features", "feature_lengths", "tokens", "token_lengths", "audio_seconds"}
        features, lengths = batch["features"], batch["feature_lengths"]
        assert features.shape[0] == 4 and features.shape[2] == 560 and features.shape[1] == lengths.max()
        for row, length in zip(features, lengths, strict=True):
            assert row[length:].eq(0).all()  # 0-padded past each length
        assert batch["tokens"].shape[1] == batch["token_lengths"].max()
    # every dev transcript comes back from its tokens
    dev = list(module.val_dataloader())
    decoded = [
        module.tokenizer.decode(tokens[:n].tolist())
        for batch in dev
        for tokens, n in zip(batch["tokens"], batch["token_lengths"], strict=True)
    ]
    assert decoded == module.texts["dev"]


def test_features_are_fbank_lfr_cmvn_of_the_audio(espeak_module):
    module = espeak_module
    utterance = module.utterances("dev")[1]
    waveform = utterance.waveform()
    expected = module.cmvn(lfr(fbank(waveform), 7, 6))
    item = module.val_set[1]
    assert item["features"].shape == (math.ceil((1 + (waveform.numel() - 400) // 160) / 6), 560)
    assert torch.allclose(item["features"], expected, atol=1e-5)
    assert item["audio_seconds"] == pytest.approx(waveform.numel() / 16_000)


def test_cmvn_is_fitted_on_train_only(espeak_module):
    module = espeak_module
    train = torch.cat([module.normalize(f) for f in module.stacked_features(module.utterances("train"), "x")[0]])
    assert torch.allclose(train.mean(0), torch.zeros(560), atol=1e-3)  # train frames: mean 0, std 1
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(560), atol=1e-3)
    dev = torch.cat(module.val_set.features)
    assert not torch.allclose(dev.mean(0), torch.zeros(560), atol=1e-3)  # dev statistics were not used


def test_spec_augment_applies_to_train_reads_only(espeak_module):
    module = espeak_module
    torch.manual_seed(0)
    assert all(module.val_set[i]["features"].equal(module.val_set.features[i]) for i in range(4))
    masked = [module.train_set[i]["features"].eq(0).any().item() for i in range(8) for _ in range(3)]
    assert any(masked)


def test_features_are_cached(espeak_module, monkeypatch):
    def no_fbank(*args, **kwargs):
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(datamodule_module, "fbank", no_fbank)
    features, _ = espeak_module.stacked_features(espeak_module.utterances("test"), "again")
    assert len(features) == 4
    with pytest.raises(AssertionError, match="from the cache"):  # another feature setting is another key
        datamodule_module.compute_fbanks(espeak_module.utterances("test"), num_mel_bins=40)


# --- Kaldi data directories ------------------------------------------------------------------------------------
def write_split(root, split, entries):
    """A Kaldi data directory: wav.scp and text for `entries` = [(id, transcript, seconds or file bytes)]."""
    directory = root / split
    directory.mkdir(parents=True)
    scp, text = [], []
    for uid, transcript, audio in entries:
        path = directory / f"{uid}.wav"
        if isinstance(audio, bytes):
            path.write_bytes(audio)
        else:
            t = torch.arange(int(audio * 16_000)) / 16_000
            soundfile.write(path, (0.3 * torch.sin(2 * math.pi * 440 * t)).numpy(), 16_000)
        scp.append(f"{uid} {path}\n")
        text.append(f"{uid} {transcript}\n")
    (directory / "wav.scp").write_text("".join(scp))
    (directory / "text").write_text("".join(text))


def kaldi_corpus(root, train=None, dev=None, test=None):
    default = [("a1", "ab ba", 0.5), ("a2", "ba", 0.4), ("a3", "a b", 0.6), ("a4", "bab", 0.3)]
    for split, entries in (("train", train), ("dev", dev), ("test", test)):
        write_split(root, split, entries or [(f"{split}-{u}", t, s) for u, t, s in default])
    return root


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "cache"))


def test_kaldi_directories_load(tmp_path, private_cache):
    module = SpeechDataModule(path=str(kaldi_corpus(tmp_path / "data")), batch_size=2, spec_augment=False)
    assert module.vocabulary == ["<blank>", "<sos/eos>", "<unk>", "▁", "a", "b"]
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    assert batch["audio_seconds"].tolist() == pytest.approx([0.5, 0.4])
    assert batch["tokens"][0].tolist() == [4, 5, 3, 5, 4]


def test_empty_transcript_is_named(tmp_path, private_cache):
    path = kaldi_corpus(tmp_path / "data", train=[("good", "ab", 0.5), ("silent-one", "", 0.5)])
    with pytest.raises(DataError, match="silent-one"):
        SpeechDataModule(path=str(path))


def test_unreadable_audio_is_named(tmp_path, private_cache):
    path = kaldi_corpus(tmp_path / "data", dev=[("d1", "ab", 0.5), ("broken", "ba", b"RIFF not really a wav")])
    module = SpeechDataModule(path=str(path), batch_size=2)
    with pytest.raises(DataError, match="broken.wav"):
        module.setup("fit")


def test_too_long_utterances_are_dropped_with_a_warning(tmp_path, private_cache):
    path = kaldi_corpus(tmp_path / "data", train=[("short", "ab", 0.5), ("long", "ba", 2.5), ("mid", "a", 0.9)])
    module = SpeechDataModule(path=str(path), max_seconds=1.0, batch_size=2)
    with pytest.warns(UserWarning, match=r"dropped 1 of 3 train utterances .*'long'"):
        module.setup("fit")
    assert module.train_set.ids == ["short", "mid"]
    everything_long = kaldi_corpus(tmp_path / "other", test=[("t1", "ab", 1.5)])
    with pytest.raises(DataError, match="every test utterance is longer than max_seconds=1.0"):
        SpeechDataModule(path=str(everything_long), max_seconds=1.0).setup("fit")


def test_missing_split_directory(tmp_path, private_cache):
    root = tmp_path / "data"
    write_split(root, "train", [("a", "ab", 0.5)])
    with pytest.raises(DataError, match="dev"):
        SpeechDataModule(path=str(root))


def test_kaldi_fixture_corpus(private_cache):
    """The shipped fixture: segmented train recordings, a 22.05 kHz FLAC and an 8 kHz WAV in test (resampled)."""
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "kaldi"
    module = SpeechDataModule(path=str(fixture), batch_size=2, tokenizer="bpe", bpe_vocab_size=40)
    assert module.texts["train"] == ["the dog saw a car", "my key", "sit on the sky", "no gas"]
    module.setup("test")
    batch = next(iter(module.test_dataloader()))
    assert batch["features"].shape[0] == 2 and batch["features"].shape[2] == 560
    assert batch["feature_lengths"].min() > 0
    tokens = batch["tokens"][1, : batch["token_lengths"][1]].tolist()
    assert tokens[1] == UNK_ID  # "pet dog": no "p" in the training text
    assert module.tokenizer.decode(tokens) == "et dog"
