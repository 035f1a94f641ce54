"""The BEIR reader and writer: the hand-made fixture, a round trip, and a clear error for each malformed input."""

import shutil
from pathlib import Path

import pytest

from paperzoo.core.errors import DataError
from paperzoo.retrieval.data.beir import load_beir, load_beir_splits, write_beir
from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark

FIXTURE = Path(__file__).parent / "fixtures" / "beir_tiny"


def test_fixture_loads_as_beir_reads_it():
    test = load_beir(FIXTURE, "test")
    assert test.name == "beir_tiny/test"
    assert len(test.corpus) == 6  # the whole corpus is searched
    assert test.corpus["d1"] == "Aardvark The aardvark is a nocturnal burrowing mammal native to Africa."
    assert test.corpus["d4"] == "Alkanes are saturated hydrocarbons."  # empty title: the text alone
    assert test.queries == {"q4": "unit of electric current", "q5": "saturated hydrocarbons"}  # q6: no qrels
    assert test.qrels == {"q4": {"d5": 1}, "q5": {"d4": 1}}  # the score-0 judgement marks d6 non-relevant
    train = load_beir(FIXTURE, "train")
    assert list(train.queries) == ["q1", "q2", "q3"] and train.qrels["q1"] == {"d1": 2}
    assert train.groups == {}


def test_round_trip_write_then_load(tmp_path):
    original = load_beir(FIXTURE, "test")
    write_beir(original, tmp_path / "copy")
    again = load_beir(tmp_path / "copy", "test")
    assert (again.corpus, again.queries, again.qrels) == (original.corpus, original.queries, original.qrels)


def test_round_trip_of_splits_writes_three_qrels_over_one_corpus(tmp_path):
    def bench(name: str, n: int) -> RetrievalBenchmark:
        return RetrievalBenchmark(
            f"toy/{name}",
            {f"{name}{n}": f"doc {name} é"},
            {f"q{name}": f"query {name}"},
            {f"q{name}": {f"{name}{n}": 1}},
        )

    splits = BenchmarkSplits(bench("train", 1), bench("dev", 2), bench("test", 3))
    write_beir(splits, tmp_path)
    assert sorted(p.name for p in (tmp_path / "qrels").iterdir()) == ["dev.tsv", "test.tsv", "train.tsv"]
    loaded = load_beir_splits(tmp_path)
    for name in ("train", "dev", "test"):
        part, original = getattr(loaded, name), getattr(splits, name)
        assert part.queries == original.queries and part.qrels == original.qrels
        assert len(part.corpus) == 3  # BEIR: one corpus for every split


def test_without_dev_qrels_a_seeded_part_of_train_is_held_out():
    splits = load_beir_splits(FIXTURE, dev_fraction=0.3, seed=0)
    assert len(splits.dev.queries) == 1 and len(splits.train.queries) == 2
    assert not set(splits.dev.queries) & set(splits.train.queries)
    assert set(splits.dev.queries) | set(splits.train.queries) == {"q1", "q2", "q3"}
    assert load_beir_splits(FIXTURE, dev_fraction=0.3, seed=0).dev.queries == splits.dev.queries
    assert splits.test.queries.keys() == {"q4", "q5"}


def broken_copy(tmp_path: Path, file: str, text: str) -> Path:
    root = tmp_path / "beir"
    shutil.copytree(FIXTURE, root)
    (root / file).write_text(text)
    return root


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": \n', r"corpus.jsonl:2 is not valid JSON"),
        ("corpus.jsonl", '{"_id": "d1", "title": "t"}\n', r'corpus.jsonl:1 has no string "text" field'),
        ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', r"corpus.jsonl:2 repeats"),
        ("queries.jsonl", '{"text": "no id"}\n', r'queries.jsonl:1 has no string "_id" field'),
        ("qrels/test.tsv", "q4\td5\t1\n", r"test.tsv:1 must be the header"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq4\td5\n", r"test.tsv:2 has 2 tab-separated fields"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq4\td5\t1\nq9\td5\t1\n", r"test.tsv:3 judges query 'q9'"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq4\td9\t1\n", r"test.tsv:2 judges document 'd9'"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq4\td5\t0.5\n", r"test.tsv:2 has score '0.5', expected an int"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq5\td6\t0\n", r"test.tsv judges no document relevant"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, file, text, message):
    with pytest.raises(DataError, match=message):
        load_beir(broken_copy(tmp_path, file, text), "test")


def test_missing_files_and_splits(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_beir(tmp_path / "nowhere")
    root = broken_copy(tmp_path, "corpus.jsonl", "")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(DataError, match=r"corpus.jsonl does not exist"):
        load_beir(root)
    with pytest.raises(DataError, match=r"dev.tsv does not exist; the qrels splits there are \['test', 'train'\]"):
        load_beir(FIXTURE, "dev")
    no_train = tmp_path / "no_train"
    shutil.copytree(FIXTURE, no_train)
    (no_train / "qrels" / "train.tsv").unlink()
    with pytest.raises(DataError, match=r"no qrels/train.tsv \(it has \['test'\]\)"):
        load_beir_splits(no_train)
