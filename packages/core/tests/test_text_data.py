"""Text corpora: the offline sources, the standard-format loaders on fixtures, document splits and tokenizers."""

import pytest
import torch

from paperzoo.core.errors import DataError
from paperzoo.core.lm.data import (
    BPETokenizer,
    ByteTokenizer,
    Document,
    TextDataModule,
    TokenWindows,
    read_documents,
    split_by_document,
    stdlib_sources,
    wikipedia_sample,
)


def test_wikipedia_sample_is_real_articles():
    documents = wikipedia_sample()
    assert len(documents) > 90
    titles = {d.title for d in documents}
    assert {"Anarchism", "Autism", "Albedo"} <= titles
    assert not any(d.text.upper().startswith("#REDIRECT") for d in documents)
    assert sum(len(d.text) for d in documents) > 2_000_000


def test_stdlib_source_excludes_tests():
    documents = stdlib_sources()
    titles = {d.title for d in documents}
    assert "json/decoder.py" in titles
    assert not any(t.startswith(("test/", "site-packages/")) for t in titles)


def test_split_is_by_document_deterministic_and_disjoint():
    documents = [Document(f"t{i}", f"text {i}") for i in range(50)]
    train, val = split_by_document(documents, 0.2, seed=1)
    assert len(val) == 10 and len(train) == 40
    assert {d.title for d in train}.isdisjoint({d.title for d in val})
    assert split_by_document(documents, 0.2, seed=1) == (train, val)
    assert split_by_document(documents, 0.2, seed=2) != (train, val)


def test_datamodule_has_no_leakage_between_splits(small_corpus):
    data = TextDataModule(path=str(small_corpus), seq_len=16, batch_size=2, val_fraction=0.3)
    data.prepare_data()
    data.setup()
    val_titles = {d.title for d in data.val_documents}
    assert val_titles.isdisjoint({d.title for d in data.train_documents})
    # every validation token window decodes to text of validation documents only
    val_text = ByteTokenizer().decode(data.val_set.tokens.tolist())
    for document in data.val_documents:
        assert document.text in val_text
    train_text = ByteTokenizer().decode(data.train_set.tokens.tolist())
    for title in val_titles:
        number = title.removeprefix("doc")
        assert f"Article {number} talks" not in train_text


def test_txt_directory_corpus(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text(f"text of {name}")
    assert [d.title for d in read_documents(tmp_path)] == ["a.txt", "b.txt", "c.txt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{"text": "fine"}\n{bad json\n', r"corpus.jsonl:3 is not valid JSON"),
        ('{"text": "ok"}\n{"body": "no text"}\n', r'corpus.jsonl:2 has no string "text" field'),
        ('{"text": "only one"}\n', r"holds 1 non-empty documents"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_documents(path)


def test_missing_and_unknown_formats(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_documents(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="neither a .jsonl file nor a directory"):
        read_documents(tmp_path / "x.csv")


def test_byte_tokenizer_round_trip():
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("héllo")
    assert ids == list("héllo".encode()) and max(ids) < 256
    assert tokenizer.decode([*ids, tokenizer.eos_id]) == "héllo"


def test_bpe_trains_on_train_split_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    documents = [Document(str(i), "the quick brown fox jumps over the lazy dog " * 5) for i in range(20)]
    tokenizer = BPETokenizer(documents, vocab_size=300)
    ids = tokenizer.encode("the lazy fox")
    assert len(ids) < len("the lazy fox") and max(ids) < 300
    assert tokenizer.decode(ids) == "the lazy fox"
    assert len(list(tmp_path.glob("tokenizers/bpe-300-*.json"))) == 1  # cached for the next run


def test_token_windows_shift_by_seq_len():
    windows = TokenWindows(torch.arange(10), seq_len=3)
    assert len(windows) == 3
    assert windows[1].tolist() == [3, 4, 5, 6]
    with pytest.raises(DataError, match="shorter than one window"):
        TokenWindows(torch.arange(3), seq_len=3)
