"""`StockPanelDataModule`: daily cross-sections of per-stock features for MIGA (CATALOG 17).

Each sample is one trading day: the features of all N stocks that day and their labels (see `features.py`). The
days are split chronologically (default 70/10/20: train on the oldest days, hold out the most recent 20% as the test
period), and the last `horizon` days of the train and validation parts are dropped (purged), so that no training
label is computed from a price inside the following part.

Batches are dicts:
    features [B, N, F] float32, cross-sectionally standardised;
    target [B, N] float32, the cross-sectionally standardised forward log return (the training label);
    returns [B, N] float32, the realised forward return over the horizon (for IC and rank IC);
    next_returns [B, N] float32, the next-day return (for the daily long-short portfolio);
    day [B] int64, the day's position in the panel (`panel.dates[day]`).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import DataError, require
from paperzoo.timeseries.miga.features import FEATURE_NAMES, Panel, Standardize, build_panel, validate_prices


def load_prices(dataset: str = "sp500", path: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    """A validated (day x stock) close-price table and a name for it in error messages.

    Args:
        dataset: "sp500", the skfolio S&P 500 panel (20 stocks, 1990-2022), used when `path` is None.
        path: a CSV or parquet file with a date column (the first column, or one named "date"/"Date") and one
            column of closing prices per stock.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DataError(f"price file {path} does not exist")
        try:
            table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except Exception as error:  # a truncated or corrupt file: name it
            raise DataError(f"could not read price file {path}: {error}") from error
        date_column = next((c for c in table.columns if str(c).lower() == "date"), table.columns[0])
        try:
            table.index = pd.DatetimeIndex(pd.to_datetime(table.pop(date_column)))
        except (ValueError, TypeError) as error:
            raise DataError(f"{path}: column {date_column!r} does not hold dates: {error}") from error
        return validate_prices(table, str(path)), str(path)
    if dataset != "sp500":
        raise DataError(f"unknown stock dataset {dataset!r}; the offline one is 'sp500' (or give a path)")
    try:  # the package's named-dataset loader, when it is there
        from paperzoo.timeseries.data import load_dataset

        table = load_dataset("sp500")
    except ImportError:
        from skfolio.datasets import load_sp500_dataset

        table = load_sp500_dataset()
    return validate_prices(table, "skfolio S&P 500"), "skfolio S&P 500"


def split_days(num_days: int, split: str, purge: int) -> dict[str, np.ndarray]:
    """Chronological train/val/test day indices from "a/b/c" percentages, with `purge` days dropped from the end
    of the train and validation parts."""
    try:
        parts = [float(p) for p in split.split("/")]
    except ValueError:
        parts = []
    require(
        len(parts) == 3 and all(p > 0 for p in parts) and abs(sum(parts) - 100) < 1e-6,
        f"split must be three positive percentages adding up to 100 such as '70/10/20', got {split!r}",
    )
    train_end = int(num_days * parts[0] / 100)
    val_end = int(num_days * (parts[0] + parts[1]) / 100)
    splits = {
        "train": np.arange(0, train_end - purge),
        "val": np.arange(train_end, val_end - purge),
        "test": np.arange(val_end, num_days),
    }
    for name, days in splits.items():
        if len(days) < 1:
            raise DataError(f"the {name} split of {num_days} days ({split}, purge {purge}) is empty")
    return splits


class PanelDays(Dataset):
    """The days `days` of a `Panel`, one cross-section per item."""

    def __init__(self, panel: Panel, days: np.ndarray):
        self.days = torch.as_tensor(days, dtype=torch.long)
        self.features = torch.from_numpy(panel.features[days])
        self.target = torch.from_numpy(panel.target[days])
        self.returns = torch.from_numpy(panel.returns[days])
        self.next_returns = torch.from_numpy(panel.next_returns[days])

    def __len__(self) -> int:
        return len(self.days)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "features": self.features[index],
            "target": self.target[index],
            "returns": self.returns[index],
            "next_returns": self.next_returns[index],
            "day": self.days[index],
        }

    def all(self) -> dict[str, torch.Tensor]:
        """Every day at once, as one batch."""
        return {
            "features": self.features,
            "target": self.target,
            "returns": self.returns,
            "next_returns": self.next_returns,
            "day": self.days,
        }


class StockPanelDataModule(BaseDataModule):
    """Daily cross-sections of stock features with a chronological train/val/test split.

    Args:
        dataset: the offline price panel when `path` is None ("sp500": skfolio, 20 stocks x 8,313 days).
        path: a CSV/parquet of closing prices (a date column, one column per stock), see `load_prices`.
        horizon: h, the label's horizon in trading days (the target is the forward h-day log return).
        split: chronological train/val/test percentages of the usable days.
        standardize: cross-sectional standardisation of features and target, "zscore" or "rank".
        batch_size: days per batch.
        num_workers, seed: see `BaseDataModule`.

    Attributes (after `__init__`): `num_features`, `num_stocks`, `feature_names`, `stock_names`, `panel`,
    `train_set`, `val_set`, `test_set` (`predict_set` is the test set).
    """

    def __init__(
        self,
        dataset: str = "sp500",
        path: str | None = None,
        horizon: int = 1,
        split: str = "70/10/20",
        standardize: Standardize = "zscore",
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        require(horizon >= 1, f"horizon must be >= 1 trading day, got {horizon}")
        require(standardize in ("zscore", "rank"), f"standardize must be 'zscore' or 'rank', got {standardize!r}")
        self.dataset, self.horizon, self.split, self.standardize = dataset, horizon, split, standardize
        # Small enough to build eagerly (~0.3 s), so num_features is known when the CLI links arguments.
        prices, self.source = load_prices(dataset, path)
        self.panel = build_panel(prices, horizon, standardize)
        self.feature_names, self.stock_names = FEATURE_NAMES, self.panel.stocks
        self.num_features, self.num_stocks = len(FEATURE_NAMES), len(self.panel.stocks)
        self.day_splits = split_days(len(self.panel.dates), split, purge=horizon)
        self.train_set = PanelDays(self.panel, self.day_splits["train"])
        self.val_set = PanelDays(self.panel, self.day_splits["val"])
        self.test_set = PanelDays(self.panel, self.day_splits["test"])
        self.predict_set = self.test_set

    def split_dates(self) -> dict[str, tuple[str, str]]:
        """First and last date of each split, as ISO strings."""
        dates = self.panel.dates
        return {name: (str(dates[d[0]].date()), str(dates[d[-1]].date())) for name, d in self.day_splits.items()}
