"""The Long Range Arena results table: accuracy, training speed and memory of any token mixers on any LRA tasks.

Long Range Arena, Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", arXiv:2011.04006,
https://arxiv.org/abs/2011.04006 (Table 1: accuracy per task and the average; Table 2: steps per second and peak
memory relative to the vanilla transformer).

Every (mixer, task) cell trains a `SequenceClassificationTask` on the task's datamodule through
`sequence.harness.train_and_evaluate`: the same backbone settings the caller gives for the mixer, the same number of
optimizer steps, AdamW and a warmup-stable-decay schedule, the same seed (initial weights and batch order). Mixers
that do not import (a helper's module not yet present) are listed as unavailable instead of failing the table.

`paperzoo run lra --config lra/tiny` runs `run_lra_table` and prints the markdown.
"""

import importlib
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch

from paperzoo.core.errors import ConfigError, require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.efficiency.sequence.harness import train_and_evaluate
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule
from paperzoo.efficiency.sequence.mixer import BUILTIN_MIXERS, mixer_names
from paperzoo.efficiency.sequence.task import SequenceClassificationTask

#: what the caller may not set in a mixer's task kwargs (they come from the datamodule or the table)
RESERVED = ("vocab_size", "num_classes", "paired", "optimizer", "lr_scheduler")


@dataclass
class LRARow:
    """One (mixer, task) cell: test accuracy, optimizer steps per second, peak memory of one training step (MiB),
    trainable parameters, sequence length, steps and seconds of the fit."""

    mixer: str
    task: str
    accuracy: float
    steps_per_s: float
    peak_memory_mb: float
    parameters: int
    seq_len: int
    steps: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mixer_available(name: str) -> bool:
    """Whether the token mixer `name` is registered or its built-in module imports."""
    if name in mixer_names() and name not in BUILTIN_MIXERS:
        return True
    if name not in BUILTIN_MIXERS:
        return False
    try:
        importlib.import_module(BUILTIN_MIXERS[name])
    except ImportError:
        return False
    return True


def build_classifier(
    kwargs: dict[str, Any], data: SequenceDataModule, max_steps: int, lr: float, weight_decay: float, seed: int
) -> SequenceClassificationTask:
    """The classification task of one cell: the caller's kwargs plus the datamodule's vocabulary, classes and
    pairing, AdamW and a warmup-stable-decay schedule over `max_steps` (10% warmup, 20% decay)."""
    clash = sorted(set(kwargs) & set(RESERVED))
    require(not clash, f"mixer task kwargs may not set {clash}: they come from the datamodule and the table")
    L.seed_everything(seed, verbose=False)  # same initial weights for the shared parts of every mixer
    return SequenceClassificationTask(
        vocab_size=data.vocab_size,
        num_classes=data.num_classes,
        paired=bool(getattr(data, "paired", False)),
        optimizer=lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=weight_decay),
        lr_scheduler=lambda o: WarmupStableDecay(
            o, total_steps=max_steps, warmup_steps=max(1, max_steps // 10), decay_steps=0.2
        ),
        **kwargs,
    )


def lra_table(
    mixers: dict[str, dict[str, Any]],
    datamodules: dict[str, SequenceDataModule],
    max_steps: int,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    accelerator: str = "cpu",
    measure_memory: bool = True,
) -> list[LRARow]:
    """Train and test every available mixer on every task for `max_steps` steps. -> one row per (mixer, task)

    Args:
        mixers: row name -> `SequenceClassificationTask` kwargs (mixer, mixer_args, dim, depth, pooling, ...);
            a row whose mixer does not import is skipped (see `unavailable`).
        datamodules: task name -> datamodule.
        max_steps, lr, weight_decay, seed, accelerator, measure_memory: the shared budget and run settings.
    """
    require(max_steps > 0, f"max_steps must be positive, got {max_steps}")
    require(bool(mixers) and bool(datamodules), "lra_table needs at least one mixer and one datamodule")
    rows = []
    for name, kwargs in mixers.items():
        if not mixer_available(kwargs.get("mixer", "attention")):
            continue
        for task_name, data in datamodules.items():
            task = build_classifier(dict(kwargs), data, max_steps, lr, weight_decay, seed)
            figures = train_and_evaluate(
                task, data, max_steps, accelerator=accelerator, seed=seed, measure_memory=measure_memory
            )
            rows.append(
                LRARow(
                    mixer=name,
                    task=task_name,
                    accuracy=figures.accuracy,
                    steps_per_s=figures.steps_per_s,
                    peak_memory_mb=figures.peak_memory_mb,
                    parameters=figures.parameters,
                    seq_len=data.seq_len,
                    steps=figures.steps,
                    seconds=figures.seconds,
                )
            )
    return rows


def unavailable(mixers: dict[str, dict[str, Any]]) -> list[str]:
    """Row names whose mixer does not import."""
    return [name for name, kwargs in mixers.items() if not mixer_available(kwargs.get("mixer", "attention"))]


def render_markdown(rows: list[LRARow], baseline: str | None = None) -> str:
    """LRA's two tables as markdown: accuracy per task and the average (Table 1); steps/s and peak memory per task,
    also relative to `baseline` (default: the first mixer) as in Table 2; then parameters."""
    if not rows:
        return "(no available mixer)"
    mixers = list(dict.fromkeys(r.mixer for r in rows))
    tasks = list(dict.fromkeys(r.task for r in rows))
    cell = {(r.mixer, r.task): r for r in rows}
    base = baseline if baseline in mixers else mixers[0]
    lines = ["| mixer | " + " | ".join(tasks) + " | avg |", "|---" * (len(tasks) + 2) + "|"]
    for m in mixers:
        accs = [cell[(m, t)].accuracy for t in tasks if (m, t) in cell]
        values = [f"{cell[(m, t)].accuracy:.3f}" if (m, t) in cell else "-" for t in tasks]
        lines.append(f"| {m} | " + " | ".join(values) + f" | {sum(accs) / len(accs):.3f} |")
    lines += ["", f"| mixer | task | L | steps/s | x {base} | peak MiB | x {base} | parameters |", "|---" * 8 + "|"]
    for t in tasks:
        ref = cell.get((base, t))
        for m in mixers:
            r = cell.get((m, t))
            if r is None:
                continue
            speed = f"{r.steps_per_s / ref.steps_per_s:.2f}" if ref and ref.steps_per_s > 0 else "-"
            memory = f"{r.peak_memory_mb / ref.peak_memory_mb:.2f}" if ref and ref.peak_memory_mb > 0 else "-"
            lines.append(
                f"| {m} | {t} | {r.seq_len} | {r.steps_per_s:.2f} | {speed} | {r.peak_memory_mb:.1f} | {memory} | "
                f"{r.parameters} |"
            )
    return "\n".join(lines)


def run_lra_table(
    mixers: dict[str, dict[str, Any]],
    datamodules: dict[str, SequenceDataModule],
    max_steps: int = 100,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    accelerator: str = "cpu",
) -> str:
    """`paperzoo run lra`: the results table of `mixers` on `datamodules` (see `lra_table`), as markdown.

    Args:
        mixers: row name -> SequenceClassificationTask kwargs (mixer, mixer_args, dim, depth, ...).
        datamodules: task name -> LRA datamodule (class_path / init_args in a config).
        max_steps: optimizer steps per cell.
        lr, weight_decay: AdamW settings.
        seed: initial weights and batch order.
        accelerator: "cpu" or "gpu".
    """
    for name, kwargs in mixers.items():
        if not isinstance(kwargs, dict):
            raise ConfigError(f"mixer {name!r} must map to SequenceClassificationTask kwargs, got {kwargs!r}")
    rows = lra_table(mixers, datamodules, max_steps, lr, weight_decay, seed, accelerator)
    missing = unavailable(mixers)
    note = f"\n\nunavailable mixers (did not import): {', '.join(missing)}" if missing else ""
    return render_markdown(rows) + note
