"""Train a sequence task on a sequence datamodule for a fixed budget and measure it: the shared loop of the claim
checks and the LRA results table (accuracy, steps/s, peak memory), so every comparison runs the same way.

Training goes through a plain Lightning `Trainer` (no logger, no checkpoints, no progress bar): the same code path
as `paperzoo fit`, with a fixed number of optimizer steps as the budget.
"""

import time
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from paperzoo.core.checks import check_trainer
from paperzoo.core.profiling import peak_memory_bytes
from paperzoo.core.task import BaseTask
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule


@dataclass
class RunFigures:
    """What one budgeted run measured.

    Attributes:
        accuracy: test accuracy (`test/acc`) after the last step.
        test_loss: test loss.
        steps_per_s: optimizer steps per second over the run (data loading included).
        peak_memory_mb: peak memory of one training step (CUDA: the allocator's peak; CPU: the torch CPU allocator's
            peak live bytes, from the profiler's memory events).
        parameters: trainable parameters.
        steps: optimizer steps taken.
        seconds: wall time of the fit.
        extra: other logged test metrics (say `test/seq_acc`).
    """

    accuracy: float
    test_loss: float
    steps_per_s: float
    peak_memory_mb: float
    parameters: int
    steps: int
    seconds: float
    extra: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _StepClock(Callback):
    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.started


def step_peak_memory_mb(task: BaseTask, batch: dict[str, torch.Tensor]) -> float:
    """Peak memory of one forward + backward of `task.step` on `batch`, in MiB (see `RunFigures.peak_memory_mb`)."""
    device = next(task.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    task.log = _no_log  # type: ignore[method-assign]  # outside a Trainer there is nowhere to log to
    try:
        peak = peak_memory_bytes(lambda: task.step(batch, "train").backward(), device)
    finally:
        del task.log
        task.zero_grad(set_to_none=True)
    return peak / 2**20


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


def train_and_evaluate(
    task: BaseTask,
    datamodule: SequenceDataModule,
    max_steps: int,
    accelerator: str = "cpu",
    seed: int = 0,
    measure_memory: bool = True,
) -> RunFigures:
    """Fit `task` for `max_steps` optimizer steps on `datamodule`'s train split, then test it.

    The task's own optimizer and scheduler factories apply (set them when building the task). Seeds everything with
    `seed` first, so two runs with the same arguments see the same batches and initial weights only if the task was
    built after seeding: build tasks inside `torch.random.fork_rng` or call `L.seed_everything(seed)` before.
    """
    L.seed_everything(seed, verbose=False)
    datamodule.setup("fit")
    peak = 0.0
    if measure_memory:
        peak = step_peak_memory_mb(task, next(iter(datamodule.train_dataloader())))
    clock = _StepClock()
    trainer = check_trainer(max_steps=max_steps, accelerator=accelerator, limit_val_batches=0, callbacks=[clock])
    trainer.fit(task, datamodule=datamodule)
    metrics = trainer.test(task, datamodule=datamodule, verbose=False)[0]
    steps = trainer.global_step
    return RunFigures(
        accuracy=float(metrics["test/acc"]),
        test_loss=float(metrics["test/loss"]),
        steps_per_s=steps / clock.seconds if clock.seconds > 0 else 0.0,
        peak_memory_mb=peak,
        parameters=sum(p.numel() for p in task.parameters() if p.requires_grad),
        steps=steps,
        seconds=clock.seconds,
        extra={k: float(v) for k, v in metrics.items() if k not in ("test/acc", "test/loss")},
    )
