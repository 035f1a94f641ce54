"""`BaseDataModule`: offline default source, optional standard-format path, seeded splits, resumable loaders."""

from pathlib import Path

import lightning as L
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from paperzoo.core.data.sampler import ResumableSampler, ShardSampler
from paperzoo.core.errors import DataError, require


class BaseDataModule(L.LightningDataModule):
    """Base of every paperzoo datamodule.

    Subclasses load their default offline source when `path` is None, otherwise the benchmark's standard format
    at `path`; they validate what they read in `prepare_data`/`setup` (raising `DataError` naming the file) and
    set `train_set`, `val_set` and, where they exist, `test_set` and `predict_set`.

    Training batches come from a `ResumableSampler` inside a `StatefulDataLoader`, so a run resumed from a
    mid-epoch checkpoint sees exactly the batches an uninterrupted run would, and a run on R ranks at per-rank
    batch b sees the same global batches as one process at batch R * b.

    Args:
        path: data in the benchmark's standard format; None for the offline default.
        batch_size: samples per batch on each rank.
        num_workers: DataLoader worker processes.
        seed: seeds the splits and the shuffling order.
        pin_memory: DataLoader `pin_memory`.
    """

    train_set: Dataset
    val_set: Dataset
    test_set: Dataset
    predict_set: Dataset

    def __init__(
        self,
        path: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        require(batch_size > 0, f"batch_size must be positive, got {batch_size}")
        require(num_workers >= 0, f"num_workers must be >= 0, got {num_workers}")
        self.path = Path(path).expanduser() if path is not None else None
        self.batch_size, self.num_workers, self.seed, self.pin_memory = batch_size, num_workers, seed, pin_memory

    def check_path_exists(self) -> Path:
        """The user's `path`, or a `DataError` naming it when it does not exist."""
        if self.path is None or not self.path.exists():
            raise DataError(f"data path {self.path} does not exist")
        return self.path

    def make_loader(self, dataset: Dataset, train: bool) -> StatefulDataLoader:
        """A loader over this rank's share of `dataset`: shuffled, resumable and dropping the last partial
        batch for training; in order, from the start each time, otherwise."""
        size = len(dataset)  # type: ignore[arg-type]
        sampler = ResumableSampler(size, seed=self.seed) if train else ShardSampler(size)
        if train and len(sampler) < self.batch_size:
            raise DataError(
                f"the training split has {len(sampler)} samples per rank, fewer than one batch of {self.batch_size}"
            )
        return StatefulDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> StatefulDataLoader:
        return self.make_loader(self.train_set, train=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self.make_loader(self.val_set, train=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self.make_loader(getattr(self, "test_set", self.val_set), train=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self.make_loader(getattr(self, "predict_set", self.val_set), train=False)
