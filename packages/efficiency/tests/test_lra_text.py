"""LRA byte-level text: bytes as tokens, docstrings by package with files never shared across splits, balanced
classes; the aclImdb and TSV/CSV loaders on fixtures in those layouts."""

import re
from pathlib import Path

import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.core.lm.data import Document
from paperzoo.efficiency.sequence.lra import text as text_module
from paperzoo.efficiency.sequence.lra.text import ByteTextDataModule, docstrings, encode_bytes, windows

FIXTURES = Path(__file__).parent / "fixtures" / "lra"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))


def fake_stdlib() -> list[Document]:
    """Three packages of six files each; every docstring names its file, so a window reveals where it came from."""
    docs = []
    for package in ("alpha", "beta", "gamma"):
        for i in range(6):
            body = " ".join(f"{package}{i}w{j}." for j in range(40 + 10 * i))
            source = f'"""FILE {package}/m{i}.py {body}"""\n\ndef f():\n    """FILE {package}/m{i}.py in f."""\n'
            docs.append(Document(f"{package}/m{i}.py", source))
    docs.append(Document("lonely.py", '"""A top-level module, not a package."""'))
    return docs


def test_bytes_windows_and_docstrings():
    assert encode_bytes(b"ab", 4).tolist() == [98, 99, 0, 0]
    assert encode_bytes("é".encode(), 3).tolist() == [0xC3 + 1, 0xA9 + 1, 0]
    assert encode_bytes(b"abcdef", 3).tolist() == [98, 99, 100]
    assert windows(b"0123456789", 4, 2) == [b"0123", b"2345", b"4567", b"6789"]
    assert windows(b"012345678", 4, 3) == [b"0123", b"2345", b"4567", b"678"]
    assert windows(b"01", 4, 3) == []
    source = '"""Module."""\nclass A:\n    """Class."""\n    def f(self):\n        """Method."""\n'
    assert docstrings(source) == "Module.\n\nClass.\n\nMethod."
    assert docstrings("def broken(:\n") == ""


def test_splits_by_file_and_balanced(cache, monkeypatch):
    monkeypatch.setattr(text_module, "stdlib_sources", fake_stdlib)
    dm = ByteTextDataModule(packages=["alpha", "beta", "gamma"], max_length=128, min_length=32, seed=1)
    assert (dm.vocab_size, dm.num_classes, dm.seq_len) == (257, 3, 128)
    splits = dm.build()
    files_by_split = {}
    for split, fields in splits.items():
        counts = torch.bincount(fields["label"], minlength=3)
        assert counts.min() == counts.max() > 0  # balanced
        files = set()
        for row, label in zip(fields["tokens"], fields["label"], strict=True):
            text = bytes((row[row > 0] - 1).tolist()).decode("utf-8", errors="replace")
            names = {p + i for p, i in re.findall(r"(alpha|beta|gamma)(\d)w", text)}  # the files it came from
            assert names
            assert all(n.startswith(("alpha", "beta", "gamma")[int(label)]) for n in names)
            files |= names
        files_by_split[split] = files
    assert not files_by_split["train"] & files_by_split["test"]
    assert not files_by_split["train"] & files_by_split["val"]
    assert not files_by_split["val"] & files_by_split["test"]
    assert torch.equal(dm.build()["test"]["tokens"], splits["test"]["tokens"])  # deterministic


def test_imdb_layout(cache):
    splits = ByteTextDataModule(path=str(FIXTURES / "aclImdb"), max_length=64, val_fraction=0.2).build()
    assert len(splits["test"]["label"]) == 6 and len(splits["train"]["label"]) + len(splits["val"]["label"]) == 6
    for fields in splits.values():
        for row, label in zip(fields["tokens"], fields["label"], strict=True):
            text = bytes((row[row > 0] - 1).tolist()).decode()
            review = next(p for p in (FIXTURES / "aclImdb").rglob("*.txt") if p.read_text() == text)
            assert int(label) == (review.parent.name == "pos")


def test_table_layout(cache):
    dm = ByteTextDataModule(path=str(FIXTURES / "table"), num_classes=3, max_length=64)
    splits = dm.build()
    assert [len(splits[s]["label"]) for s in ("train", "val", "test")] == [6, 3, 6]
    first = bytes((splits["val"]["tokens"][0][splits["val"]["tokens"][0] > 0] - 1).tolist()).decode()
    assert first == "first document about cats, with a comma (val)" and int(splits["val"]["label"][0]) == 0
    with pytest.raises(DataError, match="label"):
        ByteTextDataModule(path=str(FIXTURES / "table"), num_classes=2).build()


def test_bad_inputs(cache, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        ByteTextDataModule(path=str(tmp_path / "missing")).build()
    with pytest.raises(DataError, match="train.tsv"):
        ByteTextDataModule(path=str(tmp_path)).build()
    (tmp_path / "train.csv").write_text("body,label\nx,0\n")
    (tmp_path / "test.csv").write_text("text,label\nx,0\n")
    with pytest.raises(DataError, match="'text' and 'label'"):
        ByteTextDataModule(path=str(tmp_path)).build()
    monkeypatch.setattr(text_module, "stdlib_sources", fake_stdlib)
    with pytest.raises(DataError, match="'delta'"):
        ByteTextDataModule(packages=["alpha", "delta"]).build()
    with pytest.raises(ConfigError, match="packages"):
        ByteTextDataModule(packages=["alpha"])
