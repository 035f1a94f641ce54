"""Sentence sources: normalization and filtering by hand-made examples, the Wikipedia vocabulary by its counts,
and the balanced, seeded vocabulary sentences."""

import collections

import pytest

from paperzoo.core.errors import ConfigError
from paperzoo.speech.data import text


def test_normalize_text_by_hand():
    assert text.normalize_text("  Don't STOP, the cat's  toys!") == "don't stop the cat's toys"
    assert text.normalize_text("self-governed (mostly); 'quoted'") == "self governed mostly quoted"
    assert text.normalize_text("...") == ""


def test_split_sentences_by_hand():
    paragraph = "The cat sat. It was warm! Was it?\n\nA new   paragraph starts here.\nStill it. end. Next"
    assert text.split_sentences(paragraph) == [
        "The cat sat.",
        "It was warm!",
        "Was it?",
        "A new paragraph starts here.",
        "Still it. end.",  # no split before a lowercase word
        "Next",
    ]


def test_speakable_sentences_drop_what_speech_cannot_match():
    document = (
        "'''Anarchism''' is a philosophy. It began in 1840. The U.S. Army marched. ==History==\n\n"
        "See [[Proudhon]] here. The café was open. Rates rose by 5%. A long\u2014winding road. "
        "It began in the south. It began in the south."
    )
    assert text.speakable_sentences([document]) == (
        "anarchism is a philosophy",  # bold markup stripped, the word kept
        "a long winding road",  # an em dash reads as a space
        "it began in the south",  # the duplicate is dropped
    )


def test_wikipedia_sentences_word_range_seed_and_vocabulary():
    sentences = text.wikipedia_sentences(3, 6)
    assert len(sentences) > 500
    assert all(3 <= len(s.split()) <= 6 for s in sentences)
    assert all(text.normalize_text(s) == s for s in sentences)
    assert len(set(sentences)) == len(sentences)
    shuffled = text.wikipedia_sentences(3, 6, limit=20, seed=1)
    assert shuffled == text.wikipedia_sentences(3, 6, limit=20, seed=1)
    assert shuffled != text.wikipedia_sentences(3, 6, limit=20, seed=2)
    assert shuffled != sentences[:20] and set(shuffled) <= set(sentences)
    vocabulary = text.default_vocabulary(300)
    closed = text.wikipedia_sentences(2, 12, vocabulary=vocabulary)
    assert closed and all(set(s.split()) <= set(vocabulary) for s in closed)
    with pytest.raises(ConfigError, match=r"word range \[5, 2\]"):
        text.wikipedia_sentences(5, 2)


def test_default_vocabulary_is_the_most_frequent_words_plus_extras():
    counts = text.wikipedia_word_counts()
    vocabulary = text.default_vocabulary(300)
    assert len(vocabulary) == len(set(vocabulary)) == 300
    assert vocabulary[0] == "the"
    frequencies = [counts[w] for w in vocabulary]
    assert frequencies == sorted(frequencies, reverse=True)
    assert min(frequencies) >= max(counts[w] for w in counts if w not in set(vocabulary))
    extended = text.default_vocabulary(300, extra_words=["car", "The", "Sky Dog", "car"])
    assert extended[:300] == vocabulary
    new = [w for w in ("car", "sky", "dog") if w not in vocabulary]
    assert extended[300:] == new  # normalized, deduplicated, "the" not repeated
    long_words = text.default_vocabulary(50, min_length=3)
    assert all(len(w) >= 3 for w in long_words) and "the" in long_words and "of" not in long_words
    with pytest.raises(ConfigError, match="exceeds"):
        text.default_vocabulary(10**7)


def test_vocabulary_sentences_are_seeded_ranged_and_balanced():
    vocabulary = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
    sentences = text.vocabulary_sentences(vocabulary, 50, min_words=2, max_words=5, seed=3)
    assert sentences == text.vocabulary_sentences(vocabulary, 50, min_words=2, max_words=5, seed=3)
    assert sentences != text.vocabulary_sentences(vocabulary, 50, min_words=2, max_words=5, seed=4)
    lengths = [len(s.split()) for s in sentences]
    assert min(lengths) == 2 and max(lengths) == 5
    # words are dealt from whole shuffles of the vocabulary: counts differ by at most one
    counts = collections.Counter(w for s in sentences for w in s.split())
    assert set(counts) == set(vocabulary)
    assert max(counts.values()) - min(counts.values()) <= 1
    with pytest.raises(ConfigError, match="not normalized"):
        text.vocabulary_sentences(["Car"], 3)
    with pytest.raises(ConfigError, match="non-empty"):
        text.vocabulary_sentences([], 3)
