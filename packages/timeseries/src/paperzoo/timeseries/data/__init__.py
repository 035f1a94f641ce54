"""Forecasting data: validated tables, named offline datasets, the scaler, windows and the series corpus.

- `load_dataset(name)`: the named offline tables ("weather", "elecdemand", "garch", "sp500"), see `datasets`.
- `ForecastingDataModule`: lookback/horizon windows over one table with a chronological split, see `module`.
- `CorpusDataModule`: univariate windows over the pretraining corpus or the held-out series, see `corpus`.
"""

from paperzoo.timeseries.data.datasets import DATASETS, load_dataset
from paperzoo.timeseries.data.module import ForecastingDataModule
from paperzoo.timeseries.data.scaler import StandardScaler
from paperzoo.timeseries.data.table import read_table, validate_table

__all__ = ["DATASETS", "ForecastingDataModule", "StandardScaler", "load_dataset", "read_table", "validate_table"]
