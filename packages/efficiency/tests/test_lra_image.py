"""LRA sequential image: Fashion-MNIST IDX files as pixel sequences (token = grey + 1), downsampling by block means,
disjoint train/val subsets; the IDX reader names missing, foreign and truncated files."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.efficiency.sequence.lra.image import FASHION_MNIST, SequentialImageDataModule, read_idx

FIXTURES = Path(__file__).parent / "fixtures" / "lra" / "fashion_mnist"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))


def test_fixture_layout(cache):
    dm = SequentialImageDataModule(path=str(FIXTURES), num_train=8, num_val=4, num_test=6)
    assert (dm.vocab_size, dm.num_classes, dm.seq_len) == (257, 10, 784)
    splits = dm.build()
    images = read_idx(FIXTURES / "train-images-idx3-ubyte.gz", images=True)
    for split, fields in splits.items():
        assert fields["tokens"].shape[1] == 784
        # the fixture's first pixel is the label: the loader kept images and labels together
        assert torch.equal(fields["tokens"][:, 0] - 1, fields["label"])
        if split != "test":
            for row in fields["tokens"]:
                assert any(np.array_equal(row.numpy() - 1, img.reshape(-1)) for img in images)
    train = {r.numpy().tobytes() for r in splits["train"]["tokens"]}
    assert not train & {r.numpy().tobytes() for r in splits["val"]["tokens"]}


def test_downsample_is_block_mean(cache):
    full = SequentialImageDataModule(path=str(FIXTURES), num_train=8, num_val=4, num_test=6).build()
    small = SequentialImageDataModule(path=str(FIXTURES), num_train=8, num_val=4, num_test=6, downsample=4).build()
    assert small["train"]["tokens"].shape == (8, 49)
    image = (full["train"]["tokens"][0] - 1).reshape(28, 28).double()
    expected = image.reshape(7, 4, 7, 4).mean((1, 3)).round().long().reshape(-1) + 1
    assert torch.equal(small["train"]["tokens"][0], expected)


@pytest.mark.skipif(not Path(FASHION_MNIST).is_dir(), reason="Fashion-MNIST is not installed")
def test_installed_fashion_mnist(cache):
    splits = SequentialImageDataModule(num_train=200, num_val=50, num_test=100, downsample=2).build()
    assert splits["train"]["tokens"].shape == (200, 196) and splits["test"]["label"].max() <= 9
    assert len(splits["train"]["label"].unique()) == 10


def test_errors_name_the_file(cache, tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        SequentialImageDataModule(path=str(tmp_path)).build()
    raw = gzip.decompress((FIXTURES / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw[:1000]))
    with pytest.raises(DataError, match="cut.gz is truncated"):
        read_idx(tmp_path / "cut.gz", images=True)
    with pytest.raises(DataError, match="not an IDX label file"):
        read_idx(FIXTURES / "train-images-idx3-ubyte.gz", images=False)
    (tmp_path / "broken.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="broken.gz"):
        read_idx(tmp_path / "broken.gz", images=True)
    with pytest.raises(ConfigError, match="downsample"):
        SequentialImageDataModule(downsample=3)
