"""IC, rank IC and the long-short portfolio (paperzoo.timeseries.miga.metrics) against scipy / numpy."""

import numpy as np
import pytest
import torch
from scipy import stats

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.miga.metrics import (
    CrossSectionalMetrics,
    average_ranks,
    evaluate,
    long_short_returns,
    pearson,
    spearman,
)


def test_average_ranks_match_scipy_with_ties():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0, 0.5], [1.0, 1.0, 1.0, 1.0, 2.0, 0.0]])
    for row in range(2):
        np.testing.assert_allclose(average_ranks(x)[row].numpy(), stats.rankdata(x[row].numpy()))


def test_daily_pearson_and_spearman_match_scipy():
    rng = np.random.default_rng(0)
    prediction = rng.normal(size=(30, 20))
    returns = 0.3 * prediction + rng.normal(size=(30, 20))
    prediction[:5] = np.round(prediction[:5])  # days with many ties in the prediction
    returns[5:8] = np.round(returns[5:8] * 2) / 2  # and in the returns
    ic = pearson(torch.from_numpy(prediction), torch.from_numpy(returns)).numpy()
    rank_ic = spearman(torch.from_numpy(prediction), torch.from_numpy(returns)).numpy()
    for day in range(30):
        assert ic[day] == pytest.approx(stats.pearsonr(prediction[day], returns[day])[0], abs=1e-10)
        assert rank_ic[day] == pytest.approx(stats.spearmanr(prediction[day], returns[day])[0], abs=1e-10)


def test_constant_day_counts_as_zero():
    prediction = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    returns = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    assert pearson(prediction, returns).tolist() == pytest.approx([0.0, -1.0])
    assert spearman(prediction, returns).tolist() == pytest.approx([0.0, -1.0])


def test_long_short_against_a_naive_loop():
    rng = np.random.default_rng(1)
    prediction, returns = rng.normal(size=(10, 12)), rng.normal(size=(10, 12))
    got = long_short_returns(torch.from_numpy(prediction), torch.from_numpy(returns), k=3).numpy()
    for day in range(10):
        order = np.argsort(prediction[day])
        expected = returns[day, order[-3:]].mean() - returns[day, order[:3]].mean()
        assert got[day] == pytest.approx(expected)
    with pytest.raises(ConfigError, match="k must be"):
        long_short_returns(torch.from_numpy(prediction), torch.from_numpy(returns), k=7)


def test_long_short_hand_example():
    prediction = torch.tensor([[0.9, -0.5, 0.1, 0.4]])  # long stock 0, short stock 1 (k=1)
    returns = torch.tensor([[0.02, -0.01, 0.5, 0.3]])
    assert long_short_returns(prediction, returns, 1).item() == pytest.approx(0.03)


def test_summary_figures_and_the_accumulating_metric_agree_with_numpy():
    rng = np.random.default_rng(2)
    prediction = torch.from_numpy(rng.normal(size=(50, 20)))
    returns = 0.1 * prediction + torch.from_numpy(rng.normal(size=(50, 20)))
    next_returns = torch.from_numpy(rng.normal(size=(50, 20))) * 0.01
    figures = evaluate(prediction, returns, next_returns, k=4)
    daily_ic = [stats.pearsonr(prediction[d], returns[d])[0] for d in range(50)]
    daily_rank = [stats.spearmanr(prediction[d], returns[d])[0] for d in range(50)]
    daily_ls = long_short_returns(prediction, next_returns, 4).numpy()
    assert figures["ic"] == pytest.approx(np.mean(daily_ic))
    assert figures["rank_ic"] == pytest.approx(np.mean(daily_rank))
    assert figures["icir"] == pytest.approx(np.mean(daily_ic) / np.std(daily_ic, ddof=1))
    assert figures["long_short_annual"] == pytest.approx(252 * daily_ls.mean())
    assert figures["long_short_sharpe"] == pytest.approx(np.sqrt(252) * daily_ls.mean() / daily_ls.std(ddof=1))
    metric = CrossSectionalMetrics(k=4)
    for start in range(0, 50, 16):  # uneven batches of days
        metric.update(prediction[start : start + 16], returns[start : start + 16], next_returns[start : start + 16])
    accumulated = metric.compute()
    for name, value in figures.items():
        assert accumulated[name] == pytest.approx(value), name
