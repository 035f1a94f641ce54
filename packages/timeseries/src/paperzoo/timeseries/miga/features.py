"""Per-stock daily factor features and forward-return labels from closing prices, for MIGA (CATALOG 17).

MIGA (arXiv 2410.02241) feeds Alpha158-style factors (qlib) to its encoder. Alpha158 is built from open, high, low,
close and volume; the offline S&P 500 panel (skfolio, 20 stocks x 8,313 days, 1990-2022) has closing prices only,
so this is the subset of price factors a close series supports. **No volume, high/low or fundamental factor is
available**, so none is used. The features of stock i on day t (all from closes up to and including day t):

- `ret_w`: the log return over the last w days, log(P_t / P_{t-w}), w in 1, 5, 10, 20, 60;
- `vol_w`: realised volatility, the standard deviation (ddof 1) of the last w daily log returns, w in 5, 20, 60;
- `mom_12_1`, `mom_6_1`: momentum skipping the last month, log(P_{t-21} / P_{t-252}) and log(P_{t-21} / P_{t-126});
- `ma_w`: the distance to the moving average, log(P_t / mean(P_{t-w+1..t})), w in 5, 20, 60;
- `high_252`: the distance to the 252-day high, log(P_t / max(P_{t-251..t})) (<= 0).

Labels for day t use only the prices of days t+1..t+h: `forward_log_return` = log(P_{t+h} / P_t) (the training
target, after cross-sectional standardisation), `forward_return` = P_{t+h} / P_t - 1 (the realised return the IC is
measured against) and the next-day simple return P_{t+1} / P_t - 1 (what the daily long-short portfolio earns).

Cross-sectional standardisation: each day, each feature (and the target) is standardised over the stocks of that day,
either z-scored (default; the population std, clipped to +-`clip`; a feature constant across stocks gives 0) or
rank-transformed (average ranks of ties, mapped linearly to [-sqrt(3), sqrt(3)], unit variance without ties). This is
qlib's CSZScoreNorm / CSRankNorm; it removes the market-wide level of every feature, so the model ranks stocks.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from paperzoo.core.errors import ConfigError, DataError

RETURN_WINDOWS = (1, 5, 10, 20, 60)
VOLATILITY_WINDOWS = (5, 20, 60)
MA_WINDOWS = (5, 20, 60)
FEATURE_NAMES: tuple[str, ...] = (
    *(f"ret_{w}" for w in RETURN_WINDOWS),
    *(f"vol_{w}" for w in VOLATILITY_WINDOWS),
    "mom_12_1",
    "mom_6_1",
    *(f"ma_{w}" for w in MA_WINDOWS),
    "high_252",
)
NUM_FEATURES = len(FEATURE_NAMES)
#: the first day with every feature defined (momentum looks 252 days back).
WARMUP = 252

Standardize = Literal["zscore", "rank"]


def validate_prices(prices: pd.DataFrame, source: str = "prices") -> pd.DataFrame:
    """Check a (day x stock) table of closing prices and return it as float64.

    Raises `DataError` naming `source` for: a non-datetime, duplicate or unsorted index, fewer than 2 stocks,
    non-numeric columns, missing values or non-positive prices.
    """
    if not isinstance(prices.index, pd.DatetimeIndex):
        raise DataError(f"{source}: the index must be dates (a DatetimeIndex), got {type(prices.index).__name__}")
    if prices.index.has_duplicates:
        raise DataError(f"{source}: duplicate date {prices.index[prices.index.duplicated()][0].date()}")
    if not prices.index.is_monotonic_increasing:
        raise DataError(f"{source}: dates are not in increasing order")
    if prices.shape[1] < 2:
        raise DataError(f"{source}: a cross-section needs at least 2 stocks, got {prices.shape[1]}")
    non_numeric = [c for c in prices.columns if not pd.api.types.is_numeric_dtype(prices[c])]
    if non_numeric:
        raise DataError(f"{source}: column {non_numeric[0]!r} is not numeric")
    values = prices.astype("float64")
    missing = values.isna()
    if missing.any().any():
        column = missing.any().idxmax()
        day = missing[column].idxmax()
        raise DataError(f"{source}: missing price for {column!r} on {day.date()}; fill or drop it first")
    if (values <= 0).any().any():
        column = (values <= 0).any().idxmax()
        raise DataError(f"{source}: non-positive price in column {column!r}; prices must be > 0")
    return values


def price_features(prices: pd.DataFrame) -> np.ndarray:
    """The raw (not standardised) features of every stock on every day. [T, N, F] float64, NaN before `WARMUP`.

    Every value on day t is a function of the closes of days <= t only.
    """
    log_price = np.log(prices)
    daily = log_price.diff()
    columns: list[pd.DataFrame] = []
    columns += [log_price - log_price.shift(w) for w in RETURN_WINDOWS]
    columns += [daily.rolling(w).std() for w in VOLATILITY_WINDOWS]
    columns += [log_price.shift(21) - log_price.shift(252), log_price.shift(21) - log_price.shift(126)]
    columns += [log_price - np.log(prices.rolling(w).mean()) for w in MA_WINDOWS]
    columns += [log_price - log_price.rolling(252).max()]
    return np.stack([c.to_numpy() for c in columns], axis=-1)  # [T, N, F]


def forward_log_return(prices: pd.DataFrame, horizon: int) -> np.ndarray:
    """log(P_{t+h} / P_t) for every day and stock; NaN for the last `horizon` days. [T, N]"""
    log_price = np.log(prices.to_numpy())
    out = np.full_like(log_price, np.nan)
    out[:-horizon] = log_price[horizon:] - log_price[:-horizon]
    return out


def cross_sectional_standardize(
    values: np.ndarray, method: Standardize = "zscore", clip: float = 5.0, eps: float = 1e-12
) -> np.ndarray:
    """Standardise over the stock axis, separately for every day (and feature).

    Args:
        values: [T, N] or [T, N, F]; the stock axis is axis 1.
        method: "zscore" (mean 0, population std 1, clipped to +-clip) or "rank" (average ranks, mapped to
            [-sqrt(3), sqrt(3)]).
        clip: bound of z-scores.
        eps: a cross-section with std below it is constant and maps to 0.
    """
    if method == "zscore":
        mean = values.mean(axis=1, keepdims=True)
        std = values.std(axis=1, keepdims=True)
        constant = std < eps
        z = (values - mean) / np.where(constant, 1.0, std)
        return np.clip(np.where(constant, 0.0, z), -clip, clip)
    if method == "rank":
        n = values.shape[1]
        less = (values[:, None, :] < values[:, :, None]).sum(axis=2)  # [T, N(i), ...]: stocks below stock i
        equal = (values[:, None, :] == values[:, :, None]).sum(axis=2)
        ranks = less + (equal + 1) / 2.0  # average rank, 1..N
        return (2.0 * (ranks - 1.0) / max(n - 1, 1) - 1.0) * np.sqrt(3.0)
    raise ConfigError(f"standardize must be 'zscore' or 'rank', got {method!r}")


@dataclass(frozen=True)
class Panel:
    """The modelling panel: one row per usable day (every feature defined and the label's horizon inside the data).

    Attributes:
        dates: the days, [T].
        stocks: the stock names, [N].
        features: cross-sectionally standardised features, [T, N, F] float32.
        target: the cross-sectionally standardised forward log return (the training label), [T, N] float32.
        returns: the realised forward return over the horizon, P_{t+h} / P_t - 1, [T, N] float32.
        next_returns: the next-day return P_{t+1} / P_t - 1, [T, N] float32.
        horizon: h, in trading days.
    """

    dates: pd.DatetimeIndex
    stocks: tuple[str, ...]
    features: np.ndarray
    target: np.ndarray
    returns: np.ndarray
    next_returns: np.ndarray
    horizon: int


def build_panel(prices: pd.DataFrame, horizon: int = 1, standardize: Standardize = "zscore") -> Panel:
    """Features and labels of every usable day of a validated price table (see `validate_prices`)."""
    if horizon < 1:
        raise ConfigError(f"horizon must be >= 1 trading day, got {horizon}")
    if len(prices) <= WARMUP + horizon:
        raise DataError(
            f"the price table has {len(prices)} days; features need {WARMUP} days of history plus the horizon "
            f"{horizon}, so at least {WARMUP + horizon + 1}"
        )
    raw = price_features(prices)  # [T, N, F]
    log_label = forward_log_return(prices, horizon)  # [T, N]
    usable = np.arange(WARMUP, len(prices) - horizon)
    price = prices.to_numpy()
    future = np.exp(log_label[usable]) - 1.0
    next_day = price[usable + 1] / price[usable] - 1.0
    features = cross_sectional_standardize(raw[usable], standardize)
    target = cross_sectional_standardize(log_label[usable], standardize)
    if not np.isfinite(features).all():
        raise DataError("features are not finite after the warm-up; check the price table for zeros or gaps")
    return Panel(
        dates=prices.index[usable],
        stocks=tuple(str(c) for c in prices.columns),
        features=features.astype(np.float32),
        target=target.astype(np.float32),
        returns=future.astype(np.float32),
        next_returns=next_day.astype(np.float32),
        horizon=horizon,
    )
