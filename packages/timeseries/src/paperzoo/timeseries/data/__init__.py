"""Forecasting data: validated tables, named offline datasets, the scaler, windows and the series corpus.

- `load_dataset(name)`: the named offline tables ("weather", "elecdemand", "garch", "sp500"), see `datasets`.
- `ForecastingDataModule`: lookback/horizon windows over one table with a chronological split, see `module`.
- `CorpusDataModule`: univariate windows over the pretraining corpus or the held-out series, see `corpus`.
"""

from paperzoo.timeseries.data.corpus import (
    HELD_OUT,
    RESOLUTIONS,
    CorpusDataModule,
    Series,
    load_corpus,
    resolution_id,
    split_corpus,
)
from paperzoo.timeseries.data.datasets import DATASETS, load_dataset
from paperzoo.timeseries.data.module import ForecastingDataModule
from paperzoo.timeseries.data.scaler import StandardScaler
from paperzoo.timeseries.data.table import read_table, validate_table

__all__ = [
    "DATASETS",
    "HELD_OUT",
    "RESOLUTIONS",
    "CorpusDataModule",
    "ForecastingDataModule",
    "Series",
    "StandardScaler",
    "load_corpus",
    "load_dataset",
    "read_table",
    "resolution_id",
    "split_corpus",
    "validate_table",
]
