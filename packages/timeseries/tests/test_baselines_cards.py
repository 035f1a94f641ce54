"""Baselines as methods: complete cards, naive evaluation through `paperzoo test` and `evaluate_naive`, and the
claim checks' evaluation helper against a hand computation."""

import csv
import warnings

import pytest
import torch

from paperzoo.core.card import load_object
from paperzoo.core.cli import main as paperzoo_main
from paperzoo.timeseries.baselines.cards import DLINEAR, NAIVE, PATCHTST
from paperzoo.timeseries.baselines.naive import (
    SeasonalNaiveForecaster,
    evaluate_forecaster,
    evaluate_naive,
    forecast_errors,
)

warnings.filterwarnings("ignore", message=".*LeafSpec.*")


@pytest.mark.parametrize("card", [NAIVE, DLINEAR, PATCHTST], ids=lambda card: card.key)
def test_cards_are_complete(card):
    for path in (*card.entry_points, card.check, card.run, card.task):
        if path:
            load_object(path)
    assert {"tiny", "weather", "elecdemand", "garch"} <= set(card.configs())
    assert card.check and card.number == 0  # not a CATALOG paper
    assert (card.task is None) == (card.kind == "eval")
    assert (card.run is not None) == (card.kind == "eval")


def _read_metric(folder, name):
    values = [row[name] for path in folder.rglob("metrics.csv") for row in csv.DictReader(path.open()) if row.get(name)]
    return float(values[-1])


def test_seasonal_naive_is_evaluated_by_paperzoo_test(tmp_path):
    tiny = str(NAIVE.config("tiny"))
    common = ["--config", tiny, "--config", "cpu", "--trainer.enable_progress_bar=false"]
    paperzoo_main(["test", *common, "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={tmp_path}"])
    from paperzoo.core.testing.conformance import build_from_config

    task, data = build_from_config(NAIVE.config("tiny"))
    batches = [batch for _, batch in zip(range(4), data.test_dataloader(), strict=False)]  # limit_test_batches: 4
    expected = evaluate_forecaster(SeasonalNaiveForecaster(data.prediction_length, season=24), batches)
    assert task.hparams.season == 24
    assert _read_metric(tmp_path, "test/mse") == pytest.approx(expected["mse"], rel=1e-5)
    assert _read_metric(tmp_path, "test/mae") == pytest.approx(expected["mae"], rel=1e-5)


def test_fitting_a_naive_forecaster_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        paperzoo_main(["fit", "--config", str(NAIVE.config("tiny")), "--config", "cpu", "--trainer.logger=false"])
    assert exit_info.value.code == 2
    assert "has no parameters to fit" in capsys.readouterr().err


def test_evaluate_naive_on_daily_exchange_rates():
    figures = evaluate_naive(dataset="garch", context_length=20, prediction_length=5, season=5)
    assert set(figures) == {"naive", "seasonal_naive"}
    for metrics in figures.values():
        assert metrics["mae"] > 0 and 0 < metrics["mse"] < 10


def test_forecast_errors_give_mse_mae_per_step_and_per_channel():
    past = torch.zeros(3, 4, 2)
    future = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(3, 2, 2)  # [B=3, H=2, C=2], errors = future
    batches = [{"past": past[:2], "future": future[:2]}, {"past": past[2:], "future": future[2:]}]
    figures = forecast_errors(SeasonalNaiveForecaster(2, 1), batches)  # forecasts zeros
    assert figures["mse"] == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert figures["mae"] == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert figures["horizon"] == [(1.0, pytest.approx(2.5)), (2.0, pytest.approx(12.5))]
    assert figures["channel"] == [pytest.approx(5.0), pytest.approx(10.0)]
