"""`ForecastingDataModule`: lookback/horizon windows over one wide table, split chronologically, scaled with
training statistics only.

The protocol is Informer's (arXiv:2012.07436) and Autoformer's (arXiv:2106.13008): a chronological train/val/test
split (`windows.split_borders`: "70/10/20" or the ETT 12/4/4 months), a per-channel `StandardScaler` fitted on the
training rows alone, sliding windows of `context_length` past steps and `prediction_length` future steps, and
evaluation windows whose lookback may reach into the previous split while their targets stay inside their own.
Metrics are computed on the scaled values, as in those papers.
"""

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import require
from paperzoo.timeseries.data.corpus import infer_resolution, resolution_id
from paperzoo.timeseries.data.datasets import DATASETS, load_dataset
from paperzoo.timeseries.data.scaler import StandardScaler
from paperzoo.timeseries.data.table import read_table, validate_table
from paperzoo.timeseries.data.windows import (
    Borders,
    WindowDataset,
    check_lengths,
    split_borders,
    subsample,
    window_starts,
)
from paperzoo.timeseries.data.windows import (
    calendar_features as timef_features,
)

log = logging.getLogger(__name__)


class ForecastingDataModule(BaseDataModule):
    """Forecasting windows over a named offline dataset or a user's CSV/parquet table.

    Everything (reading, validation, split, scaler, window datasets) happens in `__init__`, so `num_channels`,
    `context_length`, `prediction_length`, `channel_names`, `scaler`, `train_set`, `val_set` and `test_set` exist
    right after construction (the `paperzoo` command links the first three into the task); `predict_set` is the
    test set. Building the datasets is cheap: each is a list of start rows into one float32 tensor.

    Args:
        dataset: a named offline dataset (`datasets.DATASETS`: "weather", "elecdemand", "garch", "sp500"); ignored
            when `path` is given.
        path: a CSV or parquet file with a datetime column `date_column` (the ETT format `date,HUFL,...,OT`).
        context_length: L, the lookback.
        prediction_length: H, the horizon.
        stride: step between consecutive training windows.
        split: "a/b/c" percentages (e.g. "70/10/20"), "ett" (12/4/4 calendar months, the Informer paper) or
            "ett_rows" (12/4/4 x 30 days, the Informer code's borders); see `windows.split_borders`.
        columns: channel columns to keep (in this order); None keeps all.
        calendar_features: add Informer's "timeF" features as `past_time` [L, F] / `future_time` [H, F].
        scale: standardise with training-split statistics; False keeps raw values (the scaler is then the identity).
        interpolate_limit: longest interior run of missing values filled by linear interpolation in a `path=`
            table (longer runs are a `DataError`); named datasets use their own documented handling.
        batch_size, num_workers, seed: see `BaseDataModule`; `seed` also drives `fraction_location="uniform"`.
        max_train_windows: cap on training windows, evenly spaced over the training period.
        train_fraction: keep this fraction of the training windows (few-shot; TTM uses 0.05), see `windows.subsample`.
        fraction_location: "last" (the most recent training windows, granite-tsfm's default) or "uniform" (seeded).
        eval_stride: step between val/test windows; None uses 1 (every window, the standard evaluation protocol).
        date_column: the datetime column of a `path=` table.
        frequency: a `path=` table's sampling frequency for reindexing ("infer", an alias such as "h", or None);
            see `table.validate_table`.
        with_resolution: every item also carries `resolution`, the id (`corpus.resolution_id`) of the table's
            sampling resolution, for models with resolution prefix tuning (TTM).
    """

    def __init__(
        self,
        dataset: str = "weather",
        path: str | None = None,
        context_length: int = 96,
        prediction_length: int = 24,
        stride: int = 1,
        split: str = "70/10/20",
        columns: Sequence[str] | None = None,
        calendar_features: bool = False,
        scale: bool = True,
        interpolate_limit: int = 6,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        max_train_windows: int | None = None,
        train_fraction: float | None = None,
        fraction_location: str = "last",
        eval_stride: int | None = None,
        date_column: str = "date",
        frequency: str | None = "infer",
        with_resolution: bool = False,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        require(context_length > 0, f"context_length must be positive, got {context_length}")
        require(prediction_length > 0, f"prediction_length must be positive, got {prediction_length}")
        require(stride > 0, f"stride must be positive, got {stride}")
        require(eval_stride is None or eval_stride > 0, f"eval_stride must be positive, got {eval_stride}")
        self.save_hyperparameters()
        self.dataset = dataset
        self.context_length, self.prediction_length = context_length, prediction_length
        if self.path is not None:
            self.source = str(self.path)
            table = read_table(self.path, date_column, columns, frequency, interpolate_limit)
        else:
            require(
                dataset in DATASETS,
                f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)} or a path= to a CSV/parquet file",
            )
            self.source = dataset
            table = load_dataset(dataset)
            if columns is not None:
                table = validate_table(table, dataset, columns=columns, frequency=None, interpolate_limit=0)
        self.table = table
        self.channel_names: list[str] = [str(c) for c in table.columns]
        self.num_channels = len(self.channel_names)
        self.index: pd.DatetimeIndex = table.index  # type: ignore[assignment]
        self.resolution = DATASETS[dataset].frequency if self.path is None else infer_resolution(self.index)

        self.borders: Borders = split_borders(self.index, split)
        check_lengths(self.borders, context_length, prediction_length, self.source)
        raw = table.to_numpy(dtype=np.float64)
        train_start, train_end = self.borders.train
        self.scaler = StandardScaler.fit(raw[train_start:train_end]) if scale else StandardScaler.identity(raw.shape[1])
        self.values = torch.from_numpy(np.ascontiguousarray(self.scaler.transform(raw), dtype=np.float32))  # [T, C]
        self.time = torch.from_numpy(timef_features(self.index)) if calendar_features else None  # [T, F]
        self.num_time_features = 0 if self.time is None else int(self.time.shape[1])

        resolution = resolution_id(self.resolution) if with_resolution else None
        train_starts = window_starts(self.borders, "train", context_length, prediction_length, stride)
        train_starts = subsample(train_starts, max_train_windows, train_fraction, fraction_location, seed)
        self.train_set: WindowDataset = self.windows(train_starts, resolution)
        eval_starts = {
            name: window_starts(self.borders, name, context_length, prediction_length, eval_stride or 1)
            for name in ("val", "test")
        }
        self.val_set: WindowDataset = self.windows(eval_starts["val"], resolution)
        self.test_set: WindowDataset = self.windows(eval_starts["test"], resolution)
        self.predict_set = self.test_set  # `paperzoo predict` forecasts the test windows
        log.info(
            "%s: %d rows x %d channels, windows train/val/test = %d/%d/%d",
            self.source,
            len(table),
            self.num_channels,
            len(self.train_set),
            len(self.val_set),
            len(self.test_set),
        )

    def windows(self, starts: np.ndarray, resolution: int | None) -> WindowDataset:
        return WindowDataset(
            self.values, starts, self.context_length, self.prediction_length, self.time, resolution=resolution
        )

    def timestamps(self, split: str) -> pd.DatetimeIndex:
        """The timestamps of the rows whose values are targets in `split` ("train", "val", "test")."""
        start, end = self.borders[split]
        return self.index[start:end]
