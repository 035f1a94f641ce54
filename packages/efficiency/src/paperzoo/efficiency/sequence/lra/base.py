"""`SequenceDataModule`: the base of every generated or byte-level sequence task in this family.

A subclass sets `vocab_size`, `num_classes` and `seq_len` in `__init__` (the `paperzoo` command links the first two
into the task before any data is built) and implements `build()`, which returns each split as a dict of tensors
sharing their first dimension:
- classification: {"tokens": [N, L] int64, "label": [N] int64} (pairs: tokens [N, 2, L]);
- per-position targets: {"tokens": [N, L] int64, "targets": [N, L] int64, -100 where nothing is predicted}.
Token id 0 is padding everywhere (a sample's "mask" is tokens != 0). Built splits are cached atomically under
`cache_dir("sequence")`, keyed by the subclass, its `cache_key()` and `CACHE_VERSION`, so a generator runs once.
"""

import abc
import hashlib
import json
from typing import Any

import torch
from torch.utils.data import Dataset

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import DataError
from paperzoo.core.io import atomic_torch_save, cache_dir

PAD = 0
SPLITS = ("train", "val", "test")
Split = dict[str, torch.Tensor]


class TensorDictDataset(Dataset):
    """Rows of a dict of tensors; each item is a dict, with "mask" (tokens != PAD) added when tokens are present."""

    def __init__(self, fields: Split):
        sizes = {name: len(tensor) for name, tensor in fields.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"sequence split fields differ in length: {sizes}")
        self.fields = fields

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {name: tensor[index] for name, tensor in self.fields.items()}
        if "tokens" in item:
            item["mask"] = item["tokens"] != PAD
        return item


class SequenceDataModule(BaseDataModule):
    """Base of the sequence datamodules; see the module docstring for the contract.

    Args:
        path, batch_size, num_workers, seed, pin_memory: see `BaseDataModule`.
    """

    #: bump when a generator's output changes, so old caches are not reused.
    CACHE_VERSION = 1

    vocab_size: int
    num_classes: int
    seq_len: int

    @abc.abstractmethod
    def build(self) -> dict[str, Split]:
        """Every split in `SPLITS` as a dict of tensors (deterministic given the constructor arguments)."""

    def cache_key(self) -> dict[str, Any]:
        """What the built data depends on (default: the saved hyperparameters, i.e. the constructor arguments)."""
        return {k: v for k, v in dict(self.hparams).items() if k not in ("batch_size", "num_workers", "pin_memory")}

    def cached_build(self) -> dict[str, Split]:
        """`build()`, or its result from the cache (rebuilt when the file is unreadable)."""
        key = json.dumps([type(self).__qualname__, self.CACHE_VERSION, self.cache_key()], sort_keys=True, default=str)
        path = cache_dir("sequence") / f"{type(self).__name__}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        if path.exists():
            try:
                return torch.load(path, weights_only=True)
            except Exception:  # noqa: BLE001 - a cache file from an interrupted or older writer: rebuild it
                pass
        splits = self.build()
        missing = [name for name in SPLITS if name not in splits]
        if missing:
            raise DataError(f"{type(self).__name__}.build() returned no {', '.join(missing)} split")
        atomic_torch_save(splits, path)
        return splits

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        splits = self.cached_build()
        self.train_set, self.val_set, self.test_set = (TensorDictDataset(splits[name]) for name in SPLITS)
        self.predict_set = self.test_set
