"""Callbacks for reliability tests."""

import os
import signal
from typing import Any

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILLs the training process once `global_step` reaches `step`, as a crash would (no cleanup runs).

    Args:
        step: the optimizer step after which the process dies.
    """

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
