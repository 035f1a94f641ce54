"""Read and write the BEIR format (Thakur et al., "BEIR: A Heterogenous Benchmark for Zero-shot Evaluation of
Information Retrieval Models", arXiv:2104.08663), the standard layout of retrieval benchmarks:

```
<dir>/corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."} per line ("title" may be missing or "")
<dir>/queries.jsonl       {"_id": "q1", "text": "..."} per line (other fields such as "metadata" are ignored)
<dir>/qrels/<split>.tsv   header "query-id<TAB>corpus-id<TAB>score", then one integer-graded judgement per line
```

As in BEIR's `GenericDataLoader`, a split keeps only the queries judged in its qrels file, the whole corpus is
searched, and a document's title is prepended to its text (`"<title> <text>"`). Judgements with score <= 0 mark
non-relevant documents: they are read and checked but not kept, and a query left without a relevant document is
dropped. Every malformed input raises a `DataError` naming the file and line.
"""

import json
import random
from pathlib import Path

from paperzoo.core.errors import DataError
from paperzoo.core.io import atomic_write_text
from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark

QRELS_HEADER = ("query-id", "corpus-id", "score")


def read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """The records of a JSON-lines file, each checked to be an object with string (or integer id) `fields`."""
    if not path.is_file():
        raise DataError(f"BEIR file {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError as err:
            raise DataError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number} is not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number} is not a JSON object")
        for name in fields:
            value = record.get(name)
            if name == "_id" and isinstance(value, int) and not isinstance(value, bool):
                record[name] = str(value)
            elif not isinstance(value, str):
                raise DataError(f'{path}:{number} has no string "{name}" field')
        if "title" in record and not isinstance(record["title"], str | None):
            raise DataError(f'{path}:{number} has a "title" that is not a string')
        record["line"] = number
        records.append(record)
    return records


def read_records(path: Path, fields: tuple[str, ...], what: str) -> dict[str, dict]:
    """id -> record of corpus.jsonl or queries.jsonl; a repeated id is a `DataError`."""
    records: dict[str, dict] = {}
    for record in read_jsonl(path, fields):
        if record["_id"] in records:
            raise DataError(f"{path}:{record['line']} repeats {what} id {record['_id']!r}")
        records[record["_id"]] = record
    return records


def read_corpus(path: Path) -> dict[str, str]:
    """doc id -> "<title> <text>" (the text alone when the title is missing or empty)."""
    records = read_records(path / "corpus.jsonl", ("_id", "text"), "document")
    return {doc_id: " ".join(p for p in (r.get("title") or "", r["text"]) if p) for doc_id, r in records.items()}


def read_queries(path: Path) -> dict[str, str]:
    return {qid: r["text"] for qid, r in read_records(path / "queries.jsonl", ("_id", "text"), "query").items()}


def qrels_splits(path: Path) -> list[str]:
    """The splits that have a qrels file in a BEIR directory."""
    return sorted(p.stem for p in (path / "qrels").glob("*.tsv"))


def read_qrels(path: Path, split: str, queries: dict[str, str], corpus: dict[str, str]) -> dict[str, dict[str, int]]:
    """query id -> {doc id: score > 0} of qrels/<split>.tsv, every id checked against the queries and corpus."""
    file = path / "qrels" / f"{split}.tsv"
    if not file.is_file():
        raise DataError(f"BEIR qrels file {file} does not exist; the qrels splits there are {qrels_splits(path)}")
    lines = file.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].strip().split("\t")) != QRELS_HEADER:
        raise DataError(f"{file}:1 must be the header 'query-id<TAB>corpus-id<TAB>score'")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 3:
            raise DataError(f"{file}:{number} has {len(fields)} tab-separated fields, expected 3 (query, doc, score)")
        qid, doc_id, score = fields
        if qid not in queries:
            raise DataError(f"{file}:{number} judges query {qid!r}, which is not in queries.jsonl")
        if doc_id not in corpus:
            raise DataError(f"{file}:{number} judges document {doc_id!r}, which is not in corpus.jsonl")
        try:
            grade = int(score)
        except ValueError as err:
            raise DataError(f"{file}:{number} has score {score!r}, expected an integer") from err
        if grade > 0:
            qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def judged_benchmark(
    name: str, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]]
) -> RetrievalBenchmark:
    """The queries judged relevant to something, in queries.jsonl order, over the whole corpus."""
    kept = {qid: text for qid, text in queries.items() if qid in qrels}
    return RetrievalBenchmark(name, corpus, kept, {qid: qrels[qid] for qid in kept})


def load_beir(path: str | Path, split: str = "test") -> RetrievalBenchmark:
    """One split of a BEIR directory as a `RetrievalBenchmark` named "<directory name>/<split>" (no groups).

    Raises:
        DataError: a missing file, a line that is not JSON or lacks a field, a repeated id, a qrels line naming
            an unknown query or document or with a non-integer score, or a split without any relevant judgement.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"BEIR directory {path} does not exist")
    corpus, queries = read_corpus(path), read_queries(path)
    qrels = read_qrels(path, split, queries, corpus)
    if not qrels:
        raise DataError(f"{path / 'qrels' / f'{split}.tsv'} judges no document relevant (every score <= 0)")
    return judged_benchmark(f"{path.name}/{split}", corpus, queries, qrels)


def load_beir_splits(path: str | Path, dev_fraction: float = 0.1, seed: int = 0) -> BenchmarkSplits:
    """train/dev/test of a BEIR directory, all over its one corpus.

    qrels/train.tsv and qrels/test.tsv are required; without qrels/dev.tsv a seeded `dev_fraction` of the
    training queries (at least one, and at least one left for training) is held out as dev.
    """
    path = Path(path).expanduser()
    splits = qrels_splits(path) if path.is_dir() else []
    for required in ("train", "test"):
        if required not in splits:
            raise DataError(
                f"BEIR directory {path} has no qrels/{required}.tsv (it has {splits}); "
                "training needs train and test qrels (dev is optional)"
            )
    train, test = load_beir(path, "train"), load_beir(path, "test")
    if "dev" in splits:
        return BenchmarkSplits(train, load_beir(path, "dev"), test)
    if len(train.queries) < 2:
        raise DataError(f"{path / 'qrels' / 'train.tsv'} judges one query; holding out a dev split needs two")
    order = sorted(train.queries)
    random.Random(seed).shuffle(order)
    n_dev = min(max(1, round(dev_fraction * len(order))), len(order) - 1)
    held_out = set(order[:n_dev])
    part = {  # queries.jsonl order within each part
        name: {qid: train.qrels[qid] for qid in train.queries if (qid in held_out) == (name == "dev")}
        for name in ("train", "dev")
    }
    name = path.name
    return BenchmarkSplits(
        judged_benchmark(f"{name}/train", train.corpus, train.queries, part["train"]),
        judged_benchmark(f"{name}/dev", train.corpus, train.queries, part["dev"]),
        test,
    )


def write_beir(benchmark: RetrievalBenchmark | BenchmarkSplits, path: str | Path, split: str | None = None) -> Path:
    """Write a benchmark in the BEIR format (atomically, file by file), so other tools can evaluate on it.

    A `RetrievalBenchmark` is written as one qrels split: `split`, or the part of its name after "/" ("test" when
    there is none). `BenchmarkSplits` are written as qrels/train, dev and test over the union of the three
    corpora and query sets (their ids must not clash). Titles are written empty: the title is already part of a
    `RetrievalBenchmark`'s text. Groups are not part of the format and are not written.

    Returns:
        `path`.
    """
    path = Path(path).expanduser()
    if isinstance(benchmark, BenchmarkSplits):
        parts = {"train": benchmark.train, "dev": benchmark.dev, "test": benchmark.test}
    else:
        parts = {split or (benchmark.name.split("/")[-1] if "/" in benchmark.name else "test"): benchmark}
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    for part in parts.values():
        for target, source, what in ((corpus, part.corpus, "document"), (queries, part.queries, "query")):
            for key, text in source.items():
                if any(c in key for c in "\t\r\n"):
                    raise DataError(f"{what} id {key!r} holds a tab or line break, which the BEIR format cannot store")
                if target.setdefault(key, text) != text:
                    raise DataError(f"{what} id {key!r} has two different texts in the benchmarks written to {path}")
    atomic_write_text(
        path / "corpus.jsonl",
        "".join(json.dumps({"_id": k, "title": "", "text": v}, ensure_ascii=False) + "\n" for k, v in corpus.items()),
    )
    atomic_write_text(
        path / "queries.jsonl",
        "".join(json.dumps({"_id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in queries.items()),
    )
    for name, part in parts.items():
        rows = [f"{qid}\t{doc_id}\t{grade}\n" for qid, judged in part.qrels.items() for doc_id, grade in judged.items()]
        atomic_write_text(path / "qrels" / f"{name}.tsv", "\t".join(QRELS_HEADER) + "\n" + "".join(rows))
    return path
