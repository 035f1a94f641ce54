"""Naive and seasonal-naive forecasts: the floor every forecaster must clear.

- naive: every future step repeats the last observed value, y_hat[t + h] = y[t];
- seasonal-naive with season m: each future step repeats the value one season earlier, taken from the last observed
  season, y_hat[t + h] = y[t + h - m * (floor((h - 1) / m) + 1)] (Hyndman & Athanasopoulos, "Forecasting:
  Principles and Practice", Sec. 5.2). Naive is seasonal-naive with m = 1.

They have no parameters, so they are evaluated, not trained: `SeasonalNaiveTask` / `NaiveTask` are forecasting tasks
for `paperzoo validate|test --config naive/<config>` (no checkpoint needed), and `evaluate_naive` is the same
evaluation as a typed function for `paperzoo run naive`.
"""

from collections.abc import Iterable

import torch
from torch import nn

from paperzoo.core.errors import ConfigError, require
from paperzoo.timeseries.task import ForecastingTask


class SeasonalNaiveForecaster(nn.Module):
    """Repeat the last observed season over the horizon.

    Args:
        prediction_length: H.
        season: m, the period in steps (1 = naive); must not exceed the lookback L.

    Shapes:
        past [B, L, C] -> forecast [B, H, C]
    """

    def __init__(self, prediction_length: int, season: int):
        super().__init__()
        require(prediction_length > 0, f"prediction_length must be positive, got {prediction_length}")
        require(season > 0, f"season must be a positive number of steps, got {season}")
        self.prediction_length, self.season = prediction_length, season
        # step h (0-based) of the horizon copies step (h mod m) of the last season
        self.register_buffer("offsets", torch.arange(prediction_length) % season, persistent=False)

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        context_length = past.shape[1]
        if self.season > context_length:
            raise ConfigError(
                f"season {self.season} is longer than the lookback window of {context_length} steps; "
                "expected season <= context_length"
            )
        last_season = past[:, context_length - self.season :]  # [B, m, C]
        return last_season[:, self.offsets]  # [B, H, C]

    def extra_repr(self) -> str:
        return f"prediction_length={self.prediction_length}, season={self.season}"


class NaiveForecaster(SeasonalNaiveForecaster):
    """Repeat the last observed value over the horizon (seasonal-naive with season 1).

    Shapes:
        past [B, L, C] -> forecast [B, H, C]
    """

    def __init__(self, prediction_length: int):
        super().__init__(prediction_length, season=1)


class SeasonalNaiveTask(ForecastingTask):
    """Seasonal-naive as a forecasting task, for `paperzoo validate|test` (it has nothing to train).

    Args:
        num_channels, context_length, prediction_length: linked from the datamodule.
        season: m in steps; 24 for hourly data with a daily cycle, 48 for half-hourly, 7 for daily with a weekly
            cycle, 1 for the naive forecast.
    """

    def __init__(self, num_channels: int = 1, context_length: int = 96, prediction_length: int = 24, season: int = 24):
        super().__init__(num_channels, context_length, prediction_length)
        if season > context_length:
            raise ConfigError(
                f"season {season} is longer than the context_length {context_length}; expected season <= "
                "context_length (the last season is read from the lookback window)"
            )
        self.save_hyperparameters()
        self.model = SeasonalNaiveForecaster(prediction_length, season)

    def configure_optimizers(self) -> None:  # type: ignore[override]
        raise ConfigError(
            f"{type(self).__name__} has no parameters to fit; evaluate it with `paperzoo validate` or "
            "`paperzoo test` (no checkpoint needed)"
        )


class NaiveTask(SeasonalNaiveTask):
    """The naive forecast (last value repeated) as a forecasting task, for `paperzoo validate|test`."""

    def __init__(self, num_channels: int = 1, context_length: int = 96, prediction_length: int = 24):
        super().__init__(num_channels, context_length, prediction_length, season=1)


@torch.no_grad()
def forecast_errors(model: nn.Module, loader: Iterable[dict[str, torch.Tensor]]) -> dict:
    """Errors of `model(past)` against `future` over a loader's batches, on the scaled values (the literature's
    protocol): {"mse": float, "mae": float, "horizon": [(h, MSE at step h)] for h = 1..H, "channel": [MSE of c]}."""
    model.eval()
    squared, absolute, windows = None, 0.0, 0
    for batch in loader:
        error = (model(batch["past"]) - batch["future"]).double()  # [B, H, C]
        step_channel = error.square().sum(dim=0)  # [H, C]
        squared = step_channel if squared is None else squared + step_channel
        absolute += float(error.abs().sum())
        windows += error.shape[0]
    if squared is None:
        raise ConfigError("the evaluation split yields no windows; expected at least one")
    horizon, channels = squared.shape
    return {
        "mse": float(squared.sum()) / (windows * horizon * channels),
        "mae": absolute / (windows * horizon * channels),
        "horizon": [(float(h + 1), float(v) / (windows * channels)) for h, v in enumerate(squared.sum(dim=1))],
        "channel": [float(v) / (windows * horizon) for v in squared.sum(dim=0)],
    }


def evaluate_forecaster(model: nn.Module, loader: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """MSE and MAE (on the scaled values, the literature's protocol) of `model(past)` over a loader's batches."""
    errors = forecast_errors(model, loader)
    return {"mse": errors["mse"], "mae": errors["mae"]}


def evaluate_naive(
    dataset: str = "weather",
    path: str | None = None,
    context_length: int = 96,
    prediction_length: int = 24,
    season: int = 24,
    split: str = "test",
) -> dict[str, dict[str, float]]:
    """Naive and seasonal-naive MSE/MAE on a split of a forecasting dataset (`paperzoo run naive`).

    Args:
        dataset: a named offline dataset of `ForecastingDataModule` (weather, elecdemand, garch, sp500).
        path: a CSV/parquet with a datetime column instead of the named dataset.
        context_length: L; must be at least `season`.
        prediction_length: H.
        season: m in steps for seasonal-naive.
        split: "val" or "test".

    Returns:
        {"naive": {"mse", "mae"}, "seasonal_naive": {"mse", "mae"}}, on values scaled with training statistics.
    """
    from paperzoo.timeseries.data import ForecastingDataModule

    require(split in ("val", "test"), f"split must be 'val' or 'test', got {split!r}")
    require(season <= context_length, f"season {season} is longer than the context_length {context_length}")
    data = ForecastingDataModule(
        dataset=dataset, path=path, context_length=context_length, prediction_length=prediction_length
    )
    data.prepare_data()
    data.setup("test" if split == "test" else "validate")
    loader = data.test_dataloader() if split == "test" else data.val_dataloader()
    return {
        "naive": evaluate_forecaster(NaiveForecaster(prediction_length), loader),
        "seasonal_naive": evaluate_forecaster(SeasonalNaiveForecaster(prediction_length, season), loader),
    }
