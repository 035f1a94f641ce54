"""Claim check for SGConv (CATALOG 71, arXiv:2210.09298) on CPU-scaled LRA ListOps and Pathfinder.

The paper's claim: a global convolution works when (1) its kernel has sub-linearly many parameters (multi-scale
sub-kernels) and (2) its weights decay with distance; SGConv, built on both, matches or beats S4 on LRA and is
faster, and beats transformers by a wide margin. Here every model is the same `SequenceModel` backbone (same width,
depth, norms, SwiGLU MLP, mean pooling, classifier) with a different token mixer, trained by
`sequence.harness.train_and_evaluate` on the same generated data, in the same order, for the same number of steps
with the same optimizer and schedule:

- SGConv: multi-scale sub-kernels with decay alpha = 1/2, bidirectional (the reference's LRA setting);
- multi-scale without decay (`decay=False`);
- decay without multi-scale (`multiscale=False`: one d_k-tap sub-kernel interpolated over the whole length, times the
  same decay envelope);
- a dense learnable global kernel (`dense=True`, one parameter per position, no decay);
- S4D (`s4d`, bidirectional, d_state 64, S4D-Lin init);
- a transformer of the same size (`attention`, bidirectional, RoPE).

Speed: the harness's steps/s of the whole training run is recorded, and the decided ratio is measured separately on
the same batch by interleaving timed forward+backward steps of the SGConv and S4D models (median of repeated
rounds), so that the load from other processes on a shared machine hits both models alike.

Decision rule (fixed before the full run), on test accuracy averaged over the two tasks (and seeds): SGConv >
transformer; SGConv > multi-scale without decay; SGConv > decay without multi-scale; SGConv > the dense kernel;
SGConv >= S4D - 0.03 ("close to S4D"); and SGConv's training steps per second >= S4D's (interleaved timing on
Pathfinder, the longer task). Quick mode: ListOps only, fewer steps, one seed, SGConv/ablations/S4D/transformer
the same.
"""

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.efficiency.sequence.harness import train_and_evaluate
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule
from paperzoo.efficiency.sequence.lra.listops import ListOpsDataModule
from paperzoo.efficiency.sequence.lra.pathfinder import PathfinderDataModule
from paperzoo.efficiency.sequence.task import SequenceClassificationTask


@dataclass(frozen=True)
class TaskSetting:
    """One LRA task at CPU scale and its training budget."""

    name: str
    data: dict[str, Any]
    kernel_dim: int
    steps: int
    batch_size: int = 32


@dataclass(frozen=True)
class Setting:
    tasks: tuple[TaskSetting, ...]
    dim: int = 32
    depth: int = 2
    mlp_ratio: float = 2.0
    lr: float = 3e-3
    weight_decay: float = 0.01
    seeds: tuple[int, ...] = (0,)
    timing_rounds: int = 7
    s4d_gap: float = 0.03
    variants: tuple[str, ...] = field(default=("sgconv", "ms_no_decay", "decay_no_ms", "dense", "s4d", "attention"))


LISTOPS = dict(num_train=2000, num_val=100, num_test=500, min_length=16, max_length=128, max_depth=4, max_args=5)
PATHFINDER = dict(resolution=32, num_train=1000, num_val=100, num_test=400)

FULL = Setting(
    tasks=(
        TaskSetting("listops", LISTOPS, kernel_dim=8, steps=300),
        TaskSetting("pathfinder", PATHFINDER, kernel_dim=16, steps=150, batch_size=16),
    ),
)
QUICK = Setting(
    tasks=(TaskSetting("listops", {**LISTOPS, "num_train": 500, "num_test": 200, "max_length": 64}, 8, steps=40),),
    timing_rounds=3,
)

LABELS = {
    "sgconv": "SGConv",
    "ms_no_decay": "multi-scale, no decay",
    "decay_no_ms": "decay, no multi-scale",
    "dense": "dense global kernel",
    "s4d": "S4D",
    "attention": "transformer",
}


def mixer_config(variant: str, task: TaskSetting, seq_len: int) -> tuple[str, dict[str, Any]]:
    """The mixer name and arguments of one variant (all bidirectional: these are classification tasks)."""
    sgconv = {"kernel_dim": task.kernel_dim, "max_seq_len": seq_len, "bidirectional": True}
    return {
        "sgconv": ("sgconv", sgconv),
        "ms_no_decay": ("sgconv", {**sgconv, "decay": False}),
        "decay_no_ms": ("sgconv", {**sgconv, "multiscale": False}),
        "dense": ("sgconv", {**sgconv, "multiscale": False, "dense": True, "decay": False}),
        "s4d": ("s4d", {"bidirectional": True}),
        "attention": ("attention", {"n_heads": 4, "causal": False, "max_seq_len": seq_len}),
    }[variant]


def build_task(variant: str, task: TaskSetting, data: SequenceDataModule, setting: Setting, seed: int):
    mixer, mixer_args = mixer_config(variant, task, data.seq_len)
    total = task.steps
    L.seed_everything(seed, verbose=False)  # the same initial weights for the shared parts of every variant
    return SequenceClassificationTask(
        vocab_size=data.vocab_size,
        num_classes=data.num_classes,
        dim=setting.dim,
        depth=setting.depth,
        mixer=mixer,
        mixer_args=mixer_args,
        mlp_ratio=setting.mlp_ratio,
        pooling="mean",
        optimizer=lambda p: torch.optim.AdamW(p, lr=setting.lr, weight_decay=setting.weight_decay),
        lr_scheduler=lambda o: WarmupStableDecay(
            o, total_steps=total, warmup_steps=max(1, total // 10), decay_steps=0.2
        ),
    )


def datamodule(task: TaskSetting, seed: int) -> SequenceDataModule:
    cls = ListOpsDataModule if task.name == "listops" else PathfinderDataModule
    return cls(**task.data, batch_size=task.batch_size, seed=seed)


def interleaved_steps_per_s(tasks: dict[str, SequenceClassificationTask], batch: dict, rounds: int) -> dict[str, float]:
    """Forward + backward steps per second of each task on `batch`, timed in alternation (median over rounds)."""
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for task in tasks.values():  # warm-up
        task.train()
        task.model.zero_grad()
        task.head(task.encode(batch["tokens"], batch["mask"])).logsumexp(-1).mean().backward()
    for _ in range(rounds):
        for name, task in tasks.items():
            started = time.perf_counter()
            logits = task(batch["tokens"], batch["mask"])
            torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
            times[name].append(time.perf_counter() - started)
            task.zero_grad(set_to_none=True)
    return {name: 1.0 / statistics.median(values) for name, values in times.items()}


def check(quick: bool = False) -> ClaimResult:
    setting = QUICK if quick else FULL
    figures: dict[str, dict[str, float]] = {LABELS[v]: {} for v in setting.variants}
    accuracy: dict[str, list[float]] = {v: [] for v in setting.variants}
    curves: dict[str, list[tuple[float, float]]] = {}
    timing: dict[str, float] = {}
    with torch_threads(1):
        for task in setting.tasks:
            for seed in setting.seeds:
                data = datamodule(task, seed)
                data.prepare_data()
                data.setup("fit")
                for variant in setting.variants:
                    run = train_and_evaluate(
                        build_task(variant, task, data, setting, seed), data, task.steps, seed=seed
                    )
                    accuracy[variant].append(run.accuracy)
                    row = figures[LABELS[variant]]
                    suffix = f"{task.name}" + (f" seed {seed}" if len(setting.seeds) > 1 else "")
                    row[f"{suffix} test acc"] = run.accuracy
                    row[f"{suffix} steps/s"] = run.steps_per_s
                    row[f"{suffix} peak MiB"] = run.peak_memory_mb
                    row[f"{task.name} parameters"] = float(run.parameters)
            # Interleaved timing of the models on one batch of this task (fresh models, same seed).
            batch = next(iter(data.train_dataloader()))
            timed = {v: build_task(v, task, data, setting, 0) for v in ("sgconv", "s4d", "attention")}
            speeds = interleaved_steps_per_s(timed, batch, setting.timing_rounds)
            for variant, speed in speeds.items():
                figures[LABELS[variant]][f"{task.name} interleaved steps/s"] = speed
            timing = speeds  # the last (longest) task decides
    mean = {v: statistics.fmean(values) for v, values in accuracy.items()}
    for variant in setting.variants:
        figures[LABELS[variant]]["mean test acc"] = mean[variant]
    last = setting.tasks[-1].name
    criteria = [
        Criterion("SGConv - transformer (mean test acc)", mean["sgconv"] - mean["attention"], ">=", 0.001),
        Criterion("SGConv - multi-scale without decay", mean["sgconv"] - mean["ms_no_decay"], ">=", 0.001),
        Criterion("SGConv - decay without multi-scale", mean["sgconv"] - mean["decay_no_ms"], ">=", 0.001),
        Criterion("SGConv - dense global kernel", mean["sgconv"] - mean["dense"], ">=", 0.001),
        Criterion("SGConv - S4D", mean["sgconv"] - mean["s4d"], ">=", -setting.s4d_gap),
        Criterion(f"SGConv / S4D training steps per second ({last})", timing["sgconv"] / timing["s4d"], ">=", 1.0),
    ]
    method = figures.pop(LABELS["sgconv"])
    return ClaimResult(
        key="sgconv",
        claim=(
            "A global convolution with multi-scale sub-kernels and decaying weights (SGConv) beats a same-size "
            "transformer on long-range tasks, needs both principles, is close to S4D in accuracy and faster per step."
        ),
        paper_reported=(
            "On LRA, SGConv's average accuracy is above S4's and far above the Transformer's (the Transformer fails "
            "Path-X); removing the decay or the sub-linear multi-scale parameterisation loses accuracy in the paper's "
            "ablations; SGConv trains faster than S4 (no Cauchy/Vandermonde kernel). Exact figures: paper Table 1 "
            "(not re-checked here)."
        ),
        decision_rule=(
            "Mean test accuracy over the tasks (and seeds): SGConv > transformer, > multi-scale without decay, > decay "
            f"without multi-scale, > dense kernel; SGConv >= S4D - {setting.s4d_gap}; SGConv steps/s >= S4D's "
            f"(interleaved forward+backward timing on {last})."
        ),
        method=method,
        baselines=figures,
        criteria=criteria,
        config={
            "tasks": {
                t.name: {**t.data, "kernel_dim": t.kernel_dim, "steps": t.steps, "batch": t.batch_size}
                for t in setting.tasks
            },
            "dim": setting.dim,
            "depth": setting.depth,
            "mlp_ratio": setting.mlp_ratio,
            "lr": setting.lr,
            "weight_decay": setting.weight_decay,
            "seeds": list(setting.seeds),
            "schedule": "WarmupStableDecay, 10% warmup, 20% decay",
            "threads": 1,
        },
        curves=curves,
    )
