"""Long real documents with key-value facts stated far back and queried later: LongMem's recall test bed.

The paper ("Augmenting Language Models with Long-Term Memory", arXiv:2306.07174) shows memory helps where a fact
is further back than the local window. Here each example is a window of `n_segments x segment_len` bytes of a real
document (Wikipedia sample articles, or Python standard-library files), into which `n_facts` sentences
"The code QZK=4821. " are inserted in the first half and the same sentences, in another order, in the second
half. The inserted sentences start after a whitespace byte of the text, and every query starts more than one
segment (the local window) after the end of its fact, so no window holds both. The recall targets are the value
bytes of the queries (`value_mask`); keys and values are random, so only a model that reads the far past can
predict them better than chance. The key sits right before its value ("QZK=4821", not "the code of QZK is 4821"):
the memory is read through the frozen backbone's attention keys, and a small byte-level backbone's keys carry the
last few bytes of context, not the word six bytes back.

Everything is deterministic from the seed; documents are split into train / val / test by document (never by
position in one), so no held-out text, fact or query is ever trained on.
"""

import random
import string
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import Dataset

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import DataError, require
from paperzoo.core.lm.data import ByteTokenizer, Document, split_by_document, stdlib_sources, wikipedia_sample

Source = Literal["wikipedia", "stdlib", "both"]
SNAP = 16  # an insertion waits at most this many bytes for a whitespace boundary


def split_documents(
    documents: list[Document], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Document], list[Document], list[Document]]:
    """(train, val, test) by whole documents: a seeded split of the test documents, then of the validation ones."""
    require(0 < test_fraction < 1, f"test_fraction must be in (0, 1), got {test_fraction}")
    rest, test = split_by_document(documents, test_fraction, seed)
    train, val = split_by_document(rest, val_fraction / (1 - test_fraction), seed + 1)
    return train, val, test


@dataclass(frozen=True)
class FactDocument:
    """One example.

    Attributes:
        tokens: [N + 1] int64 bytes (input = tokens[:-1], target = tokens[1:]).
        value_mask: [N] bool, the target positions that are value bytes of a query.
        facts: (key, value, fact_start, query_start) per fact, start positions in `tokens`.
    """

    tokens: torch.Tensor
    value_mask: torch.Tensor
    facts: tuple[tuple[str, str, int, int], ...]


def fact_sentence(key: str, value: str) -> str:
    return f"The code {key}={value}. "


def insert_facts(
    text: bytes, length: int, segment_len: int, n_facts: int, value_digits: int, rng: random.Random
) -> FactDocument:
    """`length + 1` tokens of `text` with `n_facts` facts in the first half and their queries in the second.

    Args:
        text: the document's bytes (at least `length + 1`).
        length: N, input tokens.
        segment_len: the local window; a query starts more than this many tokens after its fact ends.
        n_facts: facts (and queries) inserted.
        value_digits: digits of each value.
        rng: the source of keys, values and positions.
    """
    keys: list[str] = []
    while len(keys) < n_facts:
        key = "".join(rng.choice(string.ascii_uppercase) for _ in range(3))
        if key not in keys:
            keys.append(key)
    values = ["".join(rng.choice(string.digits) for _ in range(value_digits)) for _ in range(n_facts)]
    sentence = len(fact_sentence("KEY", "0" * value_digits))
    half = length // 2
    # Facts end before half - segment_len / 2 and queries start after half + segment_len / 2 (insertions may wait
    # up to SNAP bytes for a whitespace), so a query is always beyond the local window of its fact.
    fact_region = (0, half - segment_len // 2 - sentence - SNAP)
    query_region = (half + segment_len // 2 + 1, length - sentence - SNAP)
    slot = min(fact_region[1] - fact_region[0], query_region[1] - query_region[0]) // n_facts
    require(
        slot > sentence,
        f"a document of {length} tokens with segment_len {segment_len} has no room for {n_facts} facts",
    )
    order = list(range(n_facts))
    rng.shuffle(order)
    plan: list[tuple[int, int, bool]] = []  # (target position, fact index, is_query)
    for i in range(n_facts):
        plan.append((fact_region[0] + i * slot + rng.randrange(slot - sentence), i, False))
        plan.append((query_region[0] + i * slot + rng.randrange(slot - sentence), order[i], True))
    plan.sort()
    out = bytearray()
    value_positions: list[int] = []
    starts: dict[tuple[int, bool], int] = {}
    cursor, step = 0, 0
    while len(out) < length + 1:
        if (
            step < len(plan)
            and len(out) >= plan[step][0]
            and (out[-1:] in (b" ", b"\n") or len(out) - plan[step][0] >= SNAP)
        ):
            _, fact, is_query = plan[step]
            piece = fact_sentence(keys[fact], values[fact]).encode()
            starts[(fact, is_query)] = len(out)
            if is_query:
                value_start = len(out) + len(piece) - len(values[fact]) - 2  # the value, then ". "
                value_positions.extend(range(value_start, value_start + value_digits))
            out += piece
            step += 1
            continue
        if cursor >= len(text):
            raise DataError(f"a text of {len(text)} bytes is too short for a document of {length + 1} tokens")
        out.append(text[cursor])
        cursor += 1
    tokens = torch.tensor(list(out[: length + 1]), dtype=torch.long)
    value_mask = torch.zeros(length, dtype=torch.bool)
    value_mask[torch.tensor(value_positions) - 1] = True  # target j predicts token j + 1
    facts = tuple((keys[i], values[i], starts[(i, False)], starts[(i, True)]) for i in range(n_facts))
    return FactDocument(tokens, value_mask, facts)


def make_fact_documents(
    documents: list[Document],
    length: int,
    segment_len: int,
    n_facts: int,
    value_digits: int,
    seed: int,
    max_examples: int | None = None,
) -> list[FactDocument]:
    """Examples from non-overlapping windows of the documents, taken round-robin (the first window of every
    document, then the second, ...) so a capped split still spans many documents."""
    rng = random.Random(seed)
    encoded = [document.text.encode("utf-8") for document in documents]
    windows = [
        (w, d) for d, data in enumerate(encoded) for w in range(len(data) // (length + 1))
    ]  # (window index, document)
    windows.sort()
    if not windows:
        raise DataError(f"no document of the split holds a window of {length + 1} bytes")
    examples = []
    for w, d in windows[:max_examples]:
        text = encoded[d][w * (length + 1) : (w + 1) * (length + 1)]
        examples.append(insert_facts(text, length, segment_len, n_facts, value_digits, rng))
    return examples


class FactDataset(Dataset):
    """Items: {"tokens": [N + 1] int64, "value_mask": [N] bool}."""

    def __init__(self, examples: list[FactDocument]):
        self.tokens = torch.stack([e.tokens for e in examples])
        self.value_mask = torch.stack([e.value_mask for e in examples])

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[index], "value_mask": self.value_mask[index]}


class LongMemDataModule(BaseDataModule):
    """Long documents with far-back key-value facts, byte-level, split by document.

    Args:
        source: "wikipedia" (gensim's sample), "stdlib" (Python's source files) or "both".
        path: a user corpus (.jsonl or a directory of .txt files, see `paperzoo.core.lm.data.read_documents`);
            overrides `source`.
        segment_len: the local window (tokens per segment).
        n_segments: segments per document (N = n_segments x segment_len).
        n_facts: facts (and queries) per document.
        value_digits: digits of each value.
        val_fraction, test_fraction: shares of documents held out.
        max_train, max_eval: most examples of the training split and of each held-out split.
        batch_size, num_workers, seed, pin_memory: see `BaseDataModule`; `seed` also seeds the split and facts.
    """

    vocab_size = ByteTokenizer.vocab_size

    def __init__(
        self,
        source: Source = "wikipedia",
        path: str | None = None,
        segment_len: int = 128,
        n_segments: int = 8,
        n_facts: int = 4,
        value_digits: int = 4,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        max_train: int | None = None,
        max_eval: int | None = 64,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(path, batch_size, num_workers, seed, pin_memory)
        require(source in ("wikipedia", "stdlib", "both"), f"source must be wikipedia, stdlib or both, got {source!r}")
        require(
            segment_len > 0 and n_segments >= 3,
            f"need segment_len > 0 and n_segments >= 3, got {segment_len}, {n_segments}",
        )
        require(
            n_facts > 0 and value_digits > 0,
            f"n_facts and value_digits must be positive, got {n_facts}, {value_digits}",
        )
        require(
            val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1,
            f"val_fraction and test_fraction must be positive with a sum below 1, got {val_fraction}, {test_fraction}",
        )
        self.source, self.segment_len, self.n_segments = source, segment_len, n_segments
        self.n_facts, self.value_digits = n_facts, value_digits
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.max_train, self.max_eval = max_train, max_eval

    @property
    def length(self) -> int:
        return self.segment_len * self.n_segments

    def documents(self) -> list[Document]:
        from paperzoo.core.lm.data import read_documents

        if self.path is not None:
            return read_documents(self.path)
        documents: list[Document] = []
        if self.source in ("wikipedia", "both"):
            documents += wikipedia_sample()
        if self.source in ("stdlib", "both"):
            documents += stdlib_sources()
        return documents

    def prepare_data(self) -> None:
        self.documents()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        train, val, test = split_documents(self.documents(), self.val_fraction, self.test_fraction, self.seed)
        make = lambda docs, offset, cap: FactDataset(  # noqa: E731
            make_fact_documents(
                docs, self.length, self.segment_len, self.n_facts, self.value_digits, self.seed + offset, cap
            )
        )
        self.train_set = make(train, 0, self.max_train)
        self.val_set = make(val, 1, self.max_eval)
        self.test_set = make(test, 2, self.max_eval)
