"""`PaperzooCLI`: LightningCLI in subclass mode over `BaseTask` and `BaseDataModule`."""

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.io import AtomicCheckpointIO
from paperzoo.core.task import BaseTask


class PaperzooCLI(LightningCLI):
    """LightningCLI with paperzoo's defaults.

    - Checkpoints are written atomically (temp file + rename) and a `last.ckpt` is kept, so `--ckpt_path last`
      resumes a killed run.
    - `use_distributed_sampler` is off: `BaseDataModule` shards data itself with a rank-aware, resumable sampler.
    - Datamodule attributes named in `LINKS` feed the task's constructor when both sides have them, and are saved
      in the checkpoint's hyperparameters, so `load_from_checkpoint` rebuilds the task.
    """

    #: datamodule attribute -> task init argument, linked after the datamodule is built.
    LINKS = ("vocab_size",)

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
