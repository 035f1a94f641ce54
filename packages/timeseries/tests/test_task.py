"""`ForecastingTask`: the loss and the epoch metrics it logs are the MSE/MAE over every value of the split."""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from paperzoo.timeseries.task import ForecastingTask


class RepeatLast(ForecastingTask):
    """Forecasts the last value times a learnable gain, so the expected metrics are easy to compute by hand."""

    def __init__(self, num_channels: int = 2, context_length: int = 6, prediction_length: int = 3):
        super().__init__(num_channels, context_length, prediction_length)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.gain = nn.Parameter(torch.ones(()))
        self.model = lambda past: self.gain * past[:, -1:, :].expand(-1, self.prediction_length, -1)


def windows(n: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {"past": torch.randn(6, 2, generator=generator), "future": torch.randn(3, 2, generator=generator)}
        for _ in range(n)
    ]


def test_loss_is_the_mse_of_the_forecast():
    task = RepeatLast()
    batch = torch.utils.data.default_collate(windows(4))
    expected = ((batch["past"][:, -1:, :] - batch["future"]) ** 2).mean()
    torch.testing.assert_close(task.step(batch, "train"), expected)
    assert task.forward(batch["past"]).shape == (4, 3, 2)


def test_epoch_metrics_cover_every_value_with_uneven_batches():
    data = windows(7)  # batches of 3, 3, 1: a mean of batch means would weigh the last window three times
    task = RepeatLast()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    (metrics,) = trainer.validate(task, DataLoader(data, batch_size=3), verbose=False)
    past = torch.stack([w["past"] for w in data])
    future = torch.stack([w["future"] for w in data])
    error = past[:, -1:, :] - future
    assert abs(metrics["val/mse"] - float((error**2).mean())) < 1e-5
    assert abs(metrics["val/mae"] - float(error.abs().mean())) < 1e-5
