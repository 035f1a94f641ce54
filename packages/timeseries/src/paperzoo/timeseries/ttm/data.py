"""Windows for TTM's claim check, and its diverse-resolution sampling (DRS), re-exported from the corpus module.

Ekambaram et al., TTM (arXiv 2401.03955), Sec. 3: the pretraining corpus is augmented with lower-resolution
versions of its series (e.g. a half-hourly series also gives an hourly and a daily one), so one model sees many
sampling resolutions; the resolution id of each derived series is updated, and resolution prefix tuning tells the
model which one a window has. DRS lives in `paperzoo.timeseries.data.corpus` (`downsample`, `DOWNSAMPLE_FACTORS`,
`coarser_resolutions`, `diverse_resolutions`) so that `CorpusDataModule(diverse_resolutions=True)` serves
`paperzoo fit`.

- `SeriesWindows`: univariate lookback/horizon windows over a list of series with a train/val/test part per series
  (70/10/20) and per-series scaling fitted on each series' training part, carrying `resolution` and the series
  index, which the claim check needs for per-series MASE and the few-shot subset (`subset_per_series`).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from paperzoo.core.errors import DataError, require
from paperzoo.timeseries.data.corpus import resolution_id

#: share of each series used for training / validation (the rest is the test part), as in CorpusDataModule.
SPLIT = (0.7, 0.1)


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
