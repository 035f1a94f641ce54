"""Chronological splits, calendar features and the sliding-window dataset.

Splits (row borders into the validated table, `Borders`):
- "a/b/c" (e.g. "70/10/20", any three non-negative integers summing to 100): the Autoformer protocol,
  `n_train = int(T * a/100)`, `n_test = int(T * c/100)`, `n_val = T - n_train - n_test`.
- "ett": the protocol of the Informer paper (arXiv:2012.07436, Sec. 4: "the train/val/test is 12/4/4 months"),
  by timestamps: train = [t0, t0 + 12 months), val = [t0 + 12, t0 + 16 months), test = [t0 + 16, t0 + 20 months)
  with calendar months from the first timestamp t0. Known deviation: the Informer/Autoformer code uses 30-day
  months (12*30*24 = 8,640 hourly training rows, against 8,760 by the calendar for ETTh1); the split "ett_rows"
  reproduces those code borders exactly (12/4/4 x 30 days x steps per day) for comparing with published numbers.

Evaluation windows take their lookback from the end of the previous split (the Informer/Autoformer protocol: the val
slice starts at `n_train - L`), but every target lies inside its split; training windows only touch training rows.

Calendar features ("timeF" of Informer's `utils/timefeatures.py`): each feature scaled to [-0.5, 0.5], the set
picked by the data's frequency: sub-hourly: minute-of-hour, hour-of-day, day-of-week, day-of-month, day-of-year;
hourly: hour-of-day, day-of-week, day-of-month, day-of-year; daily (and business days): day-of-week, day-of-month,
day-of-year; weekly: day-of-month, week-of-year; monthly or quarterly: month-of-year; yearly: none.
"""

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.timeseries.data.table import modal_step

SPLIT_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*/\s*(\d+)\s*$")
ETT_MONTHS = (12, 4, 4)


@dataclass(frozen=True)
class Borders:
    """Rows [start, end) of each split's targets; eval windows also read the `context_length` rows before."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def __getitem__(self, split: str) -> tuple[int, int]:
        return getattr(self, split)


def split_borders(index: pd.DatetimeIndex, split: str, frequency: str | None = None) -> Borders:
    """Row borders of train/val/test for `split` ("a/b/c", "ett" or "ett_rows") over the table's `index`."""
    total = len(index)
    match = SPLIT_PATTERN.match(split)
    if match:
        a, b, c = (int(g) for g in match.groups())
        if a + b + c != 100:
            raise ConfigError(f"split {split!r} must have three percentages summing to 100, got {a + b + c}")
        n_train, n_test = int(total * a / 100), int(total * c / 100)
        return Borders((0, n_train), (n_train, total - n_test), (total - n_test, total))
    if split == "ett":
        t0 = index[0]
        ends = [t0 + pd.DateOffset(months=sum(ETT_MONTHS[: i + 1])) for i in range(3)]
        if index[-1] < ends[2] - (index[-1] - index[-2] if total > 1 else pd.Timedelta(0)):
            raise DataError(
                f"split 'ett' needs 20 months of data from {t0} to {ends[2]}, but the table ends at {index[-1]}"
            )
        cut = [int(index.searchsorted(e)) for e in ends]
        return Borders((0, cut[0]), (cut[0], cut[1]), (cut[1], cut[2]))
    if split == "ett_rows":
        step = modal_step(index) if frequency is None else pd.Timedelta(pd.tseries.frequencies.to_offset(frequency))
        per_month = int(pd.Timedelta(days=30) / step)
        cut = np.cumsum([m * per_month for m in ETT_MONTHS]).tolist()
        if cut[2] > total:
            raise DataError(f"split 'ett_rows' needs {cut[2]} rows (20 x 30 days), but the table has {total}")
        return Borders((0, cut[0]), (cut[0], cut[1]), (cut[1], cut[2]))
    raise ConfigError(f"split must be 'a/b/c' percentages (e.g. '70/10/20'), 'ett' or 'ett_rows', got {split!r}")


def window_starts(
    borders: Borders, split: str, context_length: int, prediction_length: int, stride: int = 1
) -> np.ndarray:
    """Start rows of the windows of one split: window i reads rows [s, s + L) as past and [s + L, s + L + H) as
    future. Train: s in [train_start, train_end - L - H]; val/test: targets start at the split start, so
    s in [split_start - L, split_end - L - H]."""
    start, end = borders[split]
    first = start if split == "train" else start - context_length
    last = end - context_length - prediction_length
    return np.arange(first, last + 1, stride, dtype=np.int64)


def check_lengths(borders: Borders, context_length: int, prediction_length: int, source: str) -> None:
    """A split too short for one window is a `DataError` naming the lengths."""
    window = context_length + prediction_length
    n_train = borders.train[1] - borders.train[0]
    if n_train < window:
        raise DataError(
            f"{source}: the training split has {n_train} rows, fewer than context_length + prediction_length = "
            f"{context_length} + {prediction_length} = {window}"
        )
    for split in ("val", "test"):
        rows = borders[split][1] - borders[split][0]
        if rows < prediction_length:
            raise DataError(
                f"{source}: the {split} split has {rows} rows ({rows + context_length} with the {context_length}-row "
                f"lookback taken from before it), fewer than context_length + prediction_length = {context_length} + "
                f"{prediction_length} = {window}"
            )


# --- calendar features ---------------------------------------------------------------------------------------
def _minute_of_hour(ix: pd.DatetimeIndex) -> np.ndarray:
    return ix.minute / 59.0 - 0.5


def _hour_of_day(ix: pd.DatetimeIndex) -> np.ndarray:
    return ix.hour / 23.0 - 0.5


def _day_of_week(ix: pd.DatetimeIndex) -> np.ndarray:
    return ix.dayofweek / 6.0 - 0.5


def _day_of_month(ix: pd.DatetimeIndex) -> np.ndarray:
    return (ix.day - 1) / 30.0 - 0.5


def _day_of_year(ix: pd.DatetimeIndex) -> np.ndarray:
    return (ix.dayofyear - 1) / 365.0 - 0.5


def _month_of_year(ix: pd.DatetimeIndex) -> np.ndarray:
    return (ix.month - 1) / 11.0 - 0.5


def _week_of_year(ix: pd.DatetimeIndex) -> np.ndarray:
    return (ix.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5


CALENDAR_FEATURES = {
    "minute": (_minute_of_hour, _hour_of_day, _day_of_week, _day_of_month, _day_of_year),
    "hour": (_hour_of_day, _day_of_week, _day_of_month, _day_of_year),
    "day": (_day_of_week, _day_of_month, _day_of_year),
    "week": (_day_of_month, _week_of_year),
    "month": (_month_of_year,),
    "year": (),
}


def calendar_unit(index: pd.DatetimeIndex) -> str:
    """The feature set for the table's modal step: "minute", "hour", "day", "week", "month" or "year"."""
    if len(index) < 2:
        return "day"
    step = modal_step(index)
    if step < pd.Timedelta(hours=1):
        return "minute"
    if step < pd.Timedelta(days=1):
        return "hour"
    if step < pd.Timedelta(days=7):
        return "day"
    if step < pd.Timedelta(days=28):
        return "week"
    if step < pd.Timedelta(days=365):
        return "month"
    return "year"


def calendar_features(index: pd.DatetimeIndex, unit: str | None = None) -> np.ndarray:
    """Informer's "timeF" encoding of `index`. [T, F] float32 in [-0.5, 0.5]"""
    functions = CALENDAR_FEATURES[unit or calendar_unit(index)]
    if not functions:
        return np.zeros((len(index), 0), dtype=np.float32)
    return np.stack([np.asarray(f(index), dtype=np.float64) for f in functions], axis=1).astype(np.float32)


# --- windows -------------------------------------------------------------------------------------------------
class WindowDataset(Dataset):
    """Sliding windows over one float32 tensor: item i is a view `values[s : s + L]`, `values[s + L : s + L + H]`
    with `s = starts[i]` (no copy per window; the DataLoader's collate stacks them into a batch).

    Args:
        values: the scaled table. [T, C] float32
        starts: window start rows. [N] int64
        context_length: L.
        prediction_length: H.
        time: calendar features aligned with `values`, or None. [T, F] float32
        resolution: if given, each item carries `resolution` (a 0-d int64 tensor): one id for all windows, or
            one per window. [N] int64

    Shapes (per item): past [L, C], future [H, C], past_time [L, F], future_time [H, F].
    """

    def __init__(
        self,
        values: torch.Tensor,
        starts: np.ndarray,
        context_length: int,
        prediction_length: int,
        time: torch.Tensor | None = None,
        resolution: int | np.ndarray | None = None,
    ):
        self.values, self.time = values, time
        self.starts = torch.as_tensor(starts, dtype=torch.int64)
        self.context_length, self.prediction_length = context_length, prediction_length
        self.resolution = None if resolution is None else torch.as_tensor(resolution, dtype=torch.int64)
        if self.resolution is not None and self.resolution.ndim == 1 and len(self.resolution) != len(self.starts):
            raise DataError(f"{len(self.resolution)} resolution ids for {len(self.starts)} windows")
        if len(self.starts) and (
            int(self.starts.min()) < 0 or int(self.starts.max()) + context_length + prediction_length > len(values)
        ):
            raise DataError("window starts fall outside the table")

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = int(self.starts[i])
        mid, end = s + self.context_length, s + self.context_length + self.prediction_length
        item = {"past": self.values[s:mid], "future": self.values[mid:end]}
        if self.time is not None:
            item["past_time"], item["future_time"] = self.time[s:mid], self.time[mid:end]
        if self.resolution is not None:
            item["resolution"] = self.resolution if self.resolution.ndim == 0 else self.resolution[i]
        return item


def subsample(
    starts: np.ndarray, max_windows: int | None, fraction: float | None, location: str, seed: int
) -> np.ndarray:
    """Few-shot subsets of the training windows.

    `fraction` keeps `max(1, round(fraction * N))` windows: with `location="last"` the last ones (the most recent
    training data; the default of granite-tsfm's few-shot `FractionLocation.LAST`, TTM's 5% protocol), with
    `"uniform"` a seeded random choice kept in time order. Then `max_windows` caps the count with evenly spaced
    windows (`linspace` over the remaining ones, first and last kept).
    """
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"train_fraction must be in (0, 1], got {fraction}")
        keep = max(1, round(fraction * len(starts)))
        if location == "last":
            starts = starts[len(starts) - keep :]
        elif location == "uniform":
            chosen = np.random.default_rng(seed).choice(len(starts), size=keep, replace=False)
            starts = starts[np.sort(chosen)]
        else:
            raise ConfigError(f"fraction_location must be 'last' or 'uniform', got {location!r}")
    if max_windows is not None:
        if max_windows < 1:
            raise ConfigError(f"max_train_windows must be >= 1, got {max_windows}")
        if len(starts) > max_windows:
            starts = starts[np.unique(np.linspace(0, len(starts) - 1, max_windows).round().astype(np.int64))]
    return starts
