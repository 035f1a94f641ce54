"""MIGA's price features, labels and panel datamodule (paperzoo.timeseries.miga.features / data)."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.timeseries.miga.data import StockPanelDataModule, split_days
from paperzoo.timeseries.miga.features import (
    FEATURE_NAMES,
    WARMUP,
    build_panel,
    cross_sectional_standardize,
    forward_log_return,
    price_features,
    validate_prices,
)


def random_prices(days: int = 400, stocks: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    log_price = np.cumsum(0.02 * rng.normal(size=(days, stocks)), axis=0) + 3.0
    index = pd.bdate_range("2000-01-03", periods=days)
    return pd.DataFrame(np.exp(log_price), index=index, columns=[f"S{i}" for i in range(stocks)])


def test_features_at_day_t_use_no_price_after_t():
    prices = random_prices()
    base = price_features(prices)
    for t in (WARMUP, 300, 398):
        changed = prices.copy()
        changed.iloc[t + 1 :] *= np.exp(np.random.default_rng(t).normal(size=changed.iloc[t + 1 :].shape))
        after = price_features(changed)
        np.testing.assert_array_equal(after[: t + 1], base[: t + 1])  # days <= t are untouched
        changed.iloc[t] *= 1.1  # while day t's own close does move day t's features
        assert not np.allclose(price_features(changed)[t], base[t], equal_nan=True)


def test_label_at_day_t_uses_only_days_t_plus_1_to_t_plus_h():
    prices, horizon, t = random_prices(), 5, 300
    base = forward_log_return(prices, horizon)
    for day in list(range(0, t)) + list(range(t + horizon + 1, 400)):  # outside t..t+h: no effect on label t
        changed = prices.copy()
        changed.iloc[day] *= 1.5
        assert forward_log_return(changed, horizon)[t] == pytest.approx(base[t])
    changed = prices.copy()
    changed.iloc[t + horizon] *= 1.5
    np.testing.assert_allclose(forward_log_return(changed, horizon)[t], base[t] + np.log(1.5))
    assert np.isnan(base[-horizon:]).all() and np.isfinite(base[:-horizon]).all()


def test_feature_values_against_hand_formulas():
    prices = random_prices()
    features, t = price_features(prices), 320
    p = prices.to_numpy()
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    np.testing.assert_allclose(features[t, :, column["ret_5"]], np.log(p[t] / p[t - 5]))
    daily = np.diff(np.log(p), axis=0)  # daily[t - 1] is the return of day t
    np.testing.assert_allclose(features[t, :, column["vol_20"]], daily[t - 20 : t].std(axis=0, ddof=1))
    np.testing.assert_allclose(features[t, :, column["mom_12_1"]], np.log(p[t - 21] / p[t - 252]))
    np.testing.assert_allclose(features[t, :, column["ma_20"]], np.log(p[t] / p[t - 19 : t + 1].mean(axis=0)))
    np.testing.assert_allclose(features[t, :, column["high_252"]], np.log(p[t] / p[t - 251 : t + 1].max(axis=0)))
    assert np.isfinite(features[WARMUP:]).all() and np.isnan(features[WARMUP - 1]).any()


def test_cross_sectional_standardisation_matches_scipy():
    values = np.random.default_rng(0).normal(size=(4, 9, 3))
    values[0, :, 1] = 2.0  # a constant cross-section
    values[1, :4, 0] = 1.0  # ties
    z = cross_sectional_standardize(values, "zscore", clip=100)
    np.testing.assert_allclose(z[2, :, 0], stats.zscore(values[2, :, 0]))
    assert (z[0, :, 1] == 0).all()
    ranks = cross_sectional_standardize(values, "rank")
    expected = (2 * (stats.rankdata(values[1, :, 0]) - 1) / 8 - 1) * np.sqrt(3)
    np.testing.assert_allclose(ranks[1, :, 0], expected)
    assert np.abs(cross_sectional_standardize(values * 100, "zscore", clip=1.5)).max() <= 1.5
    with pytest.raises(ConfigError, match="standardize"):
        cross_sectional_standardize(values, "minmax")  # type: ignore[arg-type]


def test_panel_rows_and_labels():
    prices = random_prices()
    panel = build_panel(prices, horizon=2)
    assert panel.features.shape == (400 - WARMUP - 2, 6, len(FEATURE_NAMES))
    assert panel.dates[0] == prices.index[WARMUP]
    p = prices.to_numpy()
    np.testing.assert_allclose(panel.returns[0], p[WARMUP + 2] / p[WARMUP] - 1, rtol=1e-5)
    np.testing.assert_allclose(panel.next_returns[0], p[WARMUP + 1] / p[WARMUP] - 1, rtol=1e-5)
    np.testing.assert_allclose(panel.target.mean(1), 0, atol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.iloc[[0, 0, *range(1, len(df))]], "duplicate date"),
        (lambda df: df.iloc[::-1], "increasing order"),
        (lambda df: df.assign(S2=df["S2"].where(df.index != df.index[10])), "missing price"),
        (lambda df: df.assign(S1=-df["S1"]), "non-positive"),
        (lambda df: df[["S0"]], "at least 2 stocks"),
    ],
)
def test_bad_price_tables_are_rejected(mutate, message):
    with pytest.raises(DataError, match=message):
        validate_prices(mutate(random_prices()))


def test_datamodule_from_a_csv_splits_in_time_with_a_purge(tmp_path):
    path = tmp_path / "prices.csv"
    random_prices(days=600).rename_axis("date").to_csv(path)
    data = StockPanelDataModule(path=str(path), horizon=3, batch_size=8)
    days = data.day_splits
    assert days["train"][-1] + 3 < days["val"][0] and days["val"][-1] + 3 < days["test"][0]
    assert data.num_features == len(FEATURE_NAMES) and data.num_stocks == 6
    batch = next(iter(data.train_dataloader()))
    assert batch["features"].shape == (8, 6, len(FEATURE_NAMES))
    assert batch["target"].shape == batch["returns"].shape == batch["next_returns"].shape == (8, 6)
    assert batch["day"].dtype == torch.int64
    val = next(iter(data.val_dataloader()))
    assert val["day"].tolist() == days["val"][:8].tolist()  # evaluation in order


def test_datamodule_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        StockPanelDataModule(path=str(tmp_path / "missing.csv"))
    short = tmp_path / "short.csv"
    random_prices(days=200).rename_axis("date").to_csv(short)
    with pytest.raises(DataError, match="252 days of history"):
        StockPanelDataModule(path=str(short))
    with pytest.raises(DataError, match="unknown stock dataset"):
        StockPanelDataModule(dataset="nasdaq")
    with pytest.raises(ConfigError, match="split"):
        split_days(100, "80/30/10", purge=1)
