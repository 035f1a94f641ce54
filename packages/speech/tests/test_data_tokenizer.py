"""Tokenizers: fixed special ids, round trips, unknown characters, the word-boundary piece, BPE determinism."""

import pytest

from paperzoo.core.errors import ConfigError
from paperzoo.speech.data.tokenizer import (
    SPECIALS,
    UNK_ID,
    WORD_BOUNDARY,
    BPETokenizer,
    CharTokenizer,
    fit_tokenizer,
)

TRAIN = ["the cat sat on the mat", "a dog ate the hat", "don't stop the music", "the cat and the dog"] * 3


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "cache"))


def test_char_tokenizer_hand_example():
    tokenizer = CharTokenizer.fit(["ba ab", "c"])
    assert tokenizer.vocabulary == [*SPECIALS, WORD_BOUNDARY, "a", "b", "c"]
    assert tokenizer.encode("  ab   c ") == [4, 5, 3, 6]  # a b ▁ c: one boundary between words, none at the ends
    assert tokenizer.encode("abz") == [4, 5, UNK_ID]
    assert tokenizer.decode([4, 5, 3, 6]) == "ab c"
    assert tokenizer.decode([0, 4, 1, 5, 2]) == "ab"  # special ids are skipped


def test_char_tokenizer_round_trip():
    tokenizer = CharTokenizer.fit(TRAIN)
    for text in TRAIN + ["mat  dog   hat", "ca't"]:
        ids = tokenizer.encode(text)
        assert UNK_ID not in ids
        assert tokenizer.decode(ids) == " ".join(text.split())
    assert CharTokenizer(tokenizer.vocabulary).encode("the cat") == tokenizer.encode("the cat")


def test_char_vocabulary_is_validated():
    with pytest.raises(ConfigError):
        CharTokenizer(["a", "b"])
    with pytest.raises(ConfigError):
        CharTokenizer([*SPECIALS, "ab"])


def test_bpe_tokenizer_round_trip_and_pieces():
    tokenizer = BPETokenizer.fit(TRAIN, vocab_size=60)
    assert tuple(tokenizer.vocabulary[:3]) == SPECIALS
    assert len(tokenizer.vocabulary) <= 60
    for text in TRAIN + ["mat dog  hat cat"]:
        ids = tokenizer.encode(text)
        assert min(ids) >= len(SPECIALS)
        assert tokenizer.decode(ids) == " ".join(text.split())
    pieces = tokenizer.pieces("the cat")
    assert pieces[0].startswith(WORD_BOUNDARY) and "".join(pieces) == "▁the▁cat"  # metaspace: "▁" starts a word
    assert "▁the" in tokenizer.vocabulary  # the most frequent word merges into one piece
    assert UNK_ID in tokenizer.encode("zebra")  # z, b, r never seen


def test_bpe_is_deterministic_and_cached(tmp_path, monkeypatch):
    first = BPETokenizer.fit(TRAIN, vocab_size=50).vocabulary
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "fresh"))
    assert BPETokenizer.fit(TRAIN, vocab_size=50).vocabulary == first  # retrained from scratch: same pieces
    assert BPETokenizer.fit(TRAIN, vocab_size=50).vocabulary == first  # from the cache
    assert len(list((tmp_path / "fresh" / "speech" / "tokenizers").iterdir())) == 1


def test_fit_tokenizer_kinds():
    assert isinstance(fit_tokenizer("char", TRAIN), CharTokenizer)
    assert isinstance(fit_tokenizer("bpe", TRAIN, 40), BPETokenizer)
    with pytest.raises(ConfigError, match="'wordpiece'"):
        fit_tokenizer("wordpiece", TRAIN)
    with pytest.raises(ConfigError):
        BPETokenizer.fit(TRAIN, vocab_size=4)
