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
