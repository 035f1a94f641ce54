"""Counted point-to-point communication: the one wrapper both LightSeq's ring and the head-parallel baseline send
through, so their volumes are measured the same way.

"LightSeq: Sequence Level Parallelism for Distributed Training of Long Context Transformers" (arXiv:2310.03294)
compares the bytes each worker communicates per attention layer. `Comm` wraps `torch.distributed.isend/irecv`
(and an all-to-all built from them, since gloo has no list all-to-all) and adds `tensor.numel() * element_size()` of
every tensor a rank SENDS to `sent[kind]` (and what it receives to `received[kind]`), where `kind` names the
traffic ("kv", "q", "partial", "dkv", ...). A transfer to oneself is a local copy and counts nothing.

Without an initialised process group `Comm()` is a world of one rank that never communicates, so the distributed
code paths run (and are tested) in a single process too.
"""

from collections import Counter
from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = ["Comm"]


class _Pending:
    """A posted send and its buffer, which must stay alive until the transfer completes."""

    def __init__(self, work: dist.Work, tensor: torch.Tensor):
        self.work, self.tensor = work, tensor

    def wait(self) -> bool:
        return self.work.wait()


class Comm:
    """Counted p2p sends and receives in one process group.

    Args:
        group: the process group (the default group when None; a single local rank when torch.distributed is not
            initialised).
    """

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank(group) if self.distributed else 0
        self.world_size = dist.get_world_size(group) if self.distributed else 1
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.work: Counter[str] = Counter()  # compute events the schemes record (blocks, score pairs, forwards)

    def _global(self, rank: int) -> int:
        """Group rank -> global rank (what isend/irecv take)."""
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def isend(self, tensor: torch.Tensor, dst: int, tag: int, kind: str) -> "_Pending":
        """Post a non-blocking send of a contiguous tensor to group rank `dst`; counts its bytes under `kind`."""
        if dst == self.rank:
            raise ValueError(f"rank {self.rank} cannot isend to itself")
        tensor = tensor.contiguous()
        self.sent[kind] += tensor.numel() * tensor.element_size()
        self.messages[kind] += 1
        return _Pending(dist.isend(tensor, self._global(dst), group=self.group, tag=tag), tensor)

    def irecv(self, tensor: torch.Tensor, src: int, tag: int, kind: str) -> dist.Work:
        """Post a non-blocking receive into `tensor` (contiguous) from group rank `src`."""
        if src == self.rank:
            raise ValueError(f"rank {self.rank} cannot irecv from itself")
        self.received[kind] += tensor.numel() * tensor.element_size()
        return dist.irecv(tensor, self._global(src), group=self.group, tag=tag)

    def all_to_all(
        self, inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], tag: int, kind: str
    ) -> list[torch.Tensor]:
        """inputs[d] goes to rank d, outputs[s] is filled from rank s (own slot copied locally); blocking.

        Sizes may differ per pair (the head-parallel baseline's GQA/MQA key/value heads do). Counted per rank as
        the bytes of every inputs[d] with d != rank.
        """
        if len(inputs) != self.world_size or len(outputs) != self.world_size:
            raise ValueError(
                f"all_to_all needs {self.world_size} inputs and outputs, got {len(inputs)}, {len(outputs)}"
            )
        outputs[self.rank].copy_(inputs[self.rank])
        works = []
        for peer in range(self.world_size):
            if peer != self.rank:
                works.append(self.irecv(outputs[peer], peer, tag, kind))
                works.append(self.isend(inputs[peer], peer, tag, kind))
        for work in works:
            work.wait()
        return list(outputs)

    def total_sent(self) -> int:
        return sum(self.sent.values())

    def reset(self) -> None:
        self.sent.clear()
        self.received.clear()
        self.messages.clear()
        self.work.clear()
