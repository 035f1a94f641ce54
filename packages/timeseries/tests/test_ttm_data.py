"""TTM's diverse-resolution sampling (downsampling augmentation) and its windows."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.data.corpus import coarser_resolutions, diverse_resolutions, downsample, resolution_id
from paperzoo.timeseries.ttm.data import SeriesWindows


@dataclass
class Series:  # the fields of data.corpus.Series
    name: str
    values: np.ndarray
    frequency: str


def test_downsample_block_means_aligned_to_the_end():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    # factor 3: the oldest step (1.0) is dropped; blocks [2, 3, 4] and [5, 6, 7]
    assert downsample(values, 3).tolist() == [3.0, 6.0]
    assert downsample(values, 1).tolist() == values.tolist()
    assert downsample(values, 8).tolist() == []


def test_diverse_resolutions_adds_coarser_series_with_updated_resolution():
    hourly = Series("load", np.arange(24 * 10, dtype=float), "H")
    monthly = Series("sales", np.arange(36, dtype=float), "M")
    out = diverse_resolutions([hourly, monthly], min_length=1)
    by_name = {s.name: s for s in out}
    assert set(by_name) == {"load", "sales", "load@D", "load@W", "sales@Q", "sales@A"}
    daily = by_name["load@D"]
    assert daily.frequency == "D"
    # day d is the mean of hours 24 d .. 24 d + 23: (24 d + 24 d + 23) / 2
    assert daily.values.tolist() == [24 * d + 11.5 for d in range(10)]
    assert by_name["load@W"].values.tolist() == [np.mean(np.arange(72, 240))]  # 168 h, end-aligned
    assert by_name["sales@Q"].values[:2].tolist() == [1.0, 4.0]
    assert by_name["sales@A"].values.tolist() == [5.5, 17.5, 29.5]
    # min_length drops versions too short for a window
    assert "load@W" not in {s.name for s in diverse_resolutions([hourly], min_length=2)}


def test_coarser_resolutions_rejects_unknown_frequencies():
    assert coarser_resolutions("D") == {"W": 7}
    with pytest.raises(ConfigError, match="unknown resolution"):
        coarser_resolutions("5min")


def test_series_windows_carry_the_resolution_and_split_by_future():
    values = np.arange(100, dtype=float)
    series = [Series("a", values, "M"), Series("a@Q", downsample(values, 3), "Q")]
    train = SeriesWindows(series, context_length=8, prediction_length=4, part="train")
    # series "a": training part = first 70 steps, windows whose future ends by step 70: starts 0..58
    assert int((train.index[:, 0] == 0).sum()) == 59
    item = train[0]
    assert item["past"].shape == (8, 1) and item["future"].shape == (4, 1)
    assert int(item["resolution"]) == resolution_id("M")
    # scaled with the training part's statistics
    mean, std = values[:70].mean(), values[:70].std()
    assert torch.allclose(item["past"][:, 0], torch.tensor((values[:8] - mean) / std, dtype=torch.float32))
    quarterly = train[int((train.index[:, 0] == 0).sum())]
    assert int(quarterly["resolution"]) == resolution_id("Q")
    test = SeriesWindows(series, 8, 4, part="test")
    first = test.index[test.index[:, 0] == 0][0]
    assert int(first[1]) + 8 == 80  # the first test future starts where the test part starts
    few = train.subset_per_series(0.05)
    assert int((few.index[:, 0] == 0).sum()) == 3 and int(few.index[few.index[:, 0] == 0][-1, 1]) == 58
