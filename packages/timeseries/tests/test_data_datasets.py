"""The named offline datasets and `ForecastingDataModule` over them."""

import numpy as np
import pandas as pd
import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.data import DATASETS, ForecastingDataModule, load_dataset
from paperzoo.timeseries.data.corpus import resolution_id


def check_table(table: pd.DataFrame, shape: tuple[int, int]) -> None:
    assert table.shape == shape
    assert isinstance(table.index, pd.DatetimeIndex) and table.index.is_monotonic_increasing
    assert table.index.is_unique
    assert table.dtypes.eq(np.float64).all()
    assert np.isfinite(table.to_numpy()).all()


def test_weather():
    table = load_dataset("weather")
    check_table(table, (8730, 24))
    assert table.columns[0] == "EWR_temp" and table.columns[-1] == "LGA_visib"
    assert (np.diff(table.index.to_numpy()) == np.timedelta64(1, "h")).all()  # hourly after reindexing
    assert table.index[0] == pd.Timestamp("2013-01-01 06:00") and table.index[-1] == pd.Timestamp("2013-12-30 23:00")


def test_weather_needs_its_documented_interpolation_limit():
    from paperzoo.core.errors import DataError
    from paperzoo.timeseries.data.datasets import _weather

    with pytest.raises(DataError, match=r"column 'EWR_pressure' has 8 consecutive missing value\(s\) inside"):
        _weather(interpolate_limit=6)  # DATA.md's limit: sea-level pressure has 7-11 hour gaps


def test_elecdemand():
    table = load_dataset("elecdemand")
    check_table(table, (17520, 3))
    assert list(table.columns) == ["Demand", "WorkDay", "Temperature"]
    assert table.index[1] - table.index[0] == pd.Timedelta("30min") and table.index[-1] == pd.Timestamp(
        "2014-12-31 23:30"
    )


def test_garch():
    table = load_dataset("garch")
    check_table(table, (1867, 5))
    assert list(table.columns) == ["dm", "bp", "cd", "dy", "sf"]
    assert table.index[0] == pd.Timestamp("1980-01-02") and table.index[-1] == pd.Timestamp("1987-05-21")
    assert table.index.dayofweek.max() <= 4  # trading days only, never reindexed to calendar days


def test_sp500():
    table = load_dataset("sp500")
    check_table(table, (8313, 20))
    assert table.columns[0] == "AAPL" and table.index[0] == pd.Timestamp("1990-01-02")
    assert (table.to_numpy() > 0).all()


def test_load_dataset_returns_a_copy_and_rejects_unknown_names():
    a = load_dataset("garch")
    a.iloc[0, 0] = -1.0
    assert load_dataset("garch").iloc[0, 0] != -1.0
    with pytest.raises(ConfigError, match=r"unknown dataset 'etth1'; expected one of \['elecdemand', 'garch'"):
        load_dataset("etth1")
    with pytest.raises(ConfigError, match=r"unknown dataset 'etth1'; expected one of"):
        ForecastingDataModule("etth1")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_datamodule_attributes_and_batches(name):
    dm = ForecastingDataModule(
        name, context_length=32, prediction_length=8, calendar_features=True, with_resolution=True, batch_size=4
    )
    channels = load_dataset(name).shape[1]
    assert (dm.num_channels, dm.context_length, dm.prediction_length) == (channels, 32, 8)
    assert len(dm.channel_names) == channels and dm.scaler.num_channels == channels
    batch = next(iter(dm.train_dataloader()))
    assert batch["past"].shape == (4, 32, channels) and batch["future"].shape == (4, 8, channels)
    assert batch["past"].dtype == torch.float32
    assert batch["past_time"].shape[:2] == (4, 32) and batch["future_time"].shape[:2] == (4, 8)
    assert batch["resolution"].dtype == torch.int64
    assert (batch["resolution"] == resolution_id(DATASETS[name].frequency)).all()
    # training rows are standardised with their own statistics
    train = dm.values[dm.borders.train[0] : dm.borders.train[1]]
    non_constant = ~torch.as_tensor(dm.scaler.constant)
    torch.testing.assert_close(train.mean(0)[non_constant], torch.zeros(int(non_constant.sum())), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        train.std(0, unbiased=False)[non_constant], torch.ones(int(non_constant.sum())), atol=1e-4, rtol=0
    )


def test_datamodule_column_selection_on_a_named_dataset():
    dm = ForecastingDataModule("weather", columns=["JFK_temp", "JFK_pressure"], context_length=16, prediction_length=4)
    assert dm.channel_names == ["JFK_temp", "JFK_pressure"] and dm.num_channels == 2
