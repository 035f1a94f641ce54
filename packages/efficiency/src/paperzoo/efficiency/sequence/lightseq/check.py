"""Claim check of LightSeq (CATALOG 9): "LightSeq: Sequence Level Parallelism for Distributed Training of Long
Context Transformers", arXiv:2310.03294.

The paper's claims that fit a CPU: DistAttn is exact attention whatever the head layout (MHA, GQA, MQA); it sends
less than head-parallel attention when there are fewer key/value heads than workers (the ring moves only K/V heads,
head parallelism moves every query head and the output); its causal schedule balances the work; and its
checkpointing skips one attention forward per layer. Wall-clock speedups need several accelerators and are out of
scope; no timings are judged.

Setup (fixed before the first full run): gloo CPU processes spawned by `launch.measure_schemes`, Llama-7B's
attention shape (Hq = 32 query heads of width 128) with Hkv in {32 (MHA), 8, 2 (GQA), 1 (MQA)}, 16 tokens per
rank, float64. For every Hkv and P, in the same spawn: ring attention non-causal, causal with the paper's load
balancing, causal without it, and the head-parallel (Ulysses-style all-to-all) baseline, each forward and backward
on the same seeded inputs; every rank counts the bytes it sends through the same `comm.Comm`. Full mode P in {2, 4};
quick mode P = 4 with Hkv in {32, 2, 1}. Bytes scale linearly with tokens and dtype width, so ratios are what
transfers to other sizes; the head width matters a little (the balanced schedule also sends per-row statistics).

Decision rule: (1) max abs error of outputs and q/k/v gradients of every ring and head-parallel case against
single-process dense attention <= 1e-10; (2) for every P and every Hkv < P, the busiest rank's bytes per training
step (forward + backward) of the ring, non-causal and load-balanced causal, are strictly below head-parallel's
(ratio <= 0.999); (3) at P = 4 the busiest rank's attention work (visible score pairs) with load balancing is
strictly below the plain causal ring's; (4) rematerialisation-aware checkpointing runs at least one attention
forward fewer per layer and step than plain checkpointing, with gradients equal (<= 1e-10) to no checkpointing.
Every case's bytes and ratio are recorded, including those where the ring sends more (MHA, and Hkv >= P).
"""

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.efficiency.sequence.lightseq.launch import measure_schemes
from paperzoo.efficiency.sequence.lightseq.ring import schedule_work

HEADS, HEAD_DIM, CHUNK = 32, 128, 16
EXACT_TOLERANCE = 1e-10
STRICTLY_BELOW = 0.999
FULL = {"worlds": (2, 4), "kv_heads": (32, 8, 2, 1)}
QUICK = {"worlds": (4,), "kv_heads": (32, 2, 1)}


def check(quick: bool = False) -> ClaimResult:
    with torch_threads(1):
        return _check(quick)


def _check(quick: bool) -> ClaimResult:
    setting = QUICK if quick else FULL
    rows: dict[str, dict[str, float]] = {}
    checkpoint: dict[str, dict[str, float]] = {}
    seconds = {}
    for world in setting["worlds"]:
        measured = measure_schemes(world, HEADS, setting["kv_heads"], CHUNK, HEAD_DIM, checkpoint=world == 4)
        rows.update(measured["cases"])
        checkpoint = measured.get("checkpoint", checkpoint)
        seconds[f"spawn_P{world}_s"] = round(measured["seconds"], 1)

    ring: dict[str, float] = {}
    head_parallel: dict[str, float] = {}
    unbalanced: dict[str, float] = {}
    criteria = [
        Criterion(
            "max abs error of outputs and gradients, every case, vs single-process attention",
            max(row["max_abs_error"] for row in rows.values()),
            "<=",
            EXACT_TOLERANCE,
        )
    ]
    curves: dict[str, list[tuple[float, float]]] = {}
    for world in setting["worlds"]:
        for hk in setting["kv_heads"]:
            base = f"P{world}/Hkv{hk}"
            hp = rows[f"{base}/head_parallel/full"]
            head_parallel[f"{base}/train_bytes_max"] = hp["train_bytes_max"]
            head_parallel[f"{base}/forward_bytes_max"] = hp["forward_bytes_max"]
            unb = rows[f"{base}/ring/unbalanced"]
            unbalanced[f"{base}/train_bytes_max"] = unb["train_bytes_max"]
            unbalanced[f"{base}/score_pairs_max"] = unb["score_pairs_max"]
            for mode in ("full", "balanced"):
                row = rows[f"{base}/ring/{mode}"]
                ratio = row["train_bytes_max"] / hp["train_bytes_max"]
                ring[f"{base}/{mode}/train_bytes_max"] = row["train_bytes_max"]
                ring[f"{base}/{mode}/train_bytes_ratio_vs_head_parallel"] = ratio
                ring[f"{base}/{mode}/forward_bytes_ratio_vs_head_parallel"] = (
                    row["forward_bytes_max"] / hp["forward_bytes_max"]
                )
                curves.setdefault(f"ring {mode} / head-parallel, P={world}", []).append((hk, ratio))
                if hk < world:
                    criteria.append(
                        Criterion(
                            f"bytes ring {mode} / head-parallel, P={world}, Hkv={hk}", ratio, "<=", STRICTLY_BELOW
                        )
                    )
            ring[f"{base}/balanced/score_pairs_max"] = rows[f"{base}/ring/balanced"]["score_pairs_max"]
    world = 4
    hk = setting["kv_heads"][-1]
    balance = (
        rows[f"P{world}/Hkv{hk}/ring/balanced"]["score_pairs_max"]
        / rows[f"P{world}/Hkv{hk}/ring/unbalanced"]["score_pairs_max"]
    )
    ring["P4/busiest_rank_work_balanced_over_unbalanced"] = balance
    criteria.append(
        Criterion("busiest rank's attention work, balanced / plain causal ring, P=4", balance, "<=", STRICTLY_BELOW)
    )
    for p in (8, 16):  # the same schedules at larger P, from the schedule alone (not run)
        lengths = [CHUNK] * p
        ring[f"P{p}/busiest_rank_work_balanced_over_unbalanced (schedule)"] = max(
            schedule_work(lengths, True, True)
        ) / max(schedule_work(lengths, True, False))
    fewer = checkpoint["plain"]["attention_forwards"] - checkpoint["remat"]["attention_forwards"]
    criteria.append(Criterion("attention forwards per layer-step, plain - remat-aware checkpoint", fewer, ">=", 1.0))
    criteria.append(
        Criterion(
            "max gradient error of remat-aware checkpointing vs none",
            checkpoint["remat"]["max_grad_error_vs_none"],
            "<=",
            EXACT_TOLERANCE,
        )
    )
    ring.update({f"checkpoint_remat/{k}": v for k, v in checkpoint["remat"].items()})
    return ClaimResult(
        key="lightseq",
        claim="Sequence-parallel ring attention (DistAttn) is exact for MHA, GQA and MQA, communicates less than "
        "head-parallel attention when there are fewer key/value heads than workers, balances causal work, and its "
        "checkpointing skips one attention forward per layer.",
        paper_reported="Up to 4.7x less communication than Megatron-LM on popular LLMs, agnostic to MHA/GQA/MQA; "
        "1.24-2.01x end-to-end speedup and 2-8x longer sequences than Megatron-LM on models with fewer heads; a "
        "checkpointing scheme that bypasses one attention forward (arXiv:2310.03294, abstract).",
        decision_rule="(1) max abs error of outputs and gradients of every ring and head-parallel case vs "
        f"single-process attention <= {EXACT_TOLERANCE:g} (float64); (2) for every P and Hkv < P, busiest-rank bytes "
        f"per training step of the ring (non-causal and balanced causal) / head-parallel <= {STRICTLY_BELOW}; "
        f"(3) busiest rank's attention work balanced / plain causal ring at P=4 <= {STRICTLY_BELOW}; (4) remat-aware "
        f"checkpointing >= 1 attention forward fewer per layer-step than plain checkpointing, gradients within "
        f"{EXACT_TOLERANCE:g} of no checkpointing",
        method=ring,
        baselines={
            "head_parallel (all-to-all)": head_parallel,
            "ring causal without load balancing": unbalanced,
            "plain checkpointing": checkpoint["plain"],
            "no checkpointing": checkpoint["none"],
        },
        criteria=criteria,
        curves=curves,
        plot={
            "xlabel": "key/value heads (Hq = 32)",
            "ylabel": "bytes per training step, ring / head-parallel (busiest rank)",
            "xscale": "log",
            "yscale": "log",
        },
        config={
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "tokens_per_rank": CHUNK,
            "dtype": "float64",
            "backend": "gloo, CPU, 1 thread per process",
            **{k: list(v) for k, v in setting.items()},
            **seconds,
            "errors": {name: row["max_abs_error"] for name, row in rows.items()},
            "bytes": {name: row["train_bytes_max"] for name, row in rows.items()},
        },
    )
