"""The head-parallel baseline LightSeq is compared against: all-to-all from sequence-sharded to head-sharded
attention and back (DeepSpeed-Ulysses style, arXiv:2309.14509), with the same byte counter as the ring.

LightSeq (arXiv:2310.03294) argues that partitioning attention by heads costs communication proportional to the
number of QUERY heads and cannot use more workers than heads, while its sequence-parallel ring sends only the
key/value heads. Here, on P ranks that each hold a contiguous sequence chunk (`lengths`, as for `ring_attention`):

1. all-to-all q: rank d receives query heads [d * Hq/P, (d+1) * Hq/P) of every chunk: the whole sequence for Hq/P
   heads;
2. all-to-all k and v: rank d receives only the key/value heads its query heads read (h // G). With Hkv >= P those
   are Hkv/P disjoint heads; with Hkv < P several ranks need the same head, so that head is sent to each of them
   (the minimum this layout needs; implementations that repeat K/V to Hq heads first send more);
3. local exact attention over the full sequence (`blockwise_attention`, the same primitive the ring uses);
4. all-to-all of the output back to sequence sharding.
Backward runs the transposed exchanges: dO to head sharding, dQ/dK/dV back (dK/dV of a head sent to several ranks
are summed on its owner). All exchanges go through `comm.Comm.all_to_all` (p2p isend/irecv pairs, since gloo has no
list all-to-all; the bytes equal a collective's).

Requires Hq % P == 0, and each rank's query heads must cover whole groups or lie in one group.
Shapes: q [B, Hq, L_r, Dk], k [B, Hkv, L_r, Dk], v [B, Hkv, L_r, Dv] on rank r; out [B, Hq, L_r, Dv].
"""

from collections.abc import Sequence

import torch

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.lightseq.blockwise import blockwise_attention
from paperzoo.efficiency.sequence.lightseq.comm import Comm

__all__ = ["head_parallel_attention", "head_ranges"]

_TAG = {"q": 1001, "k": 1002, "v": 1003, "out": 1004}


def head_ranges(n_heads: int, n_kv_heads: int, world_size: int) -> tuple[list[range], list[range]]:
    """Per rank: its query heads and the key/value heads they read."""
    require(
        n_heads % world_size == 0, f"head parallelism needs the {n_heads} query heads to divide over {world_size} ranks"
    )
    require(n_heads % n_kv_heads == 0, f"{n_heads} query heads must be a multiple of {n_kv_heads} kv heads")
    per, group = n_heads // world_size, n_heads // n_kv_heads
    require(
        per % group == 0 or group % per == 0,
        f"{per} query heads per rank split the groups of {group} query heads per kv head unevenly",
    )
    q_ranges = [range(d * per, (d + 1) * per) for d in range(world_size)]
    kv_ranges = [range(r.start // group, (r.stop - 1) // group + 1) for r in q_ranges]
    return q_ranges, kv_ranges


def _seq_to_head(x: torch.Tensor, heads: list[range], lengths: list[int], comm: Comm, kind: str, tag: int):
    """x [B, H, L_r, D] sequence-sharded -> [B, |heads[r]|, L, D]: this rank's heads over the whole sequence."""
    b, _, _, d = x.shape
    mine = heads[comm.rank]
    inputs = [x[:, h.start : h.stop].contiguous() for h in heads]
    outputs = [x.new_empty(b, len(mine), n, d) for n in lengths]
    return torch.cat(comm.all_to_all(inputs, outputs, tag, kind), dim=2)


def _head_to_seq(
    y: torch.Tensor, heads: list[range], lengths: list[int], n_heads: int, comm: Comm, kind: str, tag: int
):
    """y [B, |heads[r]|, L, D] -> [B, n_heads, L_r, D] sequence-sharded; heads sent to several ranks are summed."""
    b, _, _, d = y.shape
    inputs = list(torch.split(y, lengths, dim=2))
    inputs = [t.contiguous() for t in inputs]
    outputs = [y.new_empty(b, len(h), lengths[comm.rank], d) for h in heads]
    received = comm.all_to_all(inputs, outputs, tag, kind)
    out = y.new_zeros(b, n_heads, lengths[comm.rank], d)
    for h, part in zip(heads, received, strict=True):
        out[:, h.start : h.stop] += part
    return out


class _SeqToHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, heads, lengths, comm, kind, back_kind):  # type: ignore[override]
        ctx.meta = (heads, lengths, comm, back_kind, x.shape[1])
        return _seq_to_head(x, heads, lengths, comm, kind, _TAG.get(kind, 1000))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        heads, lengths, comm, back_kind, n_heads = ctx.meta
        dx = _head_to_seq(grad.contiguous(), heads, lengths, n_heads, comm, back_kind, 2000)
        return dx, None, None, None, None, None


class _HeadToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, heads, lengths, n_heads, comm, kind, back_kind):  # type: ignore[override]
        ctx.meta = (heads, lengths, comm, back_kind)
        return _head_to_seq(y, heads, lengths, n_heads, comm, kind, _TAG.get(kind, 1000))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        heads, lengths, comm, back_kind = ctx.meta
        return (
            _seq_to_head(grad.contiguous(), heads, lengths, comm, back_kind, 2001),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def head_parallel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    lengths: Sequence[int] | None = None,
    comm: Comm | None = None,
    scale: float | None = None,
    block_size: int = 128,
) -> torch.Tensor:
    """Exact attention of this rank's sequence chunk by head parallelism; a collective call, differentiable.

    Args:
        q: [B, Hq, L_r, Dk]; k: [B, Hkv, L_r, Dk]; v: [B, Hkv, L_r, Dv] (this rank's chunk).
        causal: causal masking by global position.
        lengths: every rank's chunk length; all equal to L_r when None.
        comm: the counted communicator (a new one over the default group when None).
        scale: score scale, 1/sqrt(Dk) by default.
        block_size: tile size of the local attention.

    Returns:
        [B, Hq, L_r, Dv].
    """
    comm = Comm() if comm is None else comm
    lengths = [q.shape[2]] * comm.world_size if lengths is None else [int(n) for n in lengths]
    require(len(lengths) == comm.world_size, f"lengths has {len(lengths)} entries for {comm.world_size} ranks")
    require(q.shape[2] == k.shape[2] == lengths[comm.rank], f"rank {comm.rank}'s chunk does not match {lengths}")
    q_heads, kv_heads = head_ranges(q.shape[1], k.shape[1], comm.world_size)
    qh = _SeqToHead.apply(q, q_heads, lengths, comm, "q", "dq")  # [B, Hq/P, L, Dk]
    kh = _SeqToHead.apply(k, kv_heads, lengths, comm, "k", "dkv")  # [B, Hkv_r, L, Dk]
    vh = _SeqToHead.apply(v, kv_heads, lengths, comm, "v", "dkv")
    comm.work["attention_forward"] += 1
    oh = blockwise_attention(qh, kh, vh, block_size=block_size, causal=causal, scale=scale)  # [B, Hq/P, L, Dv]
    return _HeadToSeq.apply(oh, q_heads, lengths, q.shape[1], comm, "out", "dout")
