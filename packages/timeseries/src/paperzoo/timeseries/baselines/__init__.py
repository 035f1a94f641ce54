"""Baselines that forecasting papers compare against, as first-class methods: naive and seasonal-naive
(`naive`), DLinear (`dlinear`, arXiv 2205.13504) and a small PatchTST (`patchtst`, arXiv 2211.14730)."""

from paperzoo.timeseries.baselines.dlinear import DLinear, DLinearTask, MovingAverage, series_decomposition
from paperzoo.timeseries.baselines.naive import NaiveForecaster, NaiveTask, SeasonalNaiveForecaster, SeasonalNaiveTask
from paperzoo.timeseries.baselines.patchtst import PatchTST, PatchTSTTask

__all__ = [
    "DLinear",
    "DLinearTask",
    "MovingAverage",
    "NaiveForecaster",
    "NaiveTask",
    "PatchTST",
    "PatchTSTTask",
    "SeasonalNaiveForecaster",
    "SeasonalNaiveTask",
    "series_decomposition",
]
