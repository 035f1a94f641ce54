"""TSMixer training-step throughput and memory: ours against `transformers`' PatchTSMixer on the same config.

Both models get the same weights (ported with `paperzoo.timeseries.tsmixer.porting.to_patchtsmixer`), the same
random batches and the same step (forward, MSE on the de-normalised forecast, backward, AdamW step). Throughput is
windows/s over the timed steps after warmup; rounds alternate between the two models in one process and the median
is reported, so machine load affects both alike. Memory is measured per step as the bytes of the tensors autograd
saves for backward (distinct storages, parameters excluded; `torch.autograd.graph.saved_tensors_hooks`), which is
device-independent and the part of a step's peak that depends on the implementation; on CUDA the peak allocated
memory of a step (`torch.cuda.max_memory_allocated`) is reported too.

    uv run --group peers python benchmarks/perf/tsmixer_vs_patchtsmixer.py [--device cuda] [--rounds 5] ...

It prints a table and writes `benchmarks/perf/results/tsmixer_vs_patchtsmixer.json` (rendered by `paperzoo report`).
"""

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from paperzoo.core.io import atomic_write_text
from paperzoo.core.profiling import device_name, saved_activation_bytes, synchronize
from paperzoo.timeseries.tsmixer.model import TSMixer
from paperzoo.timeseries.tsmixer.porting import to_patchtsmixer

RESULTS = Path(__file__).resolve().parent / "results" / "tsmixer_vs_patchtsmixer.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=7)
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--prediction-length", type=int, default=96)
    parser.add_argument("--patch-length", type=int, default=16)
    parser.add_argument("--patch-stride", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=16)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--mode", default="common_channel", choices=["common_channel", "mix_channel"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions; the median is reported")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


class Runner:
    """One model, its optimizer and a step function; `measure` times `steps` steps after `warmup`."""

    def __init__(self, model: torch.nn.Module, forward, device: torch.device):
        self.model, self.forward, self.device = model.to(device).train(), forward, device
        self.optimizer = torch.optim.AdamW(model.parameters())

    def step(self, past: torch.Tensor, future: torch.Tensor) -> float:
        loss = F.mse_loss(self.forward(past), future)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def measure(self, data: list[tuple[torch.Tensor, torch.Tensor]], warmup: int) -> float:
        for past, future in data[:warmup]:
            self.step(past, future)
        synchronize(self.device)
        started = time.perf_counter()
        for past, future in data[warmup:]:
            self.step(past, future)
        synchronize(self.device)
        return sum(p.shape[0] for p, _ in data[warmup:]) / (time.perf_counter() - started)

    def saved_bytes(self, past: torch.Tensor, future: torch.Tensor) -> int:
        """Bytes autograd saves for backward in one forward (`paperzoo.core.profiling.saved_activation_bytes`)."""
        return saved_activation_bytes(self.model, lambda: F.mse_loss(self.forward(past), future))

    def peak_cuda_bytes(self, past: torch.Tensor, future: torch.Tensor) -> float:
        if self.device.type != "cuda":
            return float("nan")
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.step(past, future)
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - before


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    ours = TSMixer(
        args.channels,
        args.context_length,
        args.prediction_length,
        patch_length=args.patch_length,
        patch_stride=args.patch_stride,
        d_model=args.d_model,
        num_layers=args.num_layers,
        mode=args.mode,
        channel_gate_before_mlp=True,  # the released code's order, so that both compute the same function
    )
    theirs = to_patchtsmixer(ours)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.warmup + args.steps, args.batch_size)
    data = [
        (
            torch.randn(args.batch_size, args.context_length, args.channels, generator=generator).to(device),
            torch.randn(args.batch_size, args.prediction_length, args.channels, generator=generator).to(device),
        )
        for _ in range(shape[0])
    ]
    runners = {
        "paperzoo TSMixer": Runner(ours, ours.forward, device),
        "transformers PatchTSMixerForPrediction": Runner(
            theirs, lambda past: theirs(past_values=past, return_loss=False).prediction_outputs, device
        ),
    }
    with torch.no_grad():
        check = (
            runners["paperzoo TSMixer"].model.eval()(data[0][0])
            - theirs.eval()(past_values=data[0][0]).prediction_outputs
        )
    assert check.abs().max() < 1e-4, f"the two models disagree by {check.abs().max():.2e} on the same weights"
    for runner in runners.values():
        runner.model.train()

    throughput: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            throughput[name].append(runner.measure(data, args.warmup))
    memory = {name: runner.saved_bytes(*data[0]) for name, runner in runners.items()}
    cuda_peak = {name: runner.peak_cuda_bytes(*data[0]) for name, runner in runners.items()}
    median = {name: statistics.median(values) for name, values in throughput.items()}
    reference = median["transformers PatchTSMixerForPrediction"]
    ref_memory = memory["transformers PatchTSMixerForPrediction"]
    params = sum(p.numel() for p in ours.parameters())
    rows = []
    for name in runners:
        is_ref = name.startswith("transformers")
        row = {
            "implementation": name,
            "params": f"{params:,}",
            "windows/s": f"{median[name]:,.0f}",
            "throughput ratio": "reference" if is_ref else f"{median[name] / reference:.2f}x",
            "saved activations MiB": f"{memory[name] / 2**20:.1f}",
            "memory ratio": "reference" if is_ref else f"{memory[name] / ref_memory:.2f}x",
        }
        if device.type == "cuda":
            row["CUDA peak MiB"] = f"{cuda_peak[name] / 2**20:.1f}"
        rows.append(row)
    spread = {name: (max(v) - min(v)) / statistics.median(v) for name, v in throughput.items()}
    result = {
        "title": "TSMixer vs transformers PatchTSMixer: training step",
        "device": device_name(device),
        "command": "uv run --group peers python benchmarks/perf/tsmixer_vs_patchtsmixer.py " + shlex.join(sys.argv[1:]),
        "columns": list(rows[0]),
        "rows": rows,
        "notes": (
            f"Same weights (ported), same batches, forward + MSE + backward + AdamW; mode={args.mode}, "
            f"C={args.channels}, L={args.context_length}, H={args.prediction_length}, P={args.patch_length}, "
            f"S={args.patch_stride}, D={args.d_model}, {args.num_layers} layers, B={args.batch_size}. Medians of "
            f"{args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warmup steps; rounds of one "
            f"model spread by up to {max(spread.values()):.0%}. Memory: bytes autograd saves for backward "
            "(distinct storages, parameters excluded); lower is better (ratio < 1 means ours saves less)."
        ),
    }
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(result["notes"])
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
