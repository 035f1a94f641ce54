"""`RetrievalDataModule`: argument checks, the pair set (one pair per positive document) and the batch shapes."""

from pathlib import Path

import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.retrieval.data.benchmark import RetrievalBenchmark
from paperzoo.retrieval.data.module import RetrievalDataModule, positive_pairs

BEIR_TINY = Path(__file__).parent / "fixtures" / "beir_tiny"


def test_source_typo_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"'wikipedia'.*\['wikipedia', 'stdlib'\]"):
        RetrievalDataModule(source="wikipdia")
    with pytest.raises(ConfigError, match="max_documents"):
        RetrievalDataModule(max_documents=1)
    with pytest.raises(ConfigError, match="max_query_length"):
        RetrievalDataModule(max_query_length=1)


def test_one_pair_per_positive_document_with_its_most_specific_query():
    bench = RetrievalBenchmark(
        "toy",
        corpus={"d1": "one", "d2": "two", "d3": "three"},
        queries={"heading": "all of them", "cloze1": "about one", "other": "two or three"},
        qrels={"heading": {"d1": 1, "d2": 1, "d3": 1}, "cloze1": {"d1": 1}, "other": {"d2": 1, "d3": 1}},
    )
    pairs = positive_pairs(bench, seed=0)
    assert pairs == [("cloze1", "d1"), ("other", "d2"), ("other", "d3")]
    assert len({d for _, d in pairs}) == len(pairs)


def test_wikipedia_batches_have_the_contract_shapes_and_train_group_labels():
    module = RetrievalDataModule(source="wikipedia", max_documents=8, batch_size=4, max_doc_length=40)
    assert module.num_groups == len(set(module.splits.train.groups.values())) >= 1  # available before setup
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert set(batch) == {"query", "doc", "label"}
    for key, limit in (("query", 32), ("doc", 40)):
        assert set(batch[key]) == {"input_ids", "attention_mask", "word_ids"}
        assert batch[key]["input_ids"].shape[0] == 4 and batch[key]["input_ids"].shape[1] <= limit
        assert batch[key]["attention_mask"].shape == batch[key]["word_ids"].shape == batch[key]["input_ids"].shape
    assert batch["label"].dtype == torch.long and batch["label"].shape == (4,)
    assert ((batch["label"] >= 0) & (batch["label"] < module.num_groups)).all()
    # Labels follow the document's article; dev documents come from articles never seen in training.
    titles = sorted(set(module.splits.train.groups.values()))
    query, doc, label = module.train_set[0]
    doc_id = module.train_set.pairs[0][1]
    assert titles[label] == module.splits.train.groups[doc_id] and doc == module.splits.train.corpus[doc_id]
    val_batch = next(iter(module.val_dataloader()))
    assert (val_batch["label"] == -1).all()
    assert len(module.train_set) == len({d for _, d in module.train_set.pairs})


def test_beir_directory_without_dev_qrels():
    module = RetrievalDataModule(path=str(BEIR_TINY), batch_size=2, dev_fraction=0.3)
    assert module.num_groups == 0
    module.setup("fit")
    assert len(module.splits.dev.queries) == 1 and len(module.train_set) == 2
    batch = next(iter(module.train_dataloader()))
    assert batch["query"]["input_ids"].shape[0] == 2 and (batch["label"] == -1).all()


def test_beir_directory_without_train_qrels_is_a_clear_error(tmp_path):
    (tmp_path / "qrels").mkdir()
    with pytest.raises(DataError, match=r"no qrels/train.tsv"):
        RetrievalDataModule(path=str(tmp_path)).setup("fit")
    with pytest.raises(DataError, match="does not exist"):
        RetrievalDataModule(path=str(tmp_path / "missing")).setup("fit")


def test_stdlib_source_pairs_docstrings_with_their_functions():
    module = RetrievalDataModule(source="stdlib", max_documents=40, batch_size=4)
    module.setup("fit")
    query, doc, label = module.train_set[0]
    qid, doc_id = module.train_set.pairs[0]
    assert qid == doc_id and module.splits.train.queries[qid] == query and doc.startswith(("def ", "async def "))
    assert 0 <= label < module.num_groups
