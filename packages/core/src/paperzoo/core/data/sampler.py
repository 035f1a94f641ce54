"""A rank-aware sampler whose order is a function of (seed, epoch) and whose position survives a checkpoint.

Why not `DistributedSampler` + `StatefulDataLoader` (DESIGN.md, "Pitfalls"): resuming there in epoch >= 1 replays
epoch 0's permutation, and Lightning's own `DistributedSampler` gives a 2-process run other batches than the
1-process run. This sampler keeps (seed, epoch, position) in its `state_dict`, so a resumed run continues with the
exact index it stopped at, in any epoch, and rank r of R always reads `order[r::R]` of the same global order.
"""

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from paperzoo.core.errors import require


def current_rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1) outside distributed training."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableSampler(Sampler[int]):
    """Yields this rank's share of a seeded permutation of `range(size)`, epoch after epoch.

    Args:
        size: number of samples in the dataset.
        seed: the permutation of epoch e is `randperm(size, seed + e)`.
        shuffle: False keeps `range(size)` in every epoch.
        num_replicas: R, number of ranks sharing the data (default: the process group's size).
        rank: r in [0, R) (default: this process's rank).

    Every rank yields `size // R` indices per epoch (the tail that does not divide is dropped, as every rank
    must run the same number of steps).
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        default_rank, default_world = current_rank_and_world()
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.num_replicas = default_world if num_replicas is None else num_replicas
        self.rank = default_rank if rank is None else rank
        require(0 <= self.rank < self.num_replicas, f"rank {self.rank} is outside [0, {self.num_replicas})")
        require(size >= self.num_replicas, f"{size} samples cannot be shared by {self.num_replicas} ranks")
        self.epoch = 0
        self.position = 0  # indices of the current epoch already handed out by this rank

    def __len__(self) -> int:
        return self.size // self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` from its beginning, unless the sampler is already inside that epoch (a resume)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """This rank's indices of epoch `epoch`, in order. [size // R]"""
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(self.size)
        return order[self.rank : len(self) * self.num_replicas : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices(self.epoch).tolist()
        while self.position < len(indices):
            self.position += 1
            yield indices[self.position - 1]
        # A finished epoch rolls over, so loops that never call set_epoch still see a new order each epoch.
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]


class ShardSampler(Sampler[int]):
    """Evaluation order: rank r of R reads `range(size)[r::R]`, from the start on every iteration (no state, so a
    sanity-check pass or an interrupted validation never shifts the next one).

    Args:
        size: number of samples.
        num_replicas, rank: as in `ResumableSampler`. The last `size % R` samples are left out under R > 1 so that
            every rank evaluates the same number of batches.
    """

    def __init__(self, size: int, num_replicas: int | None = None, rank: int | None = None):
        default_rank, default_world = current_rank_and_world()
        self.size = size
        self.num_replicas = default_world if num_replicas is None else num_replicas
        self.rank = default_rank if rank is None else rank

    def __len__(self) -> int:
        return self.size // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self) * self.num_replicas, self.num_replicas))
