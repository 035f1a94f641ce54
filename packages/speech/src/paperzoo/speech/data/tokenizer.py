"""Token ids shared by every recognizer, and the id -> text mapping the metrics use.

A vocabulary is a list of pieces indexed by id. The first three are fixed: 0 is the CTC blank (and the padding
of feature-side tensors), 1 is <sos/eos> for autoregressive decoding, 2 is <unk>. Word boundaries are the piece
"▁" (characters) or a leading "▁" (BPE, metaspace style), so decoding is one rule for both.

Tokenizers (fitted on the training transcripts): `CharTokenizer` (characters, "▁" between words) and
`BPETokenizer` (Hugging Face `tokenizers` BPE with the metaspace pre-tokenizer); both have `.vocabulary`,
`encode(text) -> ids` and `decode(ids) -> text`.
"""

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from paperzoo.core.errors import ConfigError, require
from paperzoo.core.io import atomic_write_text, cache_dir

if TYPE_CHECKING:
    import tokenizers

BLANK = "<blank>"
SOS_EOS = "<sos/eos>"
UNK = "<unk>"
SPECIALS = (BLANK, SOS_EOS, UNK)
BLANK_ID, SOS_EOS_ID, UNK_ID = 0, 1, 2
#: the padding of target token tensors; losses ignore it.
IGNORE_ID = -1
WORD_BOUNDARY = "▁"


def ids_to_text(vocabulary: Sequence[str], ids: Iterable[int]) -> str:
    """The text of token `ids` (special ids are skipped): pieces joined, "▁" read as a space."""
    pieces = (vocabulary[i] for i in ids if i >= len(SPECIALS))
    return " ".join("".join(pieces).replace(WORD_BOUNDARY, " ").split())


def _digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


class CharTokenizer:
    """Characters, with "▁" between words: "hi you" -> h i ▁ y o u.

    Text is split on whitespace (so runs of spaces and the ends do not matter); a character not seen when the
    tokenizer was fitted becomes <unk>.

    Args:
        vocabulary: the pieces by id: `SPECIALS`, then "▁", then one character each (`fit` builds it).
    """

    def __init__(self, vocabulary: Sequence[str]):
        vocabulary = list(vocabulary)
        if tuple(vocabulary[: len(SPECIALS)]) != SPECIALS or len(set(vocabulary)) != len(vocabulary):
            raise ConfigError(f"a character vocabulary starts with {SPECIALS} and has no repeats, got {vocabulary[:5]}")
        if any(len(piece) != 1 for piece in vocabulary[len(SPECIALS) :]):
            raise ConfigError("every non-special piece of a character vocabulary is one character")
        self.vocabulary = vocabulary
        self.index = {piece: i for i, piece in enumerate(vocabulary)}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> "CharTokenizer":
        """The characters of `texts` (the training transcripts), sorted, after the specials and "▁"."""
        characters = {character for text in texts for character in text if not character.isspace()}
        characters.discard(WORD_BOUNDARY)
        return cls([*SPECIALS, WORD_BOUNDARY, *sorted(characters)])

    def pieces(self, text: str) -> list[str]:
        return list(WORD_BOUNDARY.join(text.replace(WORD_BOUNDARY, " ").split()))

    def encode(self, text: str) -> list[int]:
        return [self.index.get(piece, UNK_ID) for piece in self.pieces(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return ids_to_text(self.vocabulary, ids)


class BPETokenizer:
    """Byte-pair encoding trained with Hugging Face `tokenizers` on the training transcripts, metaspace style:
    whitespace becomes "▁" prefixed to each word ("▁the", "▁c", "at"), as SentencePiece does.

    The trainer's special tokens are `SPECIALS`, so ids 0-2 are the shared blank, <sos/eos> and <unk>; characters
    not seen in training become <unk>. A fitted tokenizer is cached (atomically) by its training text and size.

    Args:
        tokenizer: a fitted `tokenizers.Tokenizer` (`fit` builds one).
    """

    def __init__(self, tokenizer: "tokenizers.Tokenizer"):
        self.tokenizer = tokenizer
        by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        self.vocabulary = [piece for piece, _ in by_id]
        if tuple(self.vocabulary[: len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"a BPE vocabulary starts with {SPECIALS}, got {self.vocabulary[: len(SPECIALS)]}")

    @classmethod
    def fit(cls, texts: Sequence[str], vocab_size: int = 256) -> "BPETokenizer":
        """Train on `texts` up to `vocab_size` pieces (specials included; a small corpus may give fewer)."""
        import tokenizers
        from tokenizers import decoders, models, pre_tokenizers, trainers

        require(vocab_size > len(SPECIALS) + 1, f"a BPE vocabulary needs more than 4 pieces, got {vocab_size}")
        texts = [" ".join(text.split()) for text in texts]
        cached = cache_dir("speech", "tokenizers") / f"bpe-{vocab_size}-{_digest(texts)}.json"
        if cached.exists():
            return cls(tokenizers.Tokenizer.from_file(str(cached)))
        tokenizer = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        atomic_write_text(cached, tokenizer.to_str())
        return cls(tokenizer)

    def pieces(self, text: str) -> list[str]:
        return self.tokenizer.encode(" ".join(text.split())).tokens

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(" ".join(text.split())).ids

    def decode(self, ids: Iterable[int]) -> str:
        return ids_to_text(self.vocabulary, ids)


#: tokenizer kinds by name (the datamodule's `tokenizer` argument).
TOKENIZERS = ("char", "bpe")


def fit_tokenizer(kind: str, texts: Sequence[str], vocab_size: int = 256) -> CharTokenizer | BPETokenizer:
    """A `kind` ("char" or "bpe") tokenizer fitted on `texts`; `vocab_size` applies to BPE only."""
    if kind == "char":
        return CharTokenizer.fit(texts)
    if kind == "bpe":
        return BPETokenizer.fit(texts, vocab_size)
    raise ConfigError(f"unknown tokenizer {kind!r}; expected one of {list(TOKENIZERS)}")
