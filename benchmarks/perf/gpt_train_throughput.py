"""GPT training throughput: Lightning overhead, and our GPT against transformers' Llama at the same size.

Measures training tokens/s (steady-state steps only, after warmup) of three runs on the same random token batches:

1. `CausalLMTask` (the core `GPT`, AdamW, its default WSD schedule) fitted by a `lightning.Trainer`, as `paperzoo fit`
   runs it;
2. the same model (same config, seed, batches, AdamW and WSD schedule) in a plain PyTorch loop;
3. `transformers.LlamaForCausalLM` of the same size (SDPA attention, tied embeddings) in the same plain loop.

Speed is reported as ratios measured in the same process, with the runs interleaved over a few rounds (median), so
that the load of a shared machine affects all of them alike. Run it with

    uv run --group peers python benchmarks/perf/gpt_train_throughput.py [--device cuda] [--steps 30] ...

(on a CPU that other jobs load, add `--threads 1`: two busy-waiting threads there ran about 10x slower).
It prints a table and writes `benchmarks/perf/results/gpt_train_throughput.json` (rendered by `paperzoo report`).
"""

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from paperzoo.core.io import atomic_write_text
from paperzoo.core.layers import swiglu_hidden_dim
from paperzoo.core.lm.task import CausalLMTask
from paperzoo.core.profiling import device_name, synchronize
from paperzoo.core.schedulers import WarmupStableDecay

VOCAB_SIZE = 257  # the byte vocabulary of paperzoo's LM configs
RESULTS = Path(__file__).resolve().parent / "results" / "gpt_train_throughput.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the timed ones")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is reported")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's); 1 on a loaded shared machine"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def token_loader(args: argparse.Namespace) -> DataLoader:
    """warmup + steps random windows [B, T + 1] (int64), the same for every run; one epoch is one measurement."""
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.warmup + args.steps, args.batch_size, args.seq_len + 1)
    batches = torch.randint(0, VOCAB_SIZE, shape, generator=generator)
    return DataLoader(list(batches), batch_size=None, shuffle=False)


class StepTimer(L.Callback):
    """Clock from the start of step `warmup` to the end of the last step; keeps the last step's loss."""

    def __init__(self, warmup: int, last: int, device: torch.device):
        self.warmup, self.last, self.device = warmup, last, device
        self.started = self.stopped = 0.0
        self.loss = float("nan")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if idx == self.warmup:
            synchronize(self.device)
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, out: Any, batch: Any, idx: int):
        if idx == self.last:
            synchronize(self.device)
            self.stopped = time.perf_counter()
            self.loss = float(out["loss"])


def gpt_task(args: argparse.Namespace) -> CausalLMTask:
    torch.manual_seed(args.seed)
    return CausalLMTask(VOCAB_SIZE, args.dim, args.n_layers, args.n_heads, max_seq_len=args.seq_len)


def run_lightning(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(tokens/s, last loss) of `CausalLMTask` fitted by a Trainer configured as `paperzoo fit` does."""
    total = args.warmup + args.steps
    timer = StepTimer(args.warmup, total - 1, device)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="32-true",
        max_steps=total,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
        callbacks=[timer],
    )
    trainer.fit(gpt_task(args), train_dataloaders=token_loader(args))
    return args.steps * args.batch_size * args.seq_len / (timer.stopped - timer.started), timer.loss


def run_plain(model: torch.nn.Module, forward: Callable, args: argparse.Namespace, device: torch.device):
    """(tokens/s, last loss) of a plain loop with the task's optimizer and schedule (AdamW defaults, WSD)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = WarmupStableDecay(optimizer, total_steps=args.warmup + args.steps)
    started = 0.0
    for index, batch in enumerate(token_loader(args)):
        if index == args.warmup:
            synchronize(device)
            started = time.perf_counter()
        batch = batch.to(device, non_blocking=True)
        logits = forward(model, batch[:, :-1])  # [B, T, V]
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    synchronize(device)
    seconds = time.perf_counter() - started
    return args.steps * args.batch_size * args.seq_len / seconds, loss.item()


def llama_model(args: argparse.Namespace) -> torch.nn.Module | None:
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return None
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=args.dim,
        intermediate_size=swiglu_hidden_dim(args.dim),
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_heads,
        max_position_embeddings=args.seq_len,
        tie_word_embeddings=True,
        use_cache=False,  # training: no KV cache
        attn_implementation="sdpa",
    )
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are one parameter, counted once


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # the Trainer's banner lines
    warnings.filterwarnings("ignore", message=".*(val_dataloader|LeafSpec).*")
    device = torch.device(args.device)
    llama = llama_model(args)
    if llama is None:
        print("transformers is not installed (uv run --group peers ...): skipping the LlamaForCausalLM row")
    runs: dict[str, Callable[[], tuple[float, float]]] = {
        "lightning": lambda: run_lightning(args, device),
        "plain": lambda: run_plain(gpt_task(args).model, lambda m, x: m(x), args, device),
    }
    if llama is not None:
        runs["llama"] = lambda: run_plain(llama_model(args), lambda m, x: m(input_ids=x).logits, args, device)

    speeds: dict[str, list[float]] = {name: [] for name in runs}
    losses: dict[str, float] = {}
    names = list(runs)
    for round_index in range(args.rounds):
        shift = round_index % len(names)  # rotate the order so no run is always first
        for name in names[shift:] + names[:shift]:
            speed, losses[name] = runs[name]()
            speeds[name].append(speed)
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {speeds[n][-1]:,.0f} tok/s" for n in names))
    median = {name: statistics.median(values) for name, values in speeds.items()}
    print(
        "last-step loss (Lightning and plain should agree): "
        + ", ".join(f"{n} {loss:.4f}" for n, loss in losses.items())
    )

    gpt_params = count_parameters(gpt_task(args).model)
    lightning_ratio = median["lightning"] / median["plain"]
    rows = [
        {
            "implementation": "paperzoo GPT, Lightning Trainer (CausalLMTask)",
            "params": f"{gpt_params:,}",
            "tokens/s": f"{median['lightning']:,.0f}",
            "ratio": f"{lightning_ratio:.2f}x (vs plain PyTorch)",
        },
        {
            "implementation": "paperzoo GPT, plain PyTorch loop",
            "params": f"{gpt_params:,}",
            "tokens/s": f"{median['plain']:,.0f}",
            "ratio": f"{median['plain'] / median['llama']:.2f}x (vs transformers Llama)"
            if "llama" in median
            else "reference",
        },
    ]
    if llama is not None:
        rows.append(
            {
                "implementation": "transformers LlamaForCausalLM, plain PyTorch loop",
                "params": f"{count_parameters(llama):,}",
                "tokens/s": f"{median['llama']:,.0f}",
                "ratio": "reference",
            }
        )
    spread = max((max(v) - min(v)) / statistics.median(v) for v in speeds.values())
    overhead = "met" if lightning_ratio >= 0.95 else "not met"
    notes = (
        f"Medians of {args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warmup steps, "
        f"B={args.batch_size}, T={args.seq_len}. The Lightning row divided by the plain loop of the same model gives "
        f"Lightning's overhead; the 5% target (ratio >= 0.95) is {overhead}. Rounds of one run differed by up to "
        f"{spread:.0%} here, so ratios within that are noise."
    )
    if llama is not None:
        notes += " The plain row divided by Llama's compares our GPT with transformers' at the same size and loop."
    record = {
        "title": "GPT training throughput",
        "device": device_name(device),
        "command": "uv run --group peers python "
        + shlex.join(["benchmarks/perf/gpt_train_throughput.py", *sys.argv[1:]]),
        "columns": ["implementation", "params", "tokens/s", "ratio"],
        "rows": rows,
        "notes": notes,
    }

    widths = [max(len(c), *(len(row[c]) for row in rows)) for c in record["columns"]]
    print(f"\n{record['title']} on {record['device']}")
    print("  ".join(c.ljust(w) for c, w in zip(record["columns"], widths, strict=True)))
    for row in rows:
        print("  ".join(row[c].ljust(w) for c, w in zip(record["columns"], widths, strict=True)))
    print(notes)
    atomic_write_text(args.output, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
