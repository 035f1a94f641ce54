"""Self-pretraining through the `paperzoo` command: the card's tiny config passes the conformance suite, and a
fine-tuning config started from its checkpoint gets the pretrained backbone."""

import pytest
import torch

import paperzoo.efficiency.sequence.lra.listops  # noqa: F401  (registers ListOpsDataModule with the CLI)
from paperzoo.core.cli import main as paperzoo_main
from paperzoo.core.testing import conformance
from paperzoo.efficiency.sequence.spt.card import CARD
from paperzoo.efficiency.sequence.spt.task import FinetuneClassificationTask, SelfPretrainTask


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "cache"))


def test_tiny_config_pretrains_with_the_masked_objective():
    # forward/backward, loss drop and the CLI fit + checkpoint round trip run in the workspace conformance suite
    task, _ = conformance.build_from_config(CARD.config("tiny"))
    assert isinstance(task, SelfPretrainTask) and task.objective == "masked"


def test_pretrain_then_finetune_through_the_command(tmp_path):
    quiet = ["--config", "cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    pretrain_dir, finetune_dir = tmp_path / "pretrain", tmp_path / "finetune"
    steps = ["--trainer.max_steps=3", "--trainer.val_check_interval=3"]
    paperzoo_main(["fit", "--config", str(CARD.config("tiny")), *quiet, *steps, f"--checkpoint.dirpath={pretrain_dir}"])
    pretrained = pretrain_dir / "last.ckpt"
    paperzoo_main(
        [
            "fit",
            "--config",
            str(CARD.config("tiny_finetune")),
            *quiet,
            "--trainer.max_steps=3",
            "--model.optimizer.init_args.lr=0.0",  # no update: the weights after fit are the loaded ones
            f"--model.pretrained={pretrained}",
            f"--checkpoint.dirpath={finetune_dir}",
        ]
    )
    source = SelfPretrainTask.load_from_checkpoint(pretrained, map_location="cpu")
    tuned = FinetuneClassificationTask.load_from_checkpoint(finetune_dir / "last.ckpt", map_location="cpu")
    vocab = tuned.model.embedding.num_embeddings
    for key, value in tuned.model.state_dict().items():
        expected = source.model.state_dict()[key]
        assert torch.equal(value, expected[:vocab] if key == "embedding.weight" else expected), key
    pretrained.unlink()  # a fine-tuned checkpoint reloads without its pretraining file
    FinetuneClassificationTask.load_from_checkpoint(finetune_dir / "last.ckpt", map_location="cpu")


def test_wrong_architecture_is_one_clear_error(tmp_path, capsys):
    quiet = ["--config", "cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    common = ["--trainer.max_steps=3", "--trainer.val_check_interval=3"]
    paperzoo_main(["fit", "--config", str(CARD.config("tiny")), *quiet, *common, f"--checkpoint.dirpath={tmp_path}"])
    finetune = ["fit", "--config", str(CARD.config("tiny_finetune")), *quiet, *common, "--model.dim=32"]
    with pytest.raises(SystemExit):
        paperzoo_main([*finetune, f"--model.pretrained={tmp_path / 'last.ckpt'}"])
    error = capsys.readouterr().err
    assert "last.ckpt" in error and "'embedding.weight' has shape (17, 16)" in error, error
