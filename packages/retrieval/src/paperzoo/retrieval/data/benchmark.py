"""`RetrievalBenchmark`: a corpus, queries and relevance judgements (qrels), the shape of a BEIR dataset.

Every benchmark in paperzoo.retrieval (the Wikipedia passages, stdlib code search, a user's BEIR directory) is one
of these per split; methods only ever see this record.
"""

from dataclasses import dataclass, field

import torch

from paperzoo.core.errors import DataError


@dataclass(frozen=True)
class RetrievalBenchmark:
    """One split of a retrieval benchmark.

    Args:
        name: e.g. "wikipedia/test".
        corpus: document id -> text (a BEIR title is prepended to its text).
        queries: query id -> text.
        qrels: query id -> {document id: graded relevance > 0}; every query has at least one relevant document,
            and every judged document is in `corpus`.
        groups: document id -> group label (the article or module it came from), for methods that train a
            classifier over documents (stationary representations); empty when the source has none.
    """

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    groups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for qid in self.queries:
            if not self.qrels.get(qid):
                raise DataError(f"{self.name}: query {qid!r} has no relevant document in the qrels")
        for qid, judged in self.qrels.items():
            if qid not in self.queries:
                raise DataError(f"{self.name}: the qrels judge query {qid!r}, which is not among the queries")
            for doc_id in judged:
                if doc_id not in self.corpus:
                    raise DataError(
                        f"{self.name}: the qrels of query {qid!r} name document {doc_id!r}, not in the corpus"
                    )

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    def relevance(self) -> torch.Tensor:
        """[Q, N] graded relevance in the order of `query_ids` x `doc_ids`, for `metrics.retrieval_metrics`."""
        column = {doc_id: j for j, doc_id in enumerate(self.corpus)}
        matrix = torch.zeros(len(self.queries), len(self.corpus), dtype=torch.long)
        for i, qid in enumerate(self.queries):
            for doc_id, grade in self.qrels[qid].items():
                matrix[i, column[doc_id]] = grade
        return matrix

    def pairs(self) -> list[tuple[str, str]]:
        """(query text, relevant document text) for every judged pair: the contrastive training examples."""
        return [(self.queries[q], self.corpus[d]) for q, judged in self.qrels.items() for d in judged]


@dataclass(frozen=True)
class BenchmarkSplits:
    """train/dev/test of one benchmark, split by source document (article, module) so no text is shared."""

    train: RetrievalBenchmark
    dev: RetrievalBenchmark
    test: RetrievalBenchmark
