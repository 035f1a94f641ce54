"""DistAttn: LightSeq's sequence-parallel exact attention over `torch.distributed`.

"LightSeq: Sequence Level Parallelism for Distributed Training of Long Context Transformers" (Li, Shao et al.,
arXiv:2310.03294, https://arxiv.org/abs/2310.03294); reference code https://github.com/RulinShao/LightSeq (read for
facts, not copied).

The sequence is cut into P contiguous chunks, one per rank (`lengths[r]` tokens on rank r, uneven lengths allowed).
Rank r keeps its query chunk Q_r and its key/value chunk KV_r. Attention of Q_m against KV_j is one BLOCK (m, j),
computed by `blockwise.attention_block` and merged with online-softmax statistics (`merge_partials`), so the result
is exact softmax attention over the whole sequence. A SCHEDULE (`make_schedule`) assigns every needed block to a
(step, worker); every block is computed either by the query owner (worker m, which receives KV_j) or by the key/value
owner (worker j, which receives Q_m and sends the partial result back). What is implemented:

- Ring exchange: a worker that needs KV_j at step s+1 receives it from its ring predecessor (r-1) when that rank
  held KV_j at step s, otherwise straight from the owner j (only the balanced schedule's first hops). Transfers are
  `isend/irecv` through `comm.Comm`, which counts the bytes.
- Overlap: at the start of step s every rank POSTS the transfers of step s+1 (into a second buffer), then computes
  block s, then waits. The partial results of helpers are sent right after their block and merged at the step's end.
- Non-causal: P steps, worker r computes (r, r - s mod P) at step s.
- Causal, `balanced=False`: worker r computes (r, r - s) for s <= r; worker P-1 computes P blocks while worker 0
  computes 1 and idles P-1 steps.
- Causal, `balanced=True` (default), the paper's load balancing as in the reference code: steps 0..P//2. At step s
  worker r >= s computes its own block (r, r - s); a worker r < s that would idle instead HELPS: it receives
  Q_{r+P-s} from its owner, computes block (r+P-s, r) against its OWN key/value chunk, and sends the partial
  (out, lse) back. So blocks at distance m - j <= P//2 are computed by the query owner, distances > P//2 by the
  key/value owner. Every worker computes at most P//2 + 1 blocks (P for the unbalanced ring); for odd P every
  worker is busy at every step; for even P the workers r < P//2 idle at the last step. The reference code sends
  each K/V chunk directly from its owner (rank r -> r + s); here K/V hops along the ring as described above (the
  same number of K/V messages, a different distribution over ranks).
- GQA/MQA: K/V have Hkv <= Hq heads and only those Hkv heads travel; blocks view the query heads as [Hkv, G] groups.
- Backward (`RingAttentionFunction`): distributed and exact, same schedule. Each rank saves only its own q, k, v,
  out and lse; per block, FlashAttention-2's backward from the final statistics (`attention_block_backward`). The
  query owner receives KV_j again and sends dK/dV of the block to j; a helper receives (Q_m, dO_m, lse_m,
  delta_m = rowsum(dO_m * O_m)) and sends dQ of the block to m. Sending delta_m (one number per row) instead of O_m
  (Dv numbers per row, what the reference sends) is a deviation that only saves bytes.
- Rematerialisation-aware checkpointing (`checkpoint_attention_layer`): with plain gradient checkpointing of a
  layer, backward re-runs the layer's forward, attention (and its communication) included, only to rebuild what the
  attention backward needs. LightSeq keeps the attention output and log-sum-exp at the attention boundary
  (`AttentionCache`), so the recomputation rebuilds q, k, v and the rest of the layer but returns the cached attention
  output without computing it: one attention forward per layer and step instead of two (counted in
  `comm.work["attention_forward"]` vs `["attention_forward_cached"]`).

Deviations: no FlashAttention/Triton kernels (blocks are PyTorch matmuls); no dropout inside attention; the P ranks
form one group (no mixing with data parallelism); `lengths` must be known on every rank (no padding/varlen packing).
Shapes: q [B, Hq, L_r, Dk], k [B, Hkv, L_r, Dk], v [B, Hkv, L_r, Dv] on rank r; out [B, Hq, L_r, Dv].
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.utils.checkpoint
from torch import nn

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.lightseq.blockwise import (
    Partial,
    attention_block,
    attention_block_backward,
    empty_partial,
    merge_partials,
    softmax_delta,
)
from paperzoo.efficiency.sequence.lightseq.comm import Comm

__all__ = [
    "AttentionCache",
    "Block",
    "RingAttentionFunction",
    "checkpoint_attention_layer",
    "make_schedule",
    "ring_attention",
    "schedule_work",
    "split_lengths",
]


@dataclass(frozen=True)
class Block:
    """Attention of query chunk `q` against key/value chunk `kv` (chunk index = owner rank)."""

    q: int
    kv: int


Schedule = list[list[Block | None]]  # [step][worker]


def make_schedule(world_size: int, causal: bool, balanced: bool = True) -> Schedule:
    """Which block each worker computes at each step (None: idle). See the module docstring.

    Every needed block appears exactly once, and every block is computed by the owner of its queries or of its
    keys/values.
    """
    require(world_size >= 1, f"world_size must be >= 1, got {world_size}")
    p = world_size
    if not causal:
        return [[Block(r, (r - s) % p) for r in range(p)] for s in range(p)]
    if not balanced:
        return [[Block(r, r - s) if r >= s else None for r in range(p)] for s in range(p)]
    half = p // 2
    steps: Schedule = []
    for s in range(half + 1):
        row: list[Block | None] = []
        for r in range(p):
            if r >= s:
                row.append(Block(r, r - s))  # own queries, distance s <= P//2
            elif p - s > half:
                row.append(Block(r + p - s, r))  # helps: someone else's queries against own K/V, distance P - s
            else:
                row.append(None)
        steps.append(row)
    return steps


def split_lengths(total: int, world_size: int) -> list[int]:
    """Contiguous chunk lengths of a `total`-token sequence over `world_size` ranks (first ranks take the +1)."""
    require(total >= world_size >= 1, f"cannot split {total} tokens over {world_size} ranks (need one token each)")
    base, extra = divmod(total, world_size)
    return [base + (1 if r < extra else 0) for r in range(world_size)]


def _starts(lengths: Sequence[int]) -> list[int]:
    out, acc = [], 0
    for n in lengths:
        out.append(acc)
        acc += n
    return out


def schedule_work(lengths: Sequence[int], causal: bool, balanced: bool = True) -> list[int]:
    """Visible (query, key) pairs each worker computes under the schedule: its attention FLOPs up to a constant
    (4 * heads * head_dim per pair, forward)."""
    starts = _starts(lengths)
    work = [0] * len(lengths)
    for row in make_schedule(len(lengths), causal, balanced):
        for worker, block in enumerate(row):
            if block is not None:
                work[worker] += _visible_pairs(
                    starts[block.q], lengths[block.q], starts[block.kv], lengths[block.kv], causal
                )
    return work


def _visible_pairs(q0: int, qn: int, k0: int, kn: int, causal: bool) -> int:
    if not causal:
        return qn * kn
    # query at position p sees keys k0..min(p, k0 + kn - 1)
    return sum(max(0, min(p - k0 + 1, kn)) for p in range(q0, q0 + qn))


@dataclass
class AttentionCache:
    """The attention boundary of one checkpointed layer call: its output and log-sum-exp from the first forward."""

    out: torch.Tensor | None = None
    lse: torch.Tensor | None = None


@dataclass
class _Spec:
    causal: bool
    balanced: bool
    lengths: list[int]
    scale: float
    comm: Comm
    cache: AttentionCache | None = None
    schedule: Schedule = field(default_factory=list)


# message tags: step * _TAGS + kind
_TAGS = 16
_K, _V, _Q, _OUT, _LSE, _DOUT, _QLSE, _DELTA, _DQ, _DK, _DV = range(11)


def _tag(step: int, kind: int) -> int:
    return step * _TAGS + kind


def _kv_source(schedule: Schedule, step: int, worker: int, kv: int) -> int:
    """Who sends KV chunk `kv` to `worker` for `step`: the ring predecessor if it held that chunk at step - 1, else
    its owner."""
    p = len(schedule[0])
    prev = (worker - 1) % p
    before = schedule[step - 1][prev]
    return prev if before is not None and before.kv == kv else kv


class _Exchange:
    """Posts the transfers a step needs, one step ahead (double buffering), for one rank."""

    def __init__(self, spec: _Spec, local: dict[str, torch.Tensor], q_side: tuple[str, ...]):
        self.spec, self.local, self.q_side = spec, local, q_side
        self.comm, self.rank = spec.comm, spec.comm.rank

    def _kv_shape(self, name: str, chunk: int) -> tuple[int, ...]:
        t = self.local[name]
        return (t.shape[0], t.shape[1], self.spec.lengths[chunk], t.shape[3])

    def post(self, step: int, current: dict[str, torch.Tensor]) -> tuple[list[dist.Work], dict[str, torch.Tensor]]:
        """Post every send of this rank's data that some worker needs at `step`, and this rank's receives for it.
        `current` holds the tensors this rank computes with at step - 1 (forwarded along the ring)."""
        schedule, works, incoming = self.spec.schedule, [], {}
        if step >= len(schedule):
            return works, incoming
        tags = {"k": _K, "v": _V, "q": _Q, "dout": _DOUT, "lse": _QLSE, "delta": _DELTA}
        for worker, block in enumerate(schedule[step]):
            if block is None:
                continue
            if block.q == worker and block.kv != worker:  # the query owner needs KV_j
                src = _kv_source(schedule, step, worker, block.kv)
                for name in ("k", "v"):
                    if src == self.rank:
                        data = self.local[name] if block.kv == self.rank else current[name]
                        works.append(self.comm.isend(data, worker, _tag(step, tags[name]), "kv"))
                    if worker == self.rank:
                        buf = self.local[name].new_empty(self._kv_shape(name, block.kv))
                        works.append(self.comm.irecv(buf, src, _tag(step, tags[name]), "kv"))
                        incoming[name] = buf
            elif block.kv == worker and block.q != worker:  # a helper needs the query side of chunk m
                for name in self.q_side:
                    if block.q == self.rank:
                        works.append(self.comm.isend(self.local[name], worker, _tag(step, tags[name]), "q"))
                    if worker == self.rank:
                        t = self.local[name]
                        buf = t.new_empty((*t.shape[:2], self.spec.lengths[block.q], *t.shape[3:]))
                        works.append(self.comm.irecv(buf, block.q, _tag(step, tags[name]), "q"))
                        incoming[name] = buf
        return works, incoming

    def incoming_results(self, step: int) -> list[tuple[int, int]]:
        """(worker, kind) of partial results other workers send this rank after computing `step`: 'q' when they
        computed for this rank's queries, 'kv' when they used this rank's keys/values."""
        found = []
        for worker, block in enumerate(self.spec.schedule[step]):
            if block is None or worker == self.rank:
                continue
            if block.q == self.rank and block.kv == worker:
                found.append((worker, 0))
            elif block.kv == self.rank and block.q == worker:
                found.append((worker, 1))
        return found


def _wait(works: list[dist.Work]) -> None:
    for work in works:
        work.wait()


def _validate(spec: _Spec) -> None:
    for step in spec.schedule:
        for worker, block in enumerate(step):
            assert block is None or block.q == worker or block.kv == worker, "a block needs both chunks remote"


def _ring_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: _Spec) -> Partial:
    comm, rank, starts = spec.comm, spec.comm.rank, _starts(spec.lengths)
    exchange = _Exchange(spec, {"q": q, "k": k, "v": v}, ("q",))
    acc = empty_partial(q, v.shape[-1])
    current: dict[str, torch.Tensor] = {}
    for step, row in enumerate(spec.schedule):
        works, incoming = exchange.post(step + 1, current)  # overlap: next step's transfers run during this block
        result_bufs, result_works = [], []
        for worker, kind in exchange.incoming_results(step):
            if kind == 0:  # a helper's partial for my queries
                out_buf = torch.empty_like(acc.out)
                lse_buf = torch.empty_like(acc.lse)
                result_works += [
                    comm.irecv(out_buf, worker, _tag(step, _OUT), "partial"),
                    comm.irecv(lse_buf, worker, _tag(step, _LSE), "partial"),
                ]
                result_bufs.append((out_buf, lse_buf))
        block = row[rank]
        if block is not None:
            qm = q if block.q == rank else current["q"]
            kj, vj = (k, v) if block.kv == rank else (current["k"], current["v"])
            part = attention_block(
                qm, kj, vj, scale=spec.scale, causal=spec.causal, q_start=starts[block.q], k_start=starts[block.kv]
            )
            comm.work["blocks"] += 1
            comm.work["score_pairs"] += _visible_pairs(
                starts[block.q], spec.lengths[block.q], starts[block.kv], spec.lengths[block.kv], spec.causal
            )
            if block.q == rank:
                acc = merge_partials(acc, part)
            else:
                result_works += [
                    comm.isend(part.out, block.q, _tag(step, _OUT), "partial"),
                    comm.isend(part.lse, block.q, _tag(step, _LSE), "partial"),
                ]
        _wait(works + result_works)
        for out_buf, lse_buf in result_bufs:
            acc = merge_partials(acc, Partial(out_buf, lse_buf, lse_buf))  # max is not needed for the merge
        current = incoming if incoming else current
    return acc


def _ring_backward(q, k, v, out, lse, dout, spec: _Spec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    comm, rank, starts = spec.comm, spec.comm.rank, _starts(spec.lengths)
    delta = softmax_delta(out, dout)
    dtype = delta.dtype
    dout_c = dout.to(dtype).contiguous()
    local = {"q": q, "k": k, "v": v, "dout": dout_c, "lse": lse.contiguous(), "delta": delta}
    exchange = _Exchange(spec, local, ("q", "dout", "lse", "delta"))
    dq = torch.zeros(q.shape, dtype=dtype, device=q.device)
    dk = torch.zeros(k.shape, dtype=dtype, device=k.device)
    dv = torch.zeros(v.shape, dtype=dtype, device=v.device)
    current: dict[str, torch.Tensor] = {}
    for step, row in enumerate(spec.schedule):
        works, incoming = exchange.post(step + 1, current)
        result_works: list[dist.Work] = []
        adds: list[tuple[torch.Tensor, torch.Tensor]] = []
        for worker, kind in exchange.incoming_results(step):
            if kind == 0:  # a helper's dQ for my queries
                buf = torch.empty_like(dq)
                result_works.append(comm.irecv(buf, worker, _tag(step, _DQ), "dq"))
                adds.append((dq, buf))
            else:  # a query owner's dK, dV for my keys/values
                bk, bv = torch.empty_like(dk), torch.empty_like(dv)
                result_works += [
                    comm.irecv(bk, worker, _tag(step, _DK), "dkv"),
                    comm.irecv(bv, worker, _tag(step, _DV), "dkv"),
                ]
                adds += [(dk, bk), (dv, bv)]
        block = row[rank]
        if block is not None:
            side = local if block.q == rank else current
            kj, vj = (k, v) if block.kv == rank else (current["k"], current["v"])
            gq, gk, gv = attention_block_backward(
                side["q"],
                kj,
                vj,
                side["dout"],
                side["lse"],
                side["delta"],
                scale=spec.scale,
                causal=spec.causal,
                q_start=starts[block.q],
                k_start=starts[block.kv],
            )
            if block.q == rank:
                dq += gq
            else:
                result_works.append(comm.isend(gq, block.q, _tag(step, _DQ), "dq"))
            if block.kv == rank:
                dk += gk
                dv += gv
            else:
                result_works += [
                    comm.isend(gk, block.kv, _tag(step, _DK), "dkv"),
                    comm.isend(gv, block.kv, _tag(step, _DV), "dkv"),
                ]
        _wait(works + result_works)
        for target, buf in adds:
            target += buf
        current = incoming if incoming else current
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class RingAttentionFunction(torch.autograd.Function):
    """Exact sequence-parallel attention with a distributed exact backward. Every rank of the group must call
    forward, and later backward, with the same schedule arguments."""

    @staticmethod
    def forward(ctx, q, k, v, spec: _Spec):  # type: ignore[override]
        cache = spec.cache
        if cache is not None and cache.out is not None:
            out, lse = cache.out.clone(), cache.lse  # rematerialisation-aware: no attention forward, no transfers
            spec.comm.work["attention_forward_cached"] += 1
        else:
            acc = _ring_forward(q, k, v, spec)
            out, lse = acc.out.to(q.dtype), acc.lse
            spec.comm.work["attention_forward"] += 1
            if cache is not None:
                cache.out, cache.lse = out.detach(), lse
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.spec = spec
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        ctx.spec.comm.work["attention_backward"] += 1
        dq, dk, dv = _ring_backward(q, k, v, out, lse, dout, ctx.spec)
        return dq, dk, dv, None


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    balanced: bool = True,
    lengths: Sequence[int] | None = None,
    comm: Comm | None = None,
    scale: float | None = None,
    cache: AttentionCache | None = None,
) -> torch.Tensor:
    """LightSeq's DistAttn on this rank's sequence chunk; a collective call over `comm`'s group.

    Args:
        q: [B, Hq, L_r, Dk] this rank's queries (global positions start at sum(lengths[:r])).
        k: [B, Hkv, L_r, Dk] this rank's keys, Hq % Hkv == 0.
        v: [B, Hkv, L_r, Dv] this rank's values.
        causal: causal masking by global position.
        balanced: the paper's load-balanced causal schedule (ignored when not causal).
        lengths: every rank's chunk length; all equal to L_r when None.
        comm: the counted communicator (a new one over the default group when None).
        scale: score scale, 1/sqrt(Dk) by default.
        cache: an `AttentionCache` for rematerialisation-aware checkpointing (see `checkpoint_attention_layer`).

    Returns:
        [B, Hq, L_r, Dv]: exact softmax attention of this rank's queries over the whole sequence.
    """
    comm = Comm() if comm is None else comm
    lengths = [q.shape[2]] * comm.world_size if lengths is None else [int(n) for n in lengths]
    require(len(lengths) == comm.world_size, f"lengths has {len(lengths)} entries for {comm.world_size} ranks")
    require(all(n >= 1 for n in lengths), f"every rank needs at least one token, got lengths {lengths}")
    require(
        q.shape[2] == k.shape[2] == lengths[comm.rank],
        f"rank {comm.rank} holds {q.shape[2]} queries and {k.shape[2]} keys but lengths says {lengths[comm.rank]}",
    )
    require(q.shape[1] % k.shape[1] == 0, f"query heads ({q.shape[1]}) must be a multiple of kv heads ({k.shape[1]})")
    spec = _Spec(
        causal=causal,
        balanced=balanced,
        lengths=lengths,
        scale=q.shape[-1] ** -0.5 if scale is None else float(scale),
        comm=comm,
        cache=cache,
        schedule=make_schedule(comm.world_size, causal, balanced),
    )
    _validate(spec)
    return RingAttentionFunction.apply(q.contiguous(), k.contiguous(), v.contiguous(), spec)


def checkpoint_attention_layer(
    layer: Callable[..., torch.Tensor], *args: Any, remat_aware: bool = True, **kwargs: Any
) -> torch.Tensor:
    """Gradient-checkpoint `layer(*args, cache=..., **kwargs)`, a layer whose attention is `ring_attention(...,
    cache=cache)`.

    Plain checkpointing (`remat_aware=False`, cache=None) stores only the layer inputs and re-runs the whole layer in
    backward, attention forward and its communication included. Rematerialisation-aware (`remat_aware=True`) also
    keeps the attention output and log-sum-exp of this call (an `AttentionCache`), so the re-run returns them
    without an attention forward, and the attention backward uses them directly.
    """
    cache = AttentionCache() if remat_aware else None
    return torch.utils.checkpoint.checkpoint(layer, *args, cache=cache, use_reentrant=False, **kwargs)


class SequenceParallelAttention(nn.Module):
    """A pre-norm attention + MLP layer over a sequence chunk, attention by `ring_attention` (GQA/MQA via
    `n_kv_heads`): the layer the checkpointing policy is demonstrated and counted on.

    Args:
        dim: D.
        n_heads: query heads; D % n_heads == 0.
        n_kv_heads: key/value heads; n_heads % n_kv_heads == 0.
        causal: causal attention by global position.

    Shapes: x [B, L_r, D] -> [B, L_r, D].
    """

    def __init__(self, dim: int, n_heads: int = 4, n_kv_heads: int | None = None, causal: bool = True):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        require(n_heads > 0 and dim % n_heads == 0, f"width {dim} must divide into {n_heads} heads")
        require(n_heads % n_kv_heads == 0, f"{n_heads} query heads must divide into {n_kv_heads} kv heads")
        self.n_heads, self.n_kv_heads, self.head_dim, self.causal = n_heads, n_kv_heads, dim // n_heads, causal
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * n_kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(
        self,
        x: torch.Tensor,
        comm: Comm | None = None,
        lengths: Sequence[int] | None = None,
        cache: AttentionCache | None = None,
    ) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.norm1(x)
        q = self.q(h).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)  # [B, Hq, L_r, Dh]
        k, v = self.kv(h).view(b, n, 2, self.n_kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [B, Hkv, L_r, Dh]
        a = ring_attention(q, k, v, causal=self.causal, lengths=lengths, comm=comm, cache=cache)
        x = x + self.out(a.transpose(1, 2).reshape(b, n, -1))
        return x + self.mlp(self.norm2(x))
