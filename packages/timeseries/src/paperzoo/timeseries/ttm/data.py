"""TTM's diverse-resolution sampling (DRS): downsampling augmentation of the pretraining corpus, and windows.

Ekambaram et al., TTM (arXiv 2401.03955), Sec. 3: the pretraining corpus is augmented with lower-resolution
versions of its series (e.g. a half-hourly series also gives an hourly and a daily one), so one model sees many
sampling resolutions; the resolution id of each derived series is updated, and resolution prefix tuning tells the
model which one a window has.

- `downsample(values, factor)`: means over non-overlapping blocks of `factor` steps, aligned to the *end* of the
  series (the oldest `len % factor` steps are dropped, so the most recent block is complete).
- `DOWNSAMPLE_FACTORS`: the exact integer factors between the corpus resolutions (`data.corpus.RESOLUTIONS`);
  calendar months/weeks are not integer multiples of days, so D -> M and W -> M are not derived.
- `diverse_resolutions(series, min_length)`: every series plus each coarser version long enough for a window.
- `SeriesWindows`: univariate lookback/horizon windows over a list of series with per-series scaling fitted on
  each series' training part, carrying `resolution` (the batch contract of `paperzoo.timeseries.task`).
- `TTMCorpusDataModule`: the pretraining (or held-out) corpus, DRS-augmented, as a datamodule.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.timeseries.data.corpus import RESOLUTIONS, resolution_id

#: (from, to) -> integer downsampling factor, for the resolutions of `RESOLUTIONS`.
DOWNSAMPLE_FACTORS: dict[tuple[str, str], int] = {
    ("30min", "H"): 2,
    ("30min", "D"): 48,
    ("H", "D"): 24,
    ("H", "W"): 168,
    ("D", "W"): 7,
    ("M", "Q"): 3,
    ("M", "A"): 12,
    ("Q", "A"): 4,
}

#: share of each series used for training / validation (the rest is the test part), as in CorpusDataModule.
SPLIT = (0.7, 0.1)


def downsample(values: np.ndarray, factor: int) -> np.ndarray:
    """Block means of `factor` consecutive steps, aligned to the end. `[T] -> [T // factor]`"""
    require(factor >= 1, f"downsampling factor must be >= 1, got {factor}")
    values = np.asarray(values, dtype=np.float64)
    blocks = len(values) // factor
    if blocks == 0:
        return values[:0]
    return values[len(values) - blocks * factor :].reshape(blocks, factor).mean(axis=1)


def coarser_resolutions(frequency: str) -> dict[str, int]:
    """The resolutions a series at `frequency` can be downsampled to, with their factors."""
    if frequency not in RESOLUTIONS:
        raise ConfigError(f"unknown resolution {frequency!r}; expected one of {RESOLUTIONS}")
    return {to: factor for (source, to), factor in DOWNSAMPLE_FACTORS.items() if source == frequency}


def diverse_resolutions(series: Sequence[Any], min_length: int) -> list[Any]:
    """Every series, plus its downsampled versions with at least `min_length` steps (name `<name>@<frequency>`).

    `series` items are `data.corpus.Series`-like dataclasses (`name`, `values`, `frequency`).
    """
    out = list(series)
    for item in series:
        for frequency, factor in coarser_resolutions(item.frequency).items():
            values = downsample(item.values, factor)
            if len(values) >= min_length:
                out.append(
                    dataclasses.replace(item, name=f"{item.name}@{frequency}", values=values, frequency=frequency)
                )
    return out


def split_points(length: int) -> tuple[int, int]:
    """(end of the training part, end of the validation part) of a series of `length` steps."""
    train_end = int(length * SPLIT[0])
    return train_end, train_end + int(length * SPLIT[1])


class SeriesWindows(Dataset):
    """Univariate windows over several series, scaled per series with its training part's mean and std.

    A window belongs to the part (train, val, test) its *future* lies in, as in the ETT protocol (its lookback may
    reach into the earlier part). Series with no window in the part are skipped (`skipped` names them).

    Args:
        series: `Series`-like items (`name`, `values`, `frequency`).
        context_length: L.
        prediction_length: H.
        part: "train", "val", "test" or "all".
        stride: step between window starts.
        max_per_series: keep at most this many windows of each series, evenly spaced (so that long series do not
            dominate the corpus); None keeps all.

    Items: past [L, 1], future [H, 1] float32, resolution 0-d int64, series 0-d int64 (position in `series`).
    """

    def __init__(
        self,
        series: Sequence[Any],
        context_length: int,
        prediction_length: int,
        part: str = "train",
        stride: int = 1,
        max_per_series: int | None = None,
    ):
        require(part in ("train", "val", "test", "all"), f"part must be train, val, test or all, got {part!r}")
        require(stride >= 1, f"stride must be >= 1, got {stride}")
        self.series = list(series)
        self.context_length, self.prediction_length = context_length, prediction_length
        self.values: list[torch.Tensor] = []
        self.stats: list[tuple[float, float]] = []
        index: list[tuple[int, int]] = []
        self.skipped: list[str] = []
        window = context_length + prediction_length
        for i, item in enumerate(self.series):
            values = np.asarray(item.values, dtype=np.float64)
            if not np.isfinite(values).all():
                raise DataError(f"series {item.name!r} has missing or infinite values")
            train_end, val_end = split_points(len(values))
            if train_end < 2:
                self.skipped.append(item.name)
                self.values.append(torch.empty(0))
                self.stats.append((0.0, 1.0))
                continue
            mean, std = float(values[:train_end].mean()), float(values[:train_end].std())
            std = std if std > 1e-8 else 1.0  # a constant training part: centre only
            self.stats.append((mean, std))
            self.values.append(torch.tensor((values - mean) / std, dtype=torch.float32))
            # future starts (= s + L) must lie in [lo, hi - H]
            lo, hi = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, len(values))}.get(
                part, (0, len(values))
            )
            first, last = max(lo - context_length, 0), hi - window
            starts = np.arange(first, last + 1, stride)
            if max_per_series is not None and len(starts) > max_per_series:
                starts = starts[np.unique(np.linspace(0, len(starts) - 1, max_per_series).round().astype(np.int64))]
            if len(starts) == 0:
                self.skipped.append(item.name)
            index += [(i, int(s)) for s in starts]
        self.index = torch.tensor(index, dtype=torch.int64).reshape(-1, 2)
        self.resolutions = torch.tensor([resolution_id(item.frequency) for item in self.series], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        series, start = (int(v) for v in self.index[i])
        values = self.values[series]
        middle = start + self.context_length
        return {
            "past": values[start:middle, None],
            "future": values[middle : middle + self.prediction_length, None],
            "resolution": self.resolutions[series],
            "series": torch.tensor(series),
        }

    def subset_per_series(self, fraction: float) -> "SeriesWindows":
        """Keep the last `max(1, round(fraction * n))` windows of each series (TTM's few-shot protocol)."""
        require(0 < fraction <= 1, f"fraction must be in (0, 1], got {fraction}")
        keep = []
        for i in range(len(self.series)):
            rows = (self.index[:, 0] == i).nonzero().flatten()
            if len(rows):
                keep.append(rows[len(rows) - max(1, round(fraction * len(rows))) :])
        subset = object.__new__(SeriesWindows)
        subset.__dict__.update(self.__dict__)
        subset.index = self.index[torch.cat(keep)] if keep else self.index[:0]
        return subset


class TTMCorpusDataModule(BaseDataModule):
    """The offline series corpus as TTM pretrains on it: univariate windows with resolution ids, optionally
    augmented with downsampled versions of every series (diverse-resolution sampling).

    Args:
        context_length: L.
        prediction_length: H.
        series: "pretrain" (the corpus minus the held-out series) or "held_out".
        downsampling: add the DRS versions of every series.
        max_series: keep the first `max_series` series (before augmentation), for quick runs.
        max_windows_per_series: cap on each series' training windows (evenly spaced).
        stride: step between training windows (validation uses `max(stride, H)`).
        batch_size, num_workers, seed: see `BaseDataModule`.
    """

    def __init__(
        self,
        context_length: int = 64,
        prediction_length: int = 12,
        series: str = "pretrain",
        downsampling: bool = True,
        max_series: int | None = None,
        max_windows_per_series: int | None = 500,
        stride: int = 1,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        require(series in ("pretrain", "held_out"), f"series must be 'pretrain' or 'held_out', got {series!r}")
        from paperzoo.timeseries.data.corpus import split_corpus

        self.save_hyperparameters()
        self.context_length, self.prediction_length, self.num_channels = context_length, prediction_length, 1
        pretrain, held_out = split_corpus()
        chosen = pretrain if series == "pretrain" else held_out
        chosen = chosen[:max_series] if max_series is not None else chosen
        window = context_length + prediction_length
        self.series = diverse_resolutions(chosen, min_length=int(window / SPLIT[0]) + 1) if downsampling else chosen
        self.train_set = SeriesWindows(
            self.series, context_length, prediction_length, "train", stride, max_windows_per_series
        )
        self.val_set = SeriesWindows(
            self.series, context_length, prediction_length, "val", max(stride, prediction_length)
        )
        self.test_set = SeriesWindows(self.series, context_length, prediction_length, "test", prediction_length)
        self.predict_set = self.test_set
        if len(self.train_set) == 0:
            raise DataError(f"no series of the {series} corpus is long enough for windows of {window} steps")
