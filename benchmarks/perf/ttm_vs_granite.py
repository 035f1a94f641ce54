"""Tiny Time Mixers training-step throughput and memory: ours against granite-tsfm's `TinyTimeMixerForPrediction`.

Both models get the same weights (ported with `paperzoo.timeseries.ttm.port.to_granite`; the script first checks
that their forecasts agree), the same random batches and the same step (forward, MSE on the de-normalised
forecast, backward, AdamW step). The default config is the paper's 512-96 TTM (p = 64, d = 192, 3
adaptive-patching levels of 2 layers, decoder d = 128 x 2 layers, resolution prefix), channel-independent as in
pre-training; `--finetune` benchmarks the fine-tuning setup instead (frozen backbone, channel-mixing decoder,
exogenous mixer on the last channel). Throughput is windows/s over the timed steps after warmup; rounds alternate
between the two models in one process and the median is reported, so machine load affects both alike. Memory is
the bytes of the tensors autograd saves for backward in one step (distinct storages, parameters excluded), which
does not depend on the device; on CUDA the peak allocated memory of a step is reported too.

    uv run --group peers python benchmarks/perf/ttm_vs_granite.py [--device cuda] [--rounds 5] [--threads 1] ...

It prints a table and writes `benchmarks/perf/results/ttm_vs_granite.json` (rendered by `paperzoo report`).
"""

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from paperzoo.core.io import atomic_write_text
from paperzoo.core.profiling import device_name, saved_activation_bytes, synchronize
from paperzoo.timeseries.ttm.model import TinyTimeMixer, count_parameters
from paperzoo.timeseries.ttm.port import to_granite

RESULTS = Path(__file__).resolve().parent / "results" / "ttm_vs_granite.json"
OURS, PEER = "paperzoo TinyTimeMixer", "granite-tsfm TinyTimeMixerForPrediction"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--prediction-length", type=int, default=96)
    parser.add_argument("--patch-length", type=int, default=64)
    parser.add_argument("--channels", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--finetune", action="store_true", help="frozen backbone, channel mixing, exogenous mixer")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a loaded shared machine)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def build(args: argparse.Namespace) -> TinyTimeMixer:
    torch.manual_seed(args.seed)
    extra = {}
    if args.finetune:
        extra = dict(num_channels=args.channels, decoder_channel_mixing=True, exogenous_channels=[args.channels - 1])
    model = TinyTimeMixer(
        context_length=args.context_length,
        prediction_length=args.prediction_length,
        patch_length=args.patch_length,
        resolution_prefix=True,
        **extra,
    )
    if args.finetune:
        model.freeze_backbone()
    return model


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def batches(args: argparse.Namespace, device: torch.device) -> list[Batch]:
    generator = torch.Generator().manual_seed(args.seed)
    out = []
    for _ in range(args.warmup + args.steps):
        past = torch.randn(args.batch_size, args.context_length, args.channels, generator=generator)
        future = torch.randn(args.batch_size, args.prediction_length, args.channels, generator=generator)
        resolution = torch.randint(0, 7, (args.batch_size,), generator=generator)
        out.append((past.to(device), future.to(device), resolution.to(device)))
    return out


class Runner:
    """A model, its AdamW over the trainable parameters, and its training step."""

    def __init__(self, model: torch.nn.Module, forward: Callable[[Batch], torch.Tensor], target: Callable, device):
        self.model, self.forward, self.target, self.device = model.to(device).train(), forward, target, device
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

    def step(self, batch: Batch) -> float:
        loss = F.mse_loss(self.forward(batch), self.target(batch))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def measure(self, data: list[Batch], warmup: int) -> float:
        """Windows per second over the steps after `warmup`."""
        started = 0.0
        for index, batch in enumerate(data):
            if index == warmup:
                synchronize(self.device)
                started = time.perf_counter()
            self.step(batch)
        synchronize(self.device)
        return (len(data) - warmup) * data[0][0].shape[0] / (time.perf_counter() - started)

    def saved_bytes(self, batch: Batch) -> int:
        """Bytes autograd saves for backward in one forward (`paperzoo.core.profiling.saved_activation_bytes`)."""
        return saved_activation_bytes(self.model, lambda: F.mse_loss(self.forward(batch), self.target(batch)))

    def peak_cuda_bytes(self, batch: Batch) -> float:
        synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.step(batch)
        synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - before


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ours = build(args)
    peer = to_granite(ours)
    if args.finetune:  # same frozen set on the peer: its backbone
        for p in peer.backbone.parameters():
            p.requires_grad_(False)
    targets = ours.target_channels

    def target(batch: Batch) -> torch.Tensor:
        return batch[1] if targets is None else batch[1][..., targets]

    def ours_forward(batch: Batch) -> torch.Tensor:
        return runners[OURS].model(batch[0], batch[2], batch[1])

    def peer_forward(batch: Batch) -> torch.Tensor:
        return (
            runners[PEER]
            .model(past_values=batch[0], future_values=batch[1], freq_token=batch[2], return_loss=False)
            .prediction_outputs
        )

    runners = {OURS: Runner(ours, ours_forward, target, device), PEER: Runner(peer, peer_forward, target, device)}
    data = batches(args, device)
    with torch.no_grad():  # same weights, same forecasts (dropout off); exogenous mixers agree on standardised data
        ours.eval(), peer.eval()
        past = data[0][0]
        if args.finetune:
            past = past - past.mean(1, keepdim=True)
            past = past / past.std(1, keepdim=True, unbiased=False) * (1 - 1e-5) ** 0.5
        check = (past, data[0][1], data[0][2])
        gap = (ours_forward(check) - peer_forward(check)).abs().max().item()
        ours.train(), peer.train()
    print(f"max forecast difference on identical weights: {gap:.2e}")

    speeds: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            speeds[name].append(runners[name].measure(data, args.warmup))
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {speeds[n][-1]:,.0f} windows/s" for n in names))
    median = {name: statistics.median(values) for name, values in speeds.items()}
    memory = {name: runner.saved_bytes(data[0]) for name, runner in runners.items()}
    cuda = {name: runner.peak_cuda_bytes(data[0]) for name, runner in runners.items()} if device.type == "cuda" else {}

    columns = ["implementation", "params", "windows/s", "ratio", "saved activations MiB", "memory ratio"]
    if cuda:
        columns.append("peak CUDA MiB")
    rows = []
    for name in names:
        is_ref = name == PEER
        row = {
            "implementation": name,
            "params": f"{count_parameters(runners[name].model):,}",
            "windows/s": f"{median[name]:,.0f}",
            "ratio": "reference" if is_ref else f"{median[name] / median[PEER]:.2f}x (vs granite-tsfm)",
            "saved activations MiB": f"{memory[name] / 2**20:.1f}",
            "memory ratio": "reference" if is_ref else f"{memory[name] / memory[PEER]:.2f}x",
        }
        if cuda:
            row["peak CUDA MiB"] = f"{cuda[name] / 2**20:.1f}"
        rows.append(row)
    ratio = median[OURS] / median[PEER]
    spread = max((max(v) - min(v)) / statistics.median(v) for v in speeds.values())
    setup = "pre-training"
    if args.finetune:
        setup = "fine-tuning (frozen backbone, channel-mixing decoder, exogenous mixer)"
    notes = (
        f"TTM {setup}, L={args.context_length}, H={args.prediction_length}, p={args.patch_length}, "
        f"C={args.channels}, B={args.batch_size}. Medians of {args.rounds} interleaved rounds of {args.steps} AdamW "
        f"steps after {args.warmup} warmup steps. Ours/granite throughput ratio {ratio:.2f}x: the 1.0x goal is "
        f"{'met' if ratio >= 1.0 else 'not met'}. Rounds of one model differed by up to {spread:.0%}, so ratios "
        f"within that are noise. Forecasts on identical weights differ by at most {gap:.1e}. Saved activations: "
        "bytes autograd keeps for backward (our RevIN detaches the window statistics, granite's scaler does not)."
    )
    record = {
        "title": "TTM training throughput vs granite-tsfm",
        "device": device_name(device),
        "command": "uv run --group peers python " + shlex.join(["benchmarks/perf/ttm_vs_granite.py", *sys.argv[1:]]),
        "columns": columns,
        "rows": rows,
        "notes": notes,
    }
    widths = [max(len(c), *(len(row[c]) for row in rows)) for c in columns]
    print(f"\n{record['title']} on {record['device']}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(row[c].ljust(w) for c, w in zip(columns, widths, strict=True)))
    print(notes)
    atomic_write_text(args.output, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
