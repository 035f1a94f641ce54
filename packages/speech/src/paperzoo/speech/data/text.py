"""Sentence sources for synthesized speech corpora: real sentences from the offline Wikipedia sample, or random
word sequences over a closed vocabulary.

Transcripts are normalized to what a speaker says and a character recognizer can spell: lowercase ASCII letters,
apostrophes inside words, and single spaces. A Wikipedia sentence with a digit, a symbol espeak-ng would read out
("%", "&") or a non-ASCII letter is dropped, not rewritten, so the audio never says words the transcript lacks.

The closed-vocabulary source is what a small ASR model can learn on a CPU budget: `default_vocabulary(300)` is
the 300 most frequent words of the Wikipedia sample, and `extra_words` adds the words of a real evaluation set
(such as the KLettres syllables "car", "dog", "sky") so that set can be scored with the same vocabulary.
"""

import collections
import functools
import random
import re
from collections.abc import Iterable, Sequence

from paperzoo.core.errors import ConfigError, require

#: a normalized word: lowercase ASCII letters, optionally with inner apostrophes ("don't", "o'clock").
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# characters a sentence may contain before normalization: letters, spaces and punctuation espeak-ng does not read.
_SPEAKABLE = re.compile(r"[A-Za-z' ,.;:!?\"()\-]+")
_MARKUP = re.compile(r"\[\[|\]\]|\{\{|\}\}|==|\||\b[A-Za-z]\.[A-Za-z]")  # links, headings, "U.S."
_EMPHASIS = re.compile(r"'{2,}")  # ''italic'' and '''bold''' wiki markup: dropped, the words kept


def normalize_text(text: str) -> str:
    """`text` lowercased, punctuation dropped (inner apostrophes kept), whitespace collapsed."""
    return " ".join(WORD.findall(text.lower().replace("-", " ")))


def split_sentences(text: str) -> list[str]:
    """The sentences of a paragraph-structured `text` (split at . ! ? followed by a capital, and at blank lines)."""
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        sentences.extend(s for s in _SENTENCE_END.split(paragraph) if s)
    return sentences


@functools.cache
def _wikipedia_texts() -> tuple[str, ...]:
    from paperzoo.core.lm.data import wikipedia_sample

    return tuple(document.text for document in wikipedia_sample())


def speakable_sentences(texts: Iterable[str]) -> tuple[str, ...]:
    """The normalized sentences of `texts` that speech can match exactly, in order, duplicates dropped.

    Wiki emphasis quotes are removed and dashes read as spaces; a sentence with other markup (links, headings,
    templates), an abbreviation with dots ("U.S."), a digit, a symbol or a non-ASCII letter is dropped.
    """
    seen: dict[str, None] = {}
    for text in texts:
        for sentence in split_sentences(text):
            sentence = _EMPHASIS.sub("", sentence).replace("\u2013", " ").replace("\u2014", " ")
            if _MARKUP.search(sentence) or not _SPEAKABLE.fullmatch(sentence):
                continue  # wiki markup, digits, symbols or non-ASCII letters: the audio would not match
            normalized = normalize_text(sentence)
            if normalized:
                seen.setdefault(normalized, None)
    return tuple(seen)


@functools.cache
def _wikipedia_sentences() -> tuple[str, ...]:
    return speakable_sentences(_wikipedia_texts())


def wikipedia_sentences(
    min_words: int = 3,
    max_words: int = 12,
    vocabulary: Iterable[str] | None = None,
    limit: int | None = None,
    seed: int | None = None,
) -> list[str]:
    """Normalized sentences of the offline Wikipedia sample with `min_words`..`max_words` words.

    Args:
        min_words, max_words: the word count range (inclusive).
        vocabulary: keep only sentences whose every word is in it (a closed-vocabulary corpus of real sentences).
        limit: return at most this many.
        seed: shuffle (deterministically) before taking `limit`; None keeps the document order.
    """
    require(1 <= min_words <= max_words, f"word range [{min_words}, {max_words}] must satisfy 1 <= min <= max")
    allowed = None if vocabulary is None else set(vocabulary)
    sentences = [
        s
        for s in _wikipedia_sentences()
        if min_words <= len(words := s.split()) <= max_words and (allowed is None or allowed.issuperset(words))
    ]
    if seed is not None:
        random.Random(seed).shuffle(sentences)
    return sentences if limit is None else sentences[:limit]


@functools.cache
def wikipedia_word_counts() -> collections.Counter[str]:
    """How often each normalized word occurs in the speakable sentences of the Wikipedia sample."""
    return collections.Counter(word for sentence in _wikipedia_sentences() for word in sentence.split())


def default_vocabulary(size: int = 300, extra_words: Iterable[str] = (), min_length: int = 1) -> list[str]:
    """The `size` most frequent words of the Wikipedia sample (ties broken alphabetically), then `extra_words`.

    Args:
        size: how many Wikipedia words.
        extra_words: words to add (normalized; those already present are not repeated), such as the words of a
            real evaluation set (`paperzoo.speech.data.real.klettres_words()`).
        min_length: skip shorter Wikipedia words (1 keeps "a").
    """
    require(size >= 0, f"vocabulary size {size} must be >= 0")
    counts = wikipedia_word_counts()
    ranked = sorted((w for w in counts if len(w) >= min_length), key=lambda w: (-counts[w], w))
    require(size <= len(ranked), f"vocabulary size {size} exceeds the {len(ranked)} words of the Wikipedia sample")
    words = ranked[:size]
    present = set(words)
    for extra in extra_words:
        for word in normalize_text(extra).split():
            if word not in present:
                words.append(word)
                present.add(word)
    return words


def vocabulary_sentences(
    vocabulary: Sequence[str],
    count: int,
    min_words: int = 3,
    max_words: int = 8,
    seed: int = 0,
) -> list[str]:
    """`count` random word sequences over `vocabulary`, deterministic from `seed`.

    Words are dealt from successive shuffles of the vocabulary, so every word occurs about equally often (a rare
    extra word is as well covered as "the"); lengths are uniform in [`min_words`, `max_words`].
    """
    require(count >= 0, f"sentence count {count} must be >= 0")
    require(1 <= min_words <= max_words, f"word range [{min_words}, {max_words}] must satisfy 1 <= min <= max")
    words = list(dict.fromkeys(w for w in vocabulary if w))
    if not words:
        raise ConfigError("vocabulary_sentences needs a non-empty vocabulary")
    bad = [w for w in words if normalize_text(w) != w]
    require(not bad, f"vocabulary words {bad[:5]} are not normalized (lowercase letters and inner apostrophes)")
    rng = random.Random(seed)
    deck: list[str] = []
    sentences = []
    for _ in range(count):
        length = rng.randint(min_words, max_words)
        sentence: list[str] = []
        while len(sentence) < length:
            if not deck:
                deck = words[:]
                rng.shuffle(deck)
            sentence.append(deck.pop())
        sentences.append(" ".join(sentence))
    return sentences
