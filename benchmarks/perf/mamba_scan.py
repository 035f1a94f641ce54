"""Mamba's selective scan and block: forward + backward tokens/s and peak memory against mambapy and transformers.

Two levels, each on identical inputs (and, for blocks, identical weights) in one process:

- scan: `paperzoo` `selective_scan` (chunked two-level scan with a hand-written backward) against mambapy's
  `MambaBlock.selective_scan` (its Blelloch parallel scan `mambapy.pscan`) and transformers' torch fallback of
  `mamba_selective_scan` (the slow path: a loop over positions), on u, delta [B, L, E], A [E, N], B, C [B, L, N], D;
- block: our `MambaMixer` against transformers' `MambaMixer` (slow path: no mamba-ssm kernels here) and mambapy's
  `MambaBlock` (pscan), all with our block's weights loaded.

At each L (default 1k, 4k, 16k) the implementations run interleaved over a few rounds (median), so machine load hits
them alike; ratios are ours / the fastest peer. Peak memory: on CUDA the allocator's peak over one forward+backward;
on the CPU the peak of live bytes replayed from the profiler's memory events of one forward+backward. Cost growth
with L: seconds per token at L divided by seconds per token at the shortest L (1.0 = linear).
A peer that is not installed (the GPU machine may have neither) is skipped with a note; the slow path's loop is
skipped above `--max-slow-len` (its time per token is flat, measured below that length).

    uv run --group peers python benchmarks/perf/mamba_scan.py [--device cuda] [--lengths 1024 4096 16384] ...

(on a CPU that other jobs load, add `--threads 1`). It prints a table and writes
`benchmarks/perf/results/mamba_scan.json` (`mamba_scan_cuda.json` for `--device cuda`), rendered by `paperzoo report`.
"""

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from paperzoo.core.io import atomic_write_text
from paperzoo.core.profiling import device_name, peak_memory_bytes, synchronize
from paperzoo.efficiency.sequence.mamba.block import MambaMixer
from paperzoo.efficiency.sequence.mamba.scan import selective_scan

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--dim", type=int, default=64, help="block width D (the scan runs on E = 2D channels)")
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is reported")
    parser.add_argument("--max-slow-len", type=int, default=1024, help="longest L for transformers' position loop")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args()


# --- the implementations: each returns a function that runs one forward + backward ------------------------------
def scan_inputs(args: argparse.Namespace, length: int, device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(args.seed)
    batch, channels, state = args.batch_size, 2 * args.dim, args.d_state
    u = torch.randn(batch, length, channels, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, channels, generator=g) - 4)
    A = -torch.arange(1.0, state + 1).repeat(channels, 1)
    B = torch.randn(batch, length, state, generator=g)
    C = torch.randn(batch, length, state, generator=g)
    D = torch.ones(channels)
    return [t.to(device).requires_grad_() for t in (u, delta, A, B, C, D)]


def scan_runs(args: argparse.Namespace, length: int, device: torch.device) -> dict[str, Callable[[], None]]:
    tensors = scan_inputs(args, length, device)
    weights = torch.randn(tensors[0].shape, generator=torch.Generator().manual_seed(1)).to(device)

    def backward(y: torch.Tensor) -> None:
        (y * weights).sum().backward()
        for t in tensors:
            t.grad = None

    runs: dict[str, Callable[[], None]] = {"paperzoo selective_scan": lambda: backward(selective_scan(*tensors))}
    try:
        from mambapy.mamba import MambaBlock

        runs["mambapy pscan"] = lambda: backward(MambaBlock.selective_scan(None, *tensors))
    except ImportError:
        pass
    try:
        from transformers.models.mamba.modeling_mamba import mamba_selective_scan

        if length <= args.max_slow_len:

            def slow() -> None:
                u, delta, A, B, C, D = tensors
                y = mamba_selective_scan(
                    u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D
                )
                backward(y.transpose(1, 2))

            runs["transformers slow path (loop)"] = slow
    except ImportError:
        pass
    return runs


def block_runs(args: argparse.Namespace, length: int, device: torch.device) -> dict[str, Callable[[], None]]:
    torch.manual_seed(args.seed)
    ours = MambaMixer(args.dim, d_state=args.d_state).to(device)
    x = torch.randn(args.batch_size, length, args.dim, generator=torch.Generator().manual_seed(2)).to(device)
    x.requires_grad_()

    def run(block: torch.nn.Module) -> Callable[[], None]:
        def once() -> None:
            block(x).square().mean().backward()
            block.zero_grad(set_to_none=True)
            x.grad = None

        return once

    runs = {"paperzoo MambaMixer": run(ours)}
    try:
        from mambapy.mamba import MambaBlock, MambaConfig

        theirs = MambaBlock(MambaConfig(d_model=args.dim, n_layers=1, d_state=args.d_state, pscan=True))
        theirs.load_state_dict(ours.state_dict())
        runs["mambapy MambaBlock (pscan)"] = run(theirs.to(device))
    except ImportError:
        pass
    try:
        from transformers import MambaConfig as HFMambaConfig
        from transformers.models.mamba.modeling_mamba import MambaMixer as HFMambaMixer

        if length <= args.max_slow_len:
            config = HFMambaConfig(hidden_size=args.dim, state_size=args.d_state, time_step_rank=ours.dt_rank)
            hf = HFMambaMixer(config, layer_idx=0)
            hf.load_state_dict(ours.state_dict())
            runs["transformers MambaMixer (slow path)"] = run(hf.to(device))
    except ImportError:
        pass
    return runs


def missing_peers() -> list[str]:
    missing = []
    for module, name in (("mambapy", "mambapy"), ("transformers", "transformers")):
        try:
            __import__(module)
        except ImportError:
            missing.append(name)
    return missing


# --- measurement ------------------------------------------------------------------------------------------------
def seconds(run: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def peak_memory_mb(run: Callable[[], None], device: torch.device) -> float:
    """Peak bytes allocated during one forward + backward, above what was allocated before it (MiB)."""
    return peak_memory_bytes(run, device) / 2**20


def measure(runs: dict[str, Callable[[], None]], args: argparse.Namespace, device: torch.device):
    """name -> (median seconds of one forward + backward, peak MiB), rounds interleaved and rotated."""
    for run in runs.values():  # warm up (allocator, first-call dispatch)
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for index in range(args.rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(seconds(runs[name], device))
    # The CPU profiler keeps every op event: for transformers' loop over positions (tens of ops per position) that
    # cost gigabytes at L = 1k, so its peak is not measured on the CPU (nan).
    return {
        name: (
            statistics.median(times[name]),
            float("nan") if "slow path" in name and device.type == "cpu" else peak_memory_mb(runs[name], device),
        )
        for name in names
    }


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    missing = missing_peers()
    for name in missing:
        print(f"{name} is not installed (uv run --group peers ...): skipping its rows")
    results: dict[str, dict[int, tuple[float, float]]] = {}
    for length in args.lengths:
        for level, build in (("scan", scan_runs), ("block", block_runs)):
            figures = measure(build(args, length, device), args, device)
            for name, value in figures.items():
                results.setdefault(f"{level}: {name}", {})[length] = value
            print(
                f"L={length} {level}: "
                + ", ".join(
                    f"{n} {args.batch_size * length / t:,.0f} tok/s {m:,.0f} MiB" for n, (t, m) in figures.items()
                )
            )
            del figures
            if device.type == "cuda":
                torch.cuda.empty_cache()

    first = min(args.lengths)
    rows = []
    for name, by_length in results.items():
        level = name.split(":")[0]
        ours_name = "scan: paperzoo selective_scan" if level == "scan" else "block: paperzoo MambaMixer"
        base = by_length.get(first)
        for length, (secs, peak) in sorted(by_length.items()):
            peers = [v[length][0] for n, v in results.items() if n.startswith(level) and n != ours_name and length in v]
            if name == ours_name and peers:
                ratio = f"{min(peers) / secs:.2f}x (vs fastest peer)"
            elif name == ours_name:
                ratio = "no peer installed"
            else:
                ratio = f"{secs / results[ours_name][length][0]:.2f}x ours' time"
            rows.append(
                {
                    "implementation": name,
                    "L": f"{length:,}",
                    "tokens/s": f"{args.batch_size * length / secs:,.0f}",
                    "peak MiB": f"{peak:,.1f}",
                    "time/token vs L=" + f"{first}": f"{(secs / length) / (base[0] / first):.2f}" if base else "-",
                    "ratio": ratio,
                }
            )
    for row in rows:
        print(" | ".join(str(v) for v in row.values()))
    notes = (
        f"Forward + backward of one batch (B={args.batch_size}, D={args.dim}, E={2 * args.dim}, N={args.d_state}), "
        f"median of {args.rounds} interleaved rounds after a warmup call; float32. 'ratio' on our rows is the "
        "fastest peer's time / ours (>1 = ours faster); on peer rows their time / ours. 'time/token vs L=...' is "
        "seconds per token relative to the shortest length: 1.0 means the cost grows linearly in L. transformers' "
        f"slow path loops over positions in Python and is run up to L={args.max_slow_len}; its CPU peak memory is "
        "not measured (the profiler's per-op events of that loop take gigabytes)."
    )
    if missing:
        notes += f" Not installed, skipped: {', '.join(missing)}."
    record = {
        "title": "Mamba selective scan and block, forward + backward",
        "device": device_name(device),
        "command": "uv run --group peers python " + shlex.join(["benchmarks/perf/mamba_scan.py", *sys.argv[1:]]),
        "columns": list(rows[0]) if rows else [],
        "rows": rows,
        "notes": notes,
    }
    output = args.output or RESULTS / ("mamba_scan_cuda.json" if device.type == "cuda" else "mamba_scan.json")
    import json

    atomic_write_text(output, json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
