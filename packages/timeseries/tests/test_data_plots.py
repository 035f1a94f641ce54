"""`plot_forecasts` writes an image atomically."""

import numpy as np
import pytest
import torch

from paperzoo.core.errors import DataError
from paperzoo.timeseries.plots import plot_forecasts


def test_plot_forecasts_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    past, future = rng.normal(size=(2, 48, 4)), torch.randn(2, 12, 4)  # batches: the first window is plotted
    path = plot_forecasts(past, future, future + 0.1, ["a", "b", "c", "d"], tmp_path / "plot.png", channels=(0, 3, 9))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left behind
    with pytest.raises(DataError, match="must share C"):
        plot_forecasts(past[0], future[0, :, :2], future[0, :, :2], None, tmp_path / "bad.png")


def test_forecast_plot_writer_unscales_with_the_datamodule_scaler(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from paperzoo.timeseries import plots
    from paperzoo.timeseries.data import StandardScaler

    scaler = StandardScaler(np.array([10.0, 20.0]), np.array([2.0, 4.0]), np.array([False, False]))
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(scaler=scaler, channel_names=["a", "b"]))
    seen = {}
    real = plots.plot_forecasts

    def spy(past, future, forecast, names, path, channels):
        seen.update(past=past, names=names)
        return real(past, future, forecast, names, path, channels)

    monkeypatch.setattr(plots, "plot_forecasts", spy)
    writer = plots.ForecastPlotWriter(dirpath=str(tmp_path), max_plots=1)
    outputs = {"past": torch.zeros(3, 8, 2), "future": torch.ones(3, 4, 2), "forecast": torch.ones(3, 4, 2)}
    writer.on_predict_batch_end(trainer, None, outputs, None, batch_idx=0)
    writer.on_predict_batch_end(trainer, None, outputs, None, batch_idx=1)  # beyond max_plots: skipped
    assert [p.name for p in writer.written] == ["forecast_000.png"] and writer.written[0].is_file()
    torch.testing.assert_close(seen["past"][0], torch.tensor([10.0, 20.0]))  # zeros mapped back to the means
    assert seen["names"] == ["a", "b"]
