"""LongMem's data: facts placed beyond the local window, value targets that decode to the values, determinism and
a split by document."""

import random

import pytest
import torch

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError
from paperzoo.core.lm.data import Document
from paperzoo.efficiency.sequence.longmem.data import (
    FactDataset,
    fact_sentence,
    insert_facts,
    make_fact_documents,
    split_documents,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread (two spinning threads on a shared 2-core machine were 20x slower here)."""
    with torch_threads(1):
        yield


WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
]


def text(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    out = ""
    while len(out) < size:
        out += rng.choice(WORDS) + rng.choice([" ", " ", "\n"])
    return out.encode()[:size]


@pytest.mark.parametrize(("segment_len", "n_segments", "n_facts"), [(32, 8, 2), (64, 8, 4), (128, 4, 3)])
def test_facts_are_placed_beyond_the_local_window(segment_len, n_segments, n_facts):
    length = segment_len * n_segments
    for seed in range(5):
        example = insert_facts(text(seed, length + 1), length, segment_len, n_facts, 4, random.Random(seed))
        data = bytes(example.tokens.tolist())
        assert len(example.tokens) == length + 1 and len(example.facts) == n_facts
        for key, value, fact_start, query_start in example.facts:
            sentence = fact_sentence(key, value).encode()
            assert data[fact_start : fact_start + len(sentence)] == sentence
            assert data[query_start : query_start + len(sentence)] == sentence
            fact_end = fact_start + len(sentence)
            # Beyond the window: more than one segment between the fact's end and the query, so never in one segment.
            assert query_start - fact_end > segment_len
            assert fact_start // segment_len < query_start // segment_len
        # The value targets are exactly the query values' bytes, in order (target j predicts token j + 1).
        targets = example.tokens[1:][example.value_mask]
        expected = "".join(value for _, value, _, query in sorted(example.facts, key=lambda f: f[3]))
        assert bytes(targets.tolist()).decode() == expected


def test_keys_are_distinct_and_insertions_start_after_whitespace():
    example = insert_facts(text(7, 1025), 1024, 128, 6, 4, random.Random(0))
    keys = [key for key, *_ in example.facts]
    assert len(set(keys)) == len(keys)
    data = bytes(example.tokens.tolist())
    for _, _, fact_start, query_start in example.facts:
        for start in (fact_start, query_start):
            assert data[start - 1 : start] in (b" ", b"\n")


def test_no_room_for_the_facts_is_a_config_error():
    with pytest.raises(ConfigError, match="no room"):
        insert_facts(text(0, 129), 128, 32, 4, 4, random.Random(0))


def test_examples_are_deterministic_from_the_seed():
    documents = [Document(str(i), text(i, 3000).decode()) for i in range(4)]
    a = FactDataset(make_fact_documents(documents, 256, 32, 2, 4, seed=3))
    b = FactDataset(make_fact_documents(documents, 256, 32, 2, 4, seed=3))
    c = FactDataset(make_fact_documents(documents, 256, 32, 2, 4, seed=4))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.value_mask, b.value_mask)
    assert not torch.equal(a.tokens, c.tokens)
    assert len(a) == 4 * (3000 // 257)
    assert set(a[0]) == {"tokens", "value_mask"}


def test_split_is_by_document():
    documents = [Document(f"doc{i}", f"text {i}") for i in range(50)]
    train, val, test = split_documents(documents, 0.1, 0.1, seed=0)
    titles = [{d.title for d in split} for split in (train, val, test)]
    assert len(titles[1]) == 5 and len(titles[2]) == 5 and len(titles[0]) == 40
    assert not (titles[0] & titles[1]) and not (titles[0] & titles[2]) and not (titles[1] & titles[2])
    assert split_documents(documents, 0.1, 0.1, seed=0) == (train, val, test)
