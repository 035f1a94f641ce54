"""`RetrievalDataModule`: contrastive (query, positive document) pairs from an offline benchmark or a BEIR directory.

Sources: "wikipedia" (`wikipedia.wikipedia_passages`: heading and inverse-cloze queries over Wikipedia passages),
"stdlib" (`codesearch.stdlib_code_search`: docstring -> function), or `path=`, a BEIR directory
(`beir.load_beir`, qrels/train.tsv required, qrels/dev.tsv optional, qrels/test.tsv required).

Training uses in-batch negatives (`losses.in_batch_contrastive`), so a batch must not hold a second copy of a
query's positive: the pair set has exactly one pair per judged document (its most specific query: the one with
the fewest relevant documents, ties broken by a seeded draw), and every benchmark is deduplicated by text. A
heading query with several relevant passages can still meet one of its other positives as an in-batch negative;
that is the usual false-negative noise of in-batch training, not a duplicate.
"""

import difflib
import random
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import ConfigError, require
from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark
from paperzoo.retrieval.encoder import tokenize

SOURCES = ("wikipedia", "stdlib")


def positive_pairs(benchmark: RetrievalBenchmark, seed: int) -> list[tuple[str, str]]:
    """(query id, document id): one pair per judged document, with its most specific query.

    Each document is paired with the query that judges the fewest documents (an inverse-cloze or docstring query
    before a section heading); ties are broken by a seeded draw. Documents come in corpus order.
    """
    rng = random.Random(seed)
    candidates: dict[str, list[str]] = {}
    for qid, judged in benchmark.qrels.items():
        for doc_id, grade in judged.items():
            if grade > 0:
                candidates.setdefault(doc_id, []).append(qid)
    pairs = []
    for doc_id in benchmark.corpus:
        if doc_id in candidates:
            queries = candidates[doc_id]
            fewest = min(len(benchmark.qrels[q]) for q in queries)
            pairs.append((rng.choice([q for q in queries if len(benchmark.qrels[q]) == fewest]), doc_id))
    return pairs


class PairDataset(Dataset):
    """(query text, document text, group label) for each positive pair of a benchmark.

    Args:
        benchmark: the split.
        group_index: group label -> class index (the training split's groups); documents whose group is not in
            it (every dev/test document: splits are by group) get -1.
        seed: breaks ties in `positive_pairs`.
    """

    def __init__(self, benchmark: RetrievalBenchmark, group_index: dict[str, int], seed: int):
        self.benchmark = benchmark
        self.pairs = positive_pairs(benchmark, seed)
        self.labels = [group_index.get(benchmark.groups.get(doc_id, ""), -1) for _, doc_id in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[str, str, int]:
        qid, doc_id = self.pairs[index]
        return self.benchmark.queries[qid], self.benchmark.corpus[doc_id], self.labels[index]


class PairCollator:
    """Tokenize a list of (query, document, label) into the batch
    {"query": tokenize(queries), "doc": tokenize(documents), "label": LongTensor [B]}."""

    def __init__(self, max_query_length: int, max_doc_length: int):
        self.max_query_length, self.max_doc_length = max_query_length, max_doc_length

    def __call__(self, items: Sequence[tuple[str, str, int]]) -> dict[str, object]:
        queries, documents, labels = zip(*items, strict=True)
        return {
            "query": tokenize(queries, self.max_query_length),  # input_ids, attention_mask, word_ids: [B, Lq]
            "doc": tokenize(documents, self.max_doc_length),  # [B, Ld]
            "label": torch.tensor(labels, dtype=torch.long),  # [B]
        }


class RetrievalDataModule(BaseDataModule):
    """Query-document pairs for contrastive fine-tuning, and the benchmark splits for ranking evaluation.

    The splits are built on first use of `splits`, `num_groups` or `setup()` (cached on disk for the offline
    sources), so the `paperzoo` command can link `num_groups` into a task right after construction.

    Args:
        source: "wikipedia" or "stdlib", the offline benchmark; ignored when `path` is given.
        path: a BEIR directory (corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv); without
            qrels/dev.tsv a seeded `dev_fraction` of the training queries is held out as dev.
        max_documents: use only the first N articles (wikipedia) or modules (stdlib): tiny runs.
        max_query_length, max_doc_length: token limits of the tokenized batch ([CLS] and [SEP] included).
        dev_fraction: the share of training queries held out as dev when a BEIR directory has no dev qrels.
        batch_size, num_workers, seed, pin_memory: see `BaseDataModule`; `seed` also seeds the splits.

    Attributes (after `setup()`):
        splits: the `BenchmarkSplits`.
        num_groups: distinct group labels (articles, modules) in train; 0 for a BEIR directory.
        train_set, val_set, test_set: `PairDataset`s; batches are
            {"query": tokenize(q, max_query_length), "doc": tokenize(d, max_doc_length), "label": LongTensor [B]}
            with label the index of the document's group in train (-1 for groups unseen in train: every dev
            and test document, and every document of a BEIR directory).
        collate: the `PairCollator` the loaders use (for a DataLoader of your own over these sets).
    """

    def __init__(
        self,
        source: str = "wikipedia",
        path: str | None = None,
        max_documents: int | None = None,
        max_query_length: int = 32,
        max_doc_length: int = 128,
        dev_fraction: float = 0.1,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(path, batch_size, num_workers, seed, pin_memory)
        if source not in SOURCES:
            close = difflib.get_close_matches(source, SOURCES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown source {source!r}{hint}; expected one of {list(SOURCES)} or a path= to a BEIR directory"
            )
        require(max_documents is None or max_documents >= 3, f"max_documents must be at least 3, got {max_documents}")
        require(max_query_length >= 2, f"max_query_length must be at least 2, got {max_query_length}")
        require(max_doc_length >= 2, f"max_doc_length must be at least 2, got {max_doc_length}")
        require(0 < dev_fraction < 1, f"dev_fraction must be in (0, 1), got {dev_fraction}")
        self.save_hyperparameters()
        self.source, self.max_documents, self.dev_fraction = source, max_documents, dev_fraction
        self.max_query_length, self.max_doc_length = max_query_length, max_doc_length
        self.collate = PairCollator(max_query_length, max_doc_length)
        self._splits: BenchmarkSplits | None = None

    def build_splits(self) -> BenchmarkSplits:
        if self.path is not None:
            from paperzoo.retrieval.data.beir import load_beir_splits

            return load_beir_splits(self.check_path_exists(), self.dev_fraction, self.seed)
        if self.source == "wikipedia":
            from paperzoo.retrieval.data.wikipedia import wikipedia_passages

            return wikipedia_passages(seed=self.seed, max_articles=self.max_documents)
        from paperzoo.retrieval.data.codesearch import stdlib_code_search

        return stdlib_code_search(seed=self.seed, max_modules=self.max_documents)

    @property
    def splits(self) -> BenchmarkSplits:
        if self._splits is None:
            self._splits = self.build_splits()
        return self._splits

    @property
    def group_index(self) -> dict[str, int]:
        """Training group label -> class index (sorted labels)."""
        return {label: i for i, label in enumerate(sorted(set(self.splits.train.groups.values())))}

    @property
    def num_groups(self) -> int:
        """Distinct group labels in train: the classes of a classifier over documents (0 without groups)."""
        return len(self.group_index)

    def prepare_data(self) -> None:
        self.splits  # noqa: B018 - builds, validates and caches the benchmark on one process

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        groups = self.group_index
        self.train_set = PairDataset(self.splits.train, groups, self.seed)
        self.val_set = PairDataset(self.splits.dev, groups, self.seed)
        self.test_set = PairDataset(self.splits.test, groups, self.seed)

    def make_loader(self, dataset: Dataset, train: bool) -> StatefulDataLoader:
        loader = super().make_loader(dataset, train)
        loader.collate_fn = self.collate
        return loader
