"""Run LightSeq's sequence-parallel attention on P CPU processes (gloo) and collect what each rank measured.

`spawn(function, world_size, *args)` starts `world_size` processes with `torch.multiprocessing` ("spawn"), joins
them into one gloo group through a file store, calls `function(rank, world_size, *args)` on every rank (one
intra-op thread each) and returns the per-rank results. `attention_case` is the per-rank experiment the tests,
the claim check and `paperzoo run lightseq` share: it builds the full q, k, v and output gradient from a seed (the
same on every rank), runs ring or head-parallel attention forward and backward on its chunk, and returns the
chunk's output and gradients with the bytes its rank sent. Comparing against single-process attention happens in
the caller.
"""

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from paperzoo.core.card import load_object
from paperzoo.efficiency.sequence.lightseq.comm import Comm

__all__ = [
    "AttentionCase",
    "attention_case",
    "checkpoint_case",
    "full_inputs",
    "measure_schemes",
    "run_lightseq",
    "several",
    "spawn",
]


def _worker(rank: int, world_size: int, store: str, out_dir: str, function: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        result = load_object(function)(rank, world_size, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def spawn(function: str, world_size: int, *args: Any) -> list[Any]:
    """Run "module:function"(rank, world_size, *args) on `world_size` gloo CPU processes; per-rank results."""
    with tempfile.TemporaryDirectory(prefix="paperzoo-lightseq-") as tmp:
        store = os.path.join(tmp, "store")
        mp.spawn(_worker, args=(world_size, store, tmp, function, args), nprocs=world_size, join=True)
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


@dataclass(frozen=True)
class AttentionCase:
    """One attention problem: the full sequence of `lengths` (one chunk per rank) and how to run it."""

    name: str
    scheme: str = "ring"  # "ring" or "head_parallel"
    heads: int = 4
    kv_heads: int = 4
    lengths: tuple[int, ...] = (8, 8)
    head_dim: int = 8
    batch: int = 1
    causal: bool = False
    balanced: bool = True
    dtype: str = "float64"
    seed: int = 0


def full_inputs(case: AttentionCase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole-sequence q [B, Hq, L, D], k, v [B, Hkv, L, D] and output gradient dO [B, Hq, L, D]."""
    g = torch.Generator().manual_seed(case.seed)
    dtype = getattr(torch, case.dtype)
    total = sum(case.lengths)
    q = torch.randn(case.batch, case.heads, total, case.head_dim, generator=g, dtype=dtype)
    k = torch.randn(case.batch, case.kv_heads, total, case.head_dim, generator=g, dtype=dtype)
    v = torch.randn(case.batch, case.kv_heads, total, case.head_dim, generator=g, dtype=dtype)
    dout = torch.randn(case.batch, case.heads, total, case.head_dim, generator=g, dtype=dtype)
    return q, k, v, dout


def attention_case(rank: int, world_size: int, cases: list[dict]) -> list[dict]:
    """Per-rank: run each case forward and backward on this rank's chunk. Returns, per case, the chunk's out, dq,
    dk, dv, the bytes this rank sent in forward and in backward (by kind) and its compute counters."""
    from paperzoo.efficiency.sequence.lightseq.head_parallel import head_parallel_attention
    from paperzoo.efficiency.sequence.lightseq.ring import ring_attention

    results = []
    for raw in cases:
        case = AttentionCase(**raw)
        if len(case.lengths) != world_size:
            raise ValueError(f"case {case.name} has {len(case.lengths)} chunks for {world_size} ranks")
        q, k, v, dout = full_inputs(case)
        start = sum(case.lengths[:rank])
        rows = slice(start, start + case.lengths[rank])
        ql, kl, vl = (t[:, :, rows].clone().requires_grad_(True) for t in (q, k, v))
        comm = Comm()
        if case.scheme == "ring":
            out = ring_attention(
                ql, kl, vl, causal=case.causal, balanced=case.balanced, lengths=case.lengths, comm=comm
            )
        else:
            out = head_parallel_attention(ql, kl, vl, causal=case.causal, lengths=case.lengths, comm=comm)
        forward_sent = dict(comm.sent)
        forward_work = dict(comm.work)
        comm.sent.clear()
        (out * dout[:, :, rows]).sum().backward()
        results.append(
            {
                "case": asdict(case),
                "out": out.detach(),
                "dq": ql.grad,
                "dk": kl.grad,
                "dv": vl.grad,
                "forward_sent": forward_sent,
                "backward_sent": dict(comm.sent),
                "work": forward_work,
            }
        )
    return results


def checkpoint_case(rank: int, world_size: int, spec: dict) -> dict:
    """Per-rank: one `SequenceParallelAttention` layer (same weights on every rank) trained one step on this rank's
    chunk three ways: no checkpointing, plain checkpointing, rematerialisation-aware checkpointing. Returns each
    way's input/parameter gradients, attention forward counts and bytes sent."""
    from paperzoo.efficiency.sequence.lightseq.ring import SequenceParallelAttention, checkpoint_attention_layer

    torch.manual_seed(spec.get("seed", 0))
    dim, lengths = spec["dim"], list(spec["lengths"])
    layer = SequenceParallelAttention(dim, spec["heads"], spec["kv_heads"], causal=spec.get("causal", True)).double()
    x_full = torch.randn(1, sum(lengths), dim, dtype=torch.float64)
    start = sum(lengths[:rank])
    x_local = x_full[:, start : start + lengths[rank]]
    out: dict[str, Any] = {}
    for way in ("none", "plain", "remat"):
        layer.zero_grad()
        x = x_local.clone().requires_grad_(True)
        comm = Comm()
        if way == "none":
            y = layer(x, comm=comm, lengths=lengths)
        else:
            y = checkpoint_attention_layer(layer, x, comm=comm, lengths=lengths, remat_aware=way == "remat")
        forward_bytes = comm.total_sent()
        (y * torch.cos(torch.arange(y.numel(), dtype=y.dtype)).view_as(y)).sum().backward()
        out[way] = {
            "y": y.detach(),
            "dx": x.grad,
            "dparams": [p.grad.clone() for p in layer.parameters()],
            "work": dict(comm.work),
            "forward_bytes": forward_bytes,
            "total_bytes": comm.total_sent(),
        }
    return out


def several(rank: int, world_size: int, calls: list[tuple[str, tuple]]) -> list[Any]:
    """Per-rank: run several per-rank functions ("module:function", args) in one process group (one spawn)."""
    return [load_object(function)(rank, world_size, *args) for function, args in calls]


#: the attention variants compared: (scheme, mode) -> (causal, balanced)
VARIANTS = {
    ("ring", "full"): (False, True),
    ("ring", "balanced"): (True, True),
    ("ring", "unbalanced"): (True, False),
    ("head_parallel", "full"): (False, True),
    ("head_parallel", "causal"): (True, True),
}


def _max_error(case: AttentionCase, per_rank: list[dict]) -> float:
    """Max abs error of the gathered out, dq, dk, dv against single-process dense attention with autograd."""
    from paperzoo.efficiency.sequence.lightseq.blockwise import dense_attention

    q, k, v, dout = full_inputs(case)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    ref = dense_attention(q, k, v, causal=case.causal)
    (ref * dout).sum().backward()
    errors = []
    for name, want in (("out", ref.detach()), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        got = torch.cat([r[name] for r in per_rank], dim=2)
        errors.append(float((got - want).abs().max()))
    return max(errors)


def measure_schemes(
    world_size: int,
    heads: int,
    kv_heads: Sequence[int],
    chunk: int,
    head_dim: int,
    seed: int = 0,
    checkpoint: bool = True,
) -> dict[str, Any]:
    """Spawn `world_size` gloo processes; run every variant of `VARIANTS` for each kv-head count (float64, `chunk`
    tokens per rank) and, optionally, the checkpointing comparison. Returns per case the max abs error against
    single-process attention, the bytes sent by the busiest rank and on average (forward, forward + backward) and
    the busiest rank's attention work (visible score pairs)."""
    cases = []
    for hk in kv_heads:
        for (scheme, mode), (causal, balanced) in VARIANTS.items():
            cases.append(
                AttentionCase(
                    name=f"P{world_size}/Hkv{hk}/{scheme}/{mode}",
                    scheme=scheme,
                    heads=heads,
                    kv_heads=hk,
                    lengths=(chunk,) * world_size,
                    head_dim=head_dim,
                    causal=causal,
                    balanced=balanced,
                    seed=seed,
                )
            )
    calls: list[tuple[str, tuple]] = [(f"{__name__}:attention_case", ([asdict(c) for c in cases],))]
    if checkpoint:
        spec = {"dim": 32, "heads": 4, "kv_heads": 1, "lengths": (chunk,) * world_size, "causal": True, "seed": seed}
        calls.append((f"{__name__}:checkpoint_case", (spec,)))
    started = time.perf_counter()
    ranks = spawn(f"{__name__}:several", world_size, calls)
    seconds = time.perf_counter() - started
    rows: dict[str, dict[str, float]] = {}
    for i, case in enumerate(cases):
        per_rank = [r[0][i] for r in ranks]
        forward = [sum(r["forward_sent"].values()) for r in per_rank]
        total = [f + sum(r["backward_sent"].values()) for f, r in zip(forward, per_rank, strict=True)]
        rows[case.name] = {
            "max_abs_error": _max_error(case, per_rank),
            "forward_bytes_max": float(max(forward)),
            "forward_bytes_mean": sum(forward) / world_size,
            "train_bytes_max": float(max(total)),
            "train_bytes_mean": sum(total) / world_size,
            "score_pairs_max": float(max(r["work"].get("score_pairs", 0) for r in per_rank)),
        }
    result: dict[str, Any] = {"cases": rows, "seconds": seconds}
    if checkpoint:
        ways = [r[1] for r in ranks]
        result["checkpoint"] = {
            way: {
                "attention_forwards": float(max(w[way]["work"].get("attention_forward", 0) for w in ways)),
                "train_bytes_max": float(max(w[way]["total_bytes"] for w in ways)),
                "max_grad_error_vs_none": max(
                    max(
                        float((a - b).abs().max()) for a, b in zip(w[way]["dparams"], w["none"]["dparams"], strict=True)
                    )
                    for w in ways
                ),
            }
            for way in ("none", "plain", "remat")
        }
    return result


def run_lightseq(
    world_size: int = 2,
    heads: int = 8,
    kv_heads: list[int] | None = None,
    chunk: int = 16,
    head_dim: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """`paperzoo run lightseq`: spawn `world_size` gloo CPU processes and report, for ring attention (non-causal,
    load-balanced causal, plain causal) and the head-parallel baseline, the max abs error of outputs and gradients
    against single-process attention and the bytes the busiest rank sends per training step (forward + backward),
    for each number of key/value heads; plus attention forwards per step under each checkpointing policy.

    Args:
        world_size: processes P (2-8 on a CPU).
        heads: query heads Hq (a multiple of P, for the head-parallel baseline).
        kv_heads: key/value head counts to compare (each divides Hq); [Hq, 2, 1] by default.
        chunk: tokens per rank.
        head_dim: head width.
        seed: input seed.
    """
    from paperzoo.core.errors import require

    kv_heads = [heads, 2, 1] if kv_heads is None else list(kv_heads)
    require(2 <= world_size <= 8, f"world_size must be 2..8 CPU processes, got {world_size}")
    require(heads % world_size == 0, f"heads ({heads}) must be a multiple of world_size ({world_size})")
    require(all(hk >= 1 and heads % hk == 0 for hk in kv_heads), f"each of kv_heads {kv_heads} must divide {heads}")
    require(chunk >= 1 and head_dim >= 1, f"chunk and head_dim must be positive, got {chunk}, {head_dim}")
    measured = measure_schemes(world_size, heads, kv_heads, chunk, head_dim, seed)
    report: dict[str, float] = {}
    for name, row in measured["cases"].items():
        report[f"{name}/max_abs_error"] = row["max_abs_error"]
        report[f"{name}/train_bytes_max"] = row["train_bytes_max"]
    for hk in kv_heads:
        hp = measured["cases"][f"P{world_size}/Hkv{hk}/head_parallel/full"]["train_bytes_max"]
        for mode in ("full", "balanced"):
            ring = measured["cases"][f"P{world_size}/Hkv{hk}/ring/{mode}"]["train_bytes_max"]
            report[f"P{world_size}/Hkv{hk}/ring_{mode}_over_head_parallel_bytes"] = ring / hp
    for way, row in measured["checkpoint"].items():
        report[f"checkpoint_{way}/attention_forwards"] = row["attention_forwards"]
    return report
