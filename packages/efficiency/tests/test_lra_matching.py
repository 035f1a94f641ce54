"""LRA byte-level matching: [N, 2, L] pairs, positives from one article and negatives from two, balanced, no
article shared across splits; the AAN release TSV loader on a fixture in that format."""

from pathlib import Path

import pytest
import torch

from paperzoo.core.errors import DataError
from paperzoo.efficiency.sequence.lra.matching import ByteMatchingDataModule, passages

FIXTURES = Path(__file__).parent / "fixtures" / "lra" / "aan"


class FakeArticles(ByteMatchingDataModule):
    """Twelve articles whose every passage starts with its article's tag, e.g. `<A03>`."""

    def documents(self) -> dict[str, str]:
        return {
            f"A{i:02d}": "".join(f"<A{i:02d}> passage {j:03d}".ljust(32, ".") for j in range(3 + i)) for i in range(12)
        }


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))


def article(row: torch.Tensor) -> str:
    return bytes((row[row > 0] - 1).tolist()).decode()[:5]


def test_passages():
    assert passages("abcdefghij", 4) == [b"abcd", b"efgh"]
    assert passages("ab", 4) == []


def test_pairs_labels_and_article_split(cache):
    dm = FakeArticles(num_train=40, num_val=10, num_test=20, max_length=32, val_fraction=0.2, test_fraction=0.2)
    assert (dm.vocab_size, dm.num_classes, dm.seq_len) == (257, 2, 32) and dm.paired
    splits = dm.build()
    seen: dict[str, set[str]] = {}
    for split, fields in splits.items():
        assert fields["tokens"].shape[1:] == (2, 32)
        assert int(fields["label"].sum()) * 2 == len(fields["label"])  # balanced
        arts = set()
        for pair, label in zip(fields["tokens"], fields["label"], strict=True):
            a, b = article(pair[0]), article(pair[1])
            assert (a == b) == bool(label)
            if label:
                assert not torch.equal(pair[0], pair[1])  # two different passages
            arts |= {a, b}
        seen[split] = arts
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]
    again = FakeArticles(num_train=40, num_val=10, num_test=20, max_length=32, val_fraction=0.2, test_fraction=0.2)
    assert torch.equal(again.build()["test"]["tokens"], splits["test"]["tokens"])


def test_aan_release_loader(cache):
    dm = ByteMatchingDataModule(path=str(FIXTURES), max_length=24)
    dm.setup()
    fields = dm.train_set.fields
    assert fields["tokens"].shape == (6, 2, 24) and fields["label"].tolist() == [0, 1, 0, 1, 0, 1]
    first = bytes((fields["tokens"][0, 0] - 1).tolist()).decode()
    assert first == "Abstract train 0: we stu"  # truncated to max_length bytes
    assert len(dm.val_set) == 2 and len(dm.test_set) == 2


def test_bad_inputs(cache, tmp_path):
    with pytest.raises(DataError, match="new_aan_pairs.train.tsv"):
        ByteMatchingDataModule(path=str(tmp_path)).build()
    for name in ("train", "eval", "test"):
        (tmp_path / f"new_aan_pairs.{name}.tsv").write_text("1.0\tid1\tid2\tonly four fields\n")
    with pytest.raises(DataError, match="line 1: expected 5"):
        ByteMatchingDataModule(path=str(tmp_path)).build()
    for name in ("train", "eval", "test"):
        (tmp_path / f"new_aan_pairs.{name}.tsv").write_text("yes\tid1\tid2\ta\tb\n")
    with pytest.raises(DataError, match="not a number"):
        ByteMatchingDataModule(path=str(tmp_path)).build()
