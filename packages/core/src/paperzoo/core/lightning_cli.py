"""`PaperzooCLI`: LightningCLI in subclass mode over `BaseTask` and `BaseDataModule`."""

import importlib
import inspect
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.io import atomic_torch_save, load_checkpoint_file, verify_checkpoint_file
from paperzoo.core.task import BaseTask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes via temp file + rename and names the file when loading fails.

    It lives here, not in `paperzoo.core.io`, so that io (atomic files, caches) imports without Lightning: `paperzoo
    merge` and other non-training tools then start without its ~0.7 GiB and seconds of import.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location or "cpu")


class PaperzooCLI(LightningCLI):
    """LightningCLI with paperzoo's defaults.

    - Checkpoints are written atomically (temp file + rename) and a `last.ckpt` is kept, so `--ckpt_path last`
      resumes a killed run.
    - `use_distributed_sampler` is off: `BaseDataModule` shards data itself with a rank-aware, resumable sampler.
    - Datamodule attributes named in `LINKS` feed the task's constructor when both sides have them, and are saved
      in the checkpoint's hyperparameters, so `load_from_checkpoint` rebuilds the task.
    """

    #: datamodule attribute -> task init argument, linked after the datamodule is built.
    LINKS = (
        "vocab_size",
        "num_channels",
        "context_length",
        "prediction_length",
        "num_features",
        "num_groups",
        "num_classes",
        "vocabulary",
    )

    def __init__(self, **kwargs: Any):
        super().__init__(
            model_class=BaseTask,
            datamodule_class=BaseDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.{AtomicCheckpointIO.__name__}"}],
                "use_distributed_sampler": False,
            },
            parser_kwargs={"exit_on_error": False},
            auto_configure_optimizers=False,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        for name in self.LINKS:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters before anything else: check the file is whole first,
        # so a truncated checkpoint is reported by name rather than as a zip-reader traceback.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            verify_checkpoint_file(ckpt_path)
        super()._parse_ckpt_path()
        if subcommand:
            self._drop_unaccepted_links(self.config[subcommand].get("model"))

    def _drop_unaccepted_links(self, model: Any) -> None:
        # A datamodule value linked in `LINKS` is saved in the checkpoint's hyperparameters even when the task does
        # not take it (say `num_groups` for a task that trains no classifier); re-read from the checkpoint it would
        # become an unexpected keyword argument, so drop the linked names the task's constructor does not accept.
        extra = model.get("dict_kwargs") if model is not None else None
        if not extra or not model.get("class_path"):
            return
        module, _, name = model["class_path"].rpartition(".")
        parameters = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return
        for key in [k for k in extra if k in self.LINKS and k not in parameters]:
            del extra[key]

    def after_fit(self) -> None:
        """End a fit with its validation figures and where the checkpoint is, in plain words."""
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics and self.trainer.is_global_zero:
            print("validation: " + ", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items())))
        checkpoint = self.trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.last_model_path and self.trainer.is_global_zero:
            print(f"last checkpoint: {checkpoint.last_model_path}")
