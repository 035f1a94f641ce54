"""The Wikipedia passage benchmark: cleaning, heading and inverse-cloze queries, the split by article, the cache."""

import pytest

from paperzoo.core.lm.data import Document, wikipedia_sample
from paperzoo.retrieval.data.benchmark import BenchmarkSplits
from paperzoo.retrieval.data.splits import cached_splits, splits_to_json
from paperzoo.retrieval.data.wikipedia import (
    article_benchmark,
    build_passages,
    build_wikipedia_passages,
    clean_line,
    split_sentences,
    wikipedia_passages,
)

TINY = """'''Tiny''' () is a small article written for this test of the benchmark.
It has a lead paragraph with two sentences in it.
Caption of an image

==History==
The history of tiny began long ago in a small town by the river.
Nobody remembers the exact year of its founding at all. People still talk about it.

===Early years===
In the early years tiny grew quickly and many people came to visit it.
The visitors brought books and songs with them every summer.

==References==
* Smith, John, ''A book about tiny things'', Tiny Press, 2001, with many further words in it.
"""


def tiny_article() -> Document:
    return Document("Tiny", TINY)


def test_clean_line_strips_markup_and_empty_brackets():
    assert clean_line("'''Albedo''' () or '''reflection''' is ''white'' .") == "Albedo or reflection is white."
    assert clean_line("* a listed item") == "a listed item"
    assert clean_line("Adobe (;, from Spanish: mud brick) is old.") == "Adobe (from Spanish: mud brick) is old."


def test_split_sentences_keeps_initials_and_abbreviations():
    text = "J. R. R. Tolkien wrote it, e.g. The Hobbit. It sold well! Dr. Who disagreed? Yes."
    expected = ["J. R. R. Tolkien wrote it, e.g. The Hobbit.", "It sold well!", "Dr. Who disagreed?", "Yes."]
    assert split_sentences(text) == expected


def test_heading_and_cloze_queries_on_a_hand_made_article():
    passages = build_passages([tiny_article()], passage_words=20)
    bench = article_benchmark("tiny", passages)
    texts = list(bench.corpus.values())
    # The reference section and the caption are gone, the bold marks and the empty brackets too.
    assert not any("Smith" in t or "Caption" in t or "'''" in t or "()" in t for t in texts)
    by_query = {bench.queries[q]: set(bench.qrels[q]) for q in bench.queries}
    history = {p.doc_id for p in passages if p.path[:1] == ("History",)}
    early = {p.doc_id for p in passages if p.path == ("History", "Early years")}
    assert early and history > early
    assert by_query["Tiny: History"] == history  # a section's query judges its subsections' passages too
    assert by_query["Tiny: History: Early years"] == early
    assert not any("References" in q for q in by_query)
    # Inverse cloze: the lead sentence leaves its passage and becomes a query judging only that passage.
    lead = "Tiny is a small article written for this test of the benchmark."
    assert lead in by_query and len(by_query[lead]) == 1
    (doc_id,) = by_query[lead]
    assert bench.corpus[doc_id] == "It has a lead paragraph with two sentences in it."
    assert "In the early years tiny grew quickly and many people came to visit it." in by_query
    for query in bench.queries.values():
        assert not any(query in t for t in texts)
    assert set(bench.groups.values()) == {"Tiny"}


def test_a_sentence_found_elsewhere_is_not_a_cloze_query():
    copy = Document(
        "Copy", "And so it goes on. Everyone says: The history of tiny began long ago in a small town by the river."
    )
    passages = build_passages([tiny_article(), copy], passage_words=20)
    clozes = {p.cloze for p in passages if p.cloze}
    assert "The history of tiny began long ago in a small town by the river." not in clozes
    assert any(p.text.startswith("The history of tiny began") for p in passages)  # it stayed in its passage


def test_identical_passages_are_kept_once():
    twin = Document("Twin", TINY.replace("'''Tiny'''", "Tiny"))
    passages = build_passages([tiny_article(), twin], passage_words=20)
    texts = [p.text for p in passages]
    assert len(texts) == len(set(texts))


def assert_disjoint(splits: BenchmarkSplits) -> None:
    parts = [splits.train, splits.dev, splits.test]
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            assert not set(a.groups.values()) & set(b.groups.values())
            assert not set(a.corpus.values()) & set(b.corpus.values())
            assert not set(a.queries.values()) & set(b.queries.values())
            assert not set(a.corpus) & set(b.corpus) and not set(a.queries) & set(b.queries)


@pytest.fixture(scope="module")
def sample() -> list[Document]:
    return wikipedia_sample()


def test_real_splits_are_disjoint_sized_and_queries_never_in_the_corpus(sample):
    splits = wikipedia_passages()
    assert_disjoint(splits)
    assert 400 <= len(splits.test.corpus) <= 1500 and 300 <= len(splits.test.queries) <= 1500
    assert len(splits.train.corpus) > 2 * len(splits.test.corpus)
    everything = "\n".join(t for part in (splits.train, splits.dev, splits.test) for t in part.corpus.values())
    for part in (splits.train, splits.dev, splits.test):
        assert set(part.groups) == set(part.corpus)
        queries = list(part.queries.values())
        assert not [q for q in queries[:300] if q in everything]
        assert any(": " in q and len(part.qrels[qid]) >= 1 for qid, q in part.queries.items())


def test_same_seed_same_splits_other_seed_other_split(sample):
    first = build_wikipedia_passages(sample[:12], passage_words=60, seed=3)
    assert splits_to_json(first) == splits_to_json(build_wikipedia_passages(sample[:12], passage_words=60, seed=3))
    other = build_wikipedia_passages(sample[:12], passage_words=60, seed=4)
    assert set(other.test.groups.values()) != set(first.test.groups.values())
    assert_disjoint(first)


def test_cache_returns_the_built_splits_and_rebuilds_a_corrupt_file(sample, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    built = build_wikipedia_passages(sample[:5], passage_words=60)
    calls = []

    def build():
        calls.append(1)
        return built

    first = cached_splits("wikipedia", {"k": 1}, build)
    second = cached_splits("wikipedia", {"k": 1}, build)
    assert len(calls) == 1 and second == first == built
    (cached,) = (tmp_path / "retrieval").glob("wikipedia-*.json")
    cached.write_text(cached.read_text()[:100])  # truncated by a crash of an older writer
    assert cached_splits("wikipedia", {"k": 1}, build) == built and len(calls) == 2
    assert not list((tmp_path / "retrieval").glob(".*.tmp"))


def test_bad_arguments_name_the_value():
    from paperzoo.core.errors import ConfigError

    with pytest.raises(ConfigError, match="max_articles"):
        wikipedia_passages(max_articles=2)
    with pytest.raises(ConfigError, match="dev_fraction"):
        build_wikipedia_passages([tiny_article()] * 3, dev_fraction=0.6, test_fraction=0.5)
