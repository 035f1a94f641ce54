"""The sequence datamodule base: cached build, masks from padding, the split contract."""

import pytest
import torch

from paperzoo.core.errors import DataError
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule


class CountingModule(SequenceDataModule):
    builds = 0

    def __init__(self, size: int = 8, drop_test: bool = False, batch_size: int = 4):
        super().__init__(batch_size=batch_size)
        self.save_hyperparameters()
        self.vocab_size, self.num_classes, self.seq_len = 5, 2, 6

    def build(self):
        type(self).builds += 1
        tokens = torch.randint(1, 5, (self.hparams.size, 6))
        tokens[:, -2:] = 0  # padding
        split = {"tokens": tokens, "label": tokens[:, 0] % 2}
        return (
            {"train": split, "val": split} if self.hparams.drop_test else {"train": split, "val": split, "test": split}
        )


def test_build_is_cached_and_masks_padding(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    CountingModule.builds = 0
    first = CountingModule(size=8)
    first.setup()
    second = CountingModule(size=8, batch_size=2)  # loader settings do not change the data
    second.setup()
    assert CountingModule.builds == 1
    assert torch.equal(first.train_set[3]["tokens"], second.train_set[3]["tokens"])
    assert first.train_set[0]["mask"].tolist() == [True] * 4 + [False] * 2
    CountingModule(size=9).setup()
    assert CountingModule.builds == 2
    batch = next(iter(first.train_dataloader()))
    assert batch["tokens"].shape == (4, 6) and batch["mask"].dtype == torch.bool


def test_missing_split_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="test"):
        CountingModule(drop_test=True).setup()
