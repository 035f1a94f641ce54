"""TTMTask: the frozen backbone stays untouched through a Lightning fine-tune; the tiny config fits and reloads."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.timeseries.ttm.card import CARD
from paperzoo.timeseries.ttm.task import TTMTask

SIZES = dict(
    context_length=32,
    prediction_length=8,
    patch_length=8,
    d_model=24,
    num_layers=1,
    adaptive_patching_levels=2,
    decoder_d_model=12,
    decoder_num_layers=1,
)


def batches(channels: int, n: int = 4) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    items = [
        {
            "past": torch.randn(32, channels, generator=generator),
            "future": torch.randn(8, channels, generator=generator),
            "resolution": torch.tensor(1),
        }
        for _ in range(n * 4)
    ]
    return DataLoader(items, batch_size=4)


def test_finetune_updates_decoder_and_head_but_never_the_backbone(tmp_path):
    torch.manual_seed(0)
    pretrained = TTMTask(**SIZES)
    path = tmp_path / "pretrained.pt"
    torch.save(pretrained.model.state_dict(), path)
    task = TTMTask(
        num_channels=3,
        mode="finetune",
        pretrained=str(path),
        decoder_channel_mixing=True,
        exogenous_channels=[2],
        **SIZES,
    )
    assert all(not p.requires_grad for p in task.model.backbone.parameters())
    backbone = {k: v.clone() for k, v in task.model.backbone.state_dict().items()}
    decoder = {k: v.clone() for k, v in task.model.decoder.state_dict().items()}
    assert torch.equal(backbone["patch_embed.weight"], pretrained.model.backbone.patch_embed.weight)
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(task, train_dataloaders=batches(3))
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in task.model.backbone.parameters()}
    for key, value in task.model.backbone.state_dict().items():
        assert torch.equal(value, backbone[key]), f"frozen backbone tensor {key} changed"
    assert any(not torch.equal(v, decoder[k]) for k, v in task.model.decoder.state_dict().items())
    # the loss and metrics cover the target channels only
    assert task.forecast(next(iter(batches(3)))).shape == (4, 8, 2)


def test_finetune_errors():
    with pytest.raises(ConfigError, match="pretrained"):
        TTMTask(mode="finetune", **SIZES)
    with pytest.raises(DataError, match="does not exist"):
        TTMTask(mode="finetune", pretrained="/nonexistent/ttm.ckpt", **SIZES)
    with pytest.raises(ConfigError, match="fine-tuning parts"):
        TTMTask(num_channels=2, decoder_channel_mixing=True, **SIZES)
    task = TTMTask(**SIZES)  # resolution prefix on, no default resolution
    with pytest.raises(ConfigError, match="resolution"):
        task.forecast({"past": torch.randn(2, 32, 1)})


def test_finetune_config_builds_with_exogenous_channels(tmp_path):
    """finetune_elecdemand: Demand is the target, WorkDay and Temperature exogenous; the backbone loads and freezes."""
    from paperzoo.core.testing.conformance import build_from_config, first_train_batch

    pretrained = TTMTask(context_length=64, prediction_length=12)  # the finetune configs' sizes
    path = tmp_path / "pretrained.pt"
    torch.save(pretrained.model.state_dict(), path)
    task, data = build_from_config(CARD.config("finetune_elecdemand"), f"--model.init_args.pretrained={path}")
    assert task.mode == "finetune" and task.model.exogenous_channels == [1, 2] and task.model.target_channels == [0]
    assert torch.equal(task.model.backbone.patch_embed.weight, pretrained.model.backbone.patch_embed.weight)
    batch = first_train_batch(data)
    assert "resolution" in batch
    assert task.forecast(batch).shape == (batch["past"].shape[0], 12, 1)
    assert torch.isfinite(task.step(batch, "train"))
