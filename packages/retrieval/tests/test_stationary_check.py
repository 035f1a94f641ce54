"""The claim check's protocol on a hand-made benchmark, and the quick check itself (slow)."""

import dataclasses

import pytest
import torch

from paperzoo.core.errors import DataError
from paperzoo.retrieval.data.benchmark import RetrievalBenchmark
from paperzoo.retrieval.dense.stationary import check


def benchmark(name: str, sizes: dict[str, int]) -> RetrievalBenchmark:
    corpus, groups = {}, {}
    for article, size in sizes.items():
        for i in range(size):
            doc_id = f"{article}-{i:02d}"
            corpus[doc_id], groups[doc_id] = f"{article} passage {i}", article
    first = next(iter(corpus))
    return RetrievalBenchmark(name, corpus, {"q": "query"}, {"q": {first: 1}}, groups)


SETTING = dataclasses.replace(
    check.QUICK, classes=3, train_per_class=6, query_per_class=1, gallery_per_class=2, open_classes=2
)
TRAIN = benchmark("train", {"a": 12, "b": 9, "c": 9, "d": 10, "tiny": 3})
HELD_OUT = [benchmark("dev", {"x": 3, "y": 5}), benchmark("test", {"z": 4, "w": 2})]


def test_protocol_takes_the_largest_articles_and_disjoint_passages():
    protocol = check.build_protocol(TRAIN, HELD_OUT, SETTING, seed=0)
    assert sorted(protocol.class_names) == ["a", "b", "d"]  # the three largest with >= 9 passages
    used = [p for part in protocol.train for p in part] + protocol.closed.query + protocol.closed.gallery
    assert len(used) == len(set(used)) == 3 * 9
    for label, name in enumerate(protocol.class_names):
        assert all(protocol.texts[p].startswith(name) for p in protocol.train[label])
    closed = protocol.closed
    for positions, labels in ((closed.query, closed.query_labels), (closed.gallery, closed.gallery_labels)):
        for p, label in zip(positions, labels.tolist(), strict=True):
            assert protocol.texts[p].startswith(protocol.class_names[label])
    # open set: held-out articles with >= 3 passages, the two largest (y: 5, z: 4)
    open_articles = {protocol.texts[p].split()[0] for p in protocol.open.query + protocol.open.gallery}
    assert open_articles == {"y", "z"}
    assert len(protocol.open.query) == 2 and len(protocol.open.gallery) == 4


def test_protocols_of_several_seeds_share_one_text_list():
    texts: list[str] = []
    first = check.build_protocol(TRAIN, HELD_OUT, SETTING, seed=0, texts=texts)
    second = check.build_protocol(TRAIN, HELD_OUT, SETTING, seed=1, texts=texts)
    assert len(texts) == len(set(texts))
    assert first.texts is second.texts is texts
    assert first.class_names != second.class_names or first.train != second.train


def test_too_few_articles_is_a_data_error():
    with pytest.raises(DataError, match="the check needs 5"):
        check.build_protocol(TRAIN, HELD_OUT, dataclasses.replace(SETTING, classes=5), seed=0)


def test_data_increments_grow_every_class_and_class_increments_add_classes():
    protocol = check.build_protocol(TRAIN, HELD_OUT, SETTING, seed=0)
    sizes = []
    for step in range(3):
        positions, labels, seen = check.step_training_set(protocol, SETTING, step)
        assert seen == 3 and torch.bincount(labels).tolist() == [2 * (step + 1)] * 3
        sizes.append(set(positions))
    assert sizes[0] < sizes[1] < sizes[2]  # each step keeps the earlier passages
    by_class = dataclasses.replace(SETTING, increment="classes")
    seen_per_step = [check.step_training_set(protocol, by_class, step)[2] for step in range(3)]
    assert seen_per_step == [1, 2, 3]
    positions, labels, _ = check.step_training_set(protocol, by_class, 1)
    assert torch.bincount(labels).tolist() == [6, 6]


@pytest.mark.slow
def test_quick_check_runs_and_records_every_variant():
    result = check.check(quick=True)
    assert set(result.baselines) == {"learnable", "bct"}
    assert len(result.criteria) == 3
    for figures in (result.method, *result.baselines.values()):
        assert 0.0 <= figures["AC"] <= 1.0 and 0.0 < figures["self M(phi1,phi1)"] <= 1.0
