"""Claim check for Long Range Arena (CATALOG 72, arXiv:2011.04006): the qualitative ranking at small scale.

LRA's finding, and the one its successors (S4, S4D, SGConv, Mamba) made sharper: on long-range tasks such as ListOps
and Pathfinder, transformers (vanilla and linear attention) are weak, and models built on long convolutions or state
spaces do much better (Pathfinder: transformers at or near chance, S4 ~ 86-94%). Here, on ListOps-lite (max depth
4, at most 5 arguments, 16-128 tokens) and Pathfinder-32 (1024 pixels), every mixer sits in the same
`SequenceModel` (width 32, depth 2, SwiGLU MLP, classifier) and is trained by the LRA table (`lra.table.lra_table`,
i.e. `sequence.harness.train_and_evaluate`) on the same data, in the same order, with the same optimizer, schedule
and number of steps:
- the transformer family: softmax attention (`attention`, bidirectional, RoPE) and, when its module imports, linear
  attention (`linear_attention`);
- the long-range family: S4D (`s4d`, bidirectional), SGConv (`sgconv`, bidirectional) and Mamba (`mamba`, causal,
  last-token pooling), each when its module imports.

Decision rule (fixed before the full run): on each task, every available long-range mixer's test accuracy is above
the best transformer-family accuracy (one criterion per long-range mixer and task: accuracy - best transformer > 0),
and at least two long-range mixers are available. Quick mode: ListOps-lite only (64 tokens), 40 steps, transformer
vs S4D.
"""

from dataclasses import dataclass
from typing import Any

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule
from paperzoo.efficiency.sequence.lra.listops import ListOpsDataModule
from paperzoo.efficiency.sequence.lra.pathfinder import PathfinderDataModule
from paperzoo.efficiency.sequence.lra.table import lra_table, mixer_available, render_markdown

TRANSFORMERS = ("attention", "linear_attention")
LONG_RANGE = ("s4d", "sgconv", "mamba")


@dataclass(frozen=True)
class TaskSetting:
    name: str
    data: dict[str, Any]
    steps: int
    batch_size: int
    kernel_dim: int  # SGConv's sub-kernel size for this task


@dataclass(frozen=True)
class Setting:
    tasks: tuple[TaskSetting, ...]
    mixers: tuple[str, ...]
    dim: int = 32
    depth: int = 2
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0


LISTOPS = dict(num_train=2000, num_val=100, num_test=500, min_length=16, max_length=128, max_depth=4, max_args=5)
PATHFINDER = dict(resolution=32, num_train=1000, num_val=100, num_test=400)
FULL = Setting(
    tasks=(
        TaskSetting("listops", LISTOPS, steps=300, batch_size=32, kernel_dim=8),
        TaskSetting("pathfinder", PATHFINDER, steps=150, batch_size=16, kernel_dim=16),
    ),
    mixers=TRANSFORMERS + LONG_RANGE,
)
QUICK = Setting(
    tasks=(
        TaskSetting(
            "listops",
            {**LISTOPS, "num_train": 500, "num_test": 200, "max_length": 64},
            steps=40,
            batch_size=32,
            kernel_dim=8,
        ),
    ),
    mixers=("attention", "s4d"),
)


def mixer_kwargs(name: str, task: TaskSetting, seq_len: int, setting: Setting) -> dict[str, Any]:
    """SequenceClassificationTask kwargs of one mixer: the same width and depth for all; bidirectional where the
    mixer has the option (classification), Mamba causal with last-token pooling."""
    args: dict[str, Any] = {
        "attention": {"n_heads": 4, "causal": False, "max_seq_len": seq_len},
        "linear_attention": {"n_heads": 4, "causal": False},
        "s4d": {"bidirectional": True},
        "sgconv": {"kernel_dim": task.kernel_dim, "max_seq_len": seq_len, "bidirectional": True},
        "mamba": {},
    }[name]
    pooling = "last" if name == "mamba" else "mean"
    return {"mixer": name, "mixer_args": args, "dim": setting.dim, "depth": setting.depth, "pooling": pooling}


def datamodule(task: TaskSetting, seed: int) -> SequenceDataModule:
    cls = ListOpsDataModule if task.name == "listops" else PathfinderDataModule
    return cls(**task.data, batch_size=task.batch_size, seed=seed)


def check(quick: bool = False) -> ClaimResult:
    setting = QUICK if quick else FULL
    available = [m for m in setting.mixers if mixer_available(m)]
    rows = []
    with torch_threads(1):
        for task in setting.tasks:
            data = datamodule(task, setting.seed)
            mixers = {m: mixer_kwargs(m, task, data.seq_len, setting) for m in available}
            rows += lra_table(mixers, {task.name: data}, task.steps, setting.lr, setting.weight_decay, setting.seed)
    cell = {(r.mixer, r.task): r for r in rows}
    method: dict[str, float] = {}
    baselines: dict[str, dict[str, float]] = {}
    for r in rows:
        figures = {
            f"{r.task}/acc": r.accuracy,
            f"{r.task}/steps_per_s": r.steps_per_s,
            f"{r.task}/peak_memory_mb": r.peak_memory_mb,
            f"{r.task}/parameters": float(r.parameters),
        }
        if r.mixer in TRANSFORMERS:
            baselines.setdefault(r.mixer, {}).update(figures)
        else:
            method.update({f"{r.mixer}/{k}": v for k, v in figures.items()})
    criteria = []
    long_range = [m for m in available if m in LONG_RANGE]
    transformers = [m for m in available if m in TRANSFORMERS]
    for task in setting.tasks:
        best = max(cell[(m, task.name)].accuracy for m in transformers)
        for m in long_range:
            criteria.append(
                Criterion(
                    f"{task.name}: {m} acc - best transformer acc", cell[(m, task.name)].accuracy - best, ">=", 1e-9
                )
            )
    needed = 1 if quick else 2
    criteria.append(Criterion("long-range mixers available", float(len(long_range)), ">=", float(needed)))
    return ClaimResult(
        key="lra",
        claim=(
            "On long-range tasks (ListOps, Pathfinder) transformers, vanilla or linear, fall below state-space and "
            "long-convolution models (S4D, SGConv, Mamba) of the same size and budget."
        ),
        paper_reported=(
            "LRA (Tay et al. 2021, Table 1): ListOps 36-38% and Pathfinder 51-77% for transformers (vanilla 36.4 / "
            "71.4, Performer 18.0 / 77.1, Linear Trans. 16.1 / 75.3); later: S4 59.6 / 94.2 (S4 paper), S4D-LegS "
            "60.5 / 93.1, SGConv 61.5 / 93.5, all far above the transformers."
        ),
        decision_rule=(
            "per task, every available long-range mixer (S4D, SGConv, Mamba) has test accuracy above the best "
            "transformer-family accuracy (attention, linear attention); at least two long-range mixers available "
            "(quick: ListOps only, transformer vs S4D)"
        ),
        method=method,
        baselines=baselines,
        criteria=criteria,
        quick=quick,
        config={
            "tasks": {t.name: {**t.data, "steps": t.steps, "batch_size": t.batch_size} for t in setting.tasks},
            "mixers": available,
            "unavailable": [m for m in setting.mixers if m not in available],
            "dim": setting.dim,
            "depth": setting.depth,
            "lr": setting.lr,
            "weight_decay": setting.weight_decay,
            "seed": setting.seed,
            "table": render_markdown(rows, baseline="attention"),
        },
    )
