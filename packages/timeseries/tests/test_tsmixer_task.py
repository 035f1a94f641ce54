"""TSMixer tasks: pretrain -> fine-tune through checkpoints, the hierarchy loss in training, the tiny config."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing.conformance import check_forward_backward, check_loss_drops
from paperzoo.timeseries.tsmixer.card import CARD
from paperzoo.timeseries.tsmixer.model import hierarchy_loss
from paperzoo.timeseries.tsmixer.task import TSMixerPretrainTask, TSMixerTask

SIZES = dict(num_channels=3, context_length=32, patch_length=8, patch_stride=8, d_model=8, num_layers=1)


def batches(n: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    items = [{"past": torch.randn(32, 3, generator=generator), "future": torch.randn(8, 3, generator=generator)}]
    return DataLoader(items * n, batch_size=4)


def trainer(steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_pretraining_checkpoint_initialises_the_finetuned_backbone(tmp_path):
    torch.manual_seed(0)
    pretrain = TSMixerPretrainTask(**SIZES, mask_ratio=0.5)
    fit = trainer(3)
    fit.fit(pretrain, train_dataloaders=batches())
    path = tmp_path / "pretrain.ckpt"
    fit.save_checkpoint(path)
    pretrained = {k: v.clone() for k, v in pretrain.model.backbone.state_dict().items()}

    # frozen backbone (linear probing): fitting loads the checkpoint and then never changes the backbone
    probe = TSMixerTask(**SIZES, prediction_length=8, pretrained_checkpoint=str(path), freeze_backbone=True)
    assert not torch.equal(probe.model.backbone.embed.weight, pretrained["embed.weight"])
    trainer(2).fit(probe, train_dataloaders=batches())
    for key, value in probe.model.backbone.state_dict().items():
        torch.testing.assert_close(value, pretrained[key])

    # full fine-tuning starts from the same weights
    finetune = TSMixerTask(**SIZES, prediction_length=8)
    finetune.load_pretrained(path)
    for key, value in finetune.model.backbone.state_dict().items():
        torch.testing.assert_close(value, pretrained[key])

    with pytest.raises(ConfigError, match="does not exist"):
        finetune.load_pretrained(tmp_path / "missing.ckpt")
    with pytest.raises(ConfigError, match="shape"):
        TSMixerTask(**{**SIZES, "d_model": 16}, prediction_length=8).load_pretrained(path)


def test_hierarchy_head_trains_on_the_hierarchy_loss_and_evaluates_the_forecast():
    torch.manual_seed(0)
    task = TSMixerTask(**SIZES, prediction_length=8, hierarchy_head=True, aggregation_length=4, coherence_weight=0.5)
    task.eval()  # no dropout: the same forward twice
    batch = next(iter(batches()))
    output = task.model.predict(batch["past"])
    expected = hierarchy_loss(output, batch["future"], 4, "mean", 0.5)
    torch.testing.assert_close(task.step(batch, "train"), expected)
    torch.testing.assert_close(task.step(batch, "fit"), torch.nn.functional.mse_loss(output.forecast, batch["future"]))


@pytest.mark.parametrize("mode", ["common_channel", "mix_channel", "hybrid"])
def test_every_mode_trains(mode):
    torch.manual_seed(0)
    task = TSMixerTask(**SIZES, prediction_length=8, mode=mode, hierarchy_head=mode == "hybrid", dropout=0.0)
    batch = next(iter(batches()))
    check_forward_backward(task, batch)
    check_loss_drops(task, batch, steps=10)
    pretrain = TSMixerPretrainTask(**SIZES, mode="common_channel" if mode == "hybrid" else mode, dropout=0.0)
    check_forward_backward(pretrain, batch)


@pytest.mark.parametrize("name", ["weather", "elecdemand", "garch", "pretrain_weather", "etth1"])
def test_packaged_configs_build(name):
    """Every packaged config builds its task and datamodule (ETTh1 on the ETT-format fixture, shorter windows)."""
    from pathlib import Path

    from paperzoo.core.testing.conformance import build_from_config

    overrides = []
    if name == "etth1":
        fixture = Path(__file__).parent / "fixtures" / "ett_small.csv"
        overrides = ["--data.path", str(fixture), "--data.context_length", "32", "--data.prediction_length", "8"]
        overrides += ["--data.split", "70/10/20"]
    task, data = build_from_config(CARD.config(name), *overrides)
    assert task.num_channels == data.num_channels and task.context_length == data.context_length
