"""`BaseTask`: the LightningModule every paperzoo method's task derives from.

It owns what no paper changes: optimizer and LR-scheduler injection (LightningCLI's `OptimizerCallable` /
`LRSchedulerCallable`, default AdamW with WSD), and uniform logging (`train/loss`, `train/lr`, `<stage>/loss`, the
parameter count and training throughput). A subclass implements `step` (the paper's loss) and may log `val/<metric>`.
"""

import abc
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.schedulers import WarmupStableDecay


class BaseTask(L.LightningModule, abc.ABC):
    """Base LightningModule of paperzoo.

    Args:
        optimizer: builds the optimizer from the parameters (default `torch.optim.AdamW`).
        lr_scheduler: builds a per-step LR scheduler from the optimizer (default WSD with N = the trainer's
            total steps).

    Subclasses call `self.save_hyperparameters()` in `__init__` so that `load_from_checkpoint` rebuilds them.
    """

    #: what `count_items` counts, for the throughput metric `train/<unit>_per_s`.
    throughput_unit = "samples"

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self._batch_started = 0.0

    # --- what a method implements -------------------------------------------------------------------------
    @abc.abstractmethod
    def step(self, batch: Any, stage: str) -> torch.Tensor:
        """The method's loss on `batch`; `stage` is train, val, test. Log stage metrics here."""

    def count_items(self, batch: Any) -> int:
        """How many `throughput_unit`s a batch holds (default: the leading dimension of its first tensor)."""
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(first, dict):
            first = next(iter(first.values()))
        return int(first.shape[0])

    # --- Lightning hooks ------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.step(batch, "train")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.step(batch, "val")
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.step(batch, "test")
        self.log("test/loss", loss, sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        scheduler = self.scheduler_factory(optimizer)
        set_total_steps = getattr(scheduler, "set_total_steps", None)
        if set_total_steps is not None and getattr(scheduler, "total_steps", 0) is None:
            set_total_steps(int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        for logger in self.loggers:
            logger.log_metrics({"model/parameters": float(self.num_parameters())}, step=0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        seconds = time.perf_counter() - self._batch_started
        if seconds > 0:
            self.log(f"train/{self.throughput_unit}_per_s", self.count_items(batch) / seconds)
        optimizers = self.trainer.optimizers
        if optimizers:
            self.log("train/lr", optimizers[0].param_groups[0]["lr"])

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's `load_from_checkpoint`, which also works on a base class: `BaseTask.load_from_checkpoint(p)`
        rebuilds the subclass the checkpoint was trained with (its `_class_path`, saved by the `paperzoo` command;
        only classes of installed methods are imported, never an arbitrary path from the file)."""
        from paperzoo.core.card import import_all_methods
        from paperzoo.core.io import verify_checkpoint_file

        verify_checkpoint_file(checkpoint_path)
        hparams = torch.load(checkpoint_path, map_location="cpu", mmap=True, weights_only=False).get(
            "hyper_parameters", {}
        )
        class_path = hparams.get("_class_path", "")
        target = _imported_subclass(cls, class_path)
        if target is None and class_path:
            import_all_methods()
            target = _imported_subclass(cls, class_path)
        load = super(BaseTask, target or cls).load_from_checkpoint  # type: ignore[misc]
        return load(checkpoint_path, *args, **kwargs)

    def num_parameters(self) -> int:
        """Distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())


def _imported_subclass(base: type, class_path: str) -> type | None:
    """The already imported class at `class_path` if it is a strict subclass of `base` (never imports anything)."""
    module_name, _, name = class_path.rpartition(".")
    found = getattr(sys.modules.get(module_name), name, None)
    return found if isinstance(found, type) and issubclass(found, base) and found is not base else None
