"""Scaler, chronological splits, windows and calendar features, and the proof that val/test never leak into
training (`paperzoo.timeseries.data.scaler`, `.windows`, `.module`)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.timeseries.data import ForecastingDataModule, StandardScaler
from paperzoo.timeseries.data.windows import (
    calendar_features,
    split_borders,
    subsample,
    window_starts,
)

FIXTURE = Path(__file__).parent / "fixtures" / "ett_small.csv"


def frame_csv(tmp_path: Path, values: np.ndarray, start="2016-07-01", freq="h", name="t.csv") -> Path:
    index = pd.date_range(start, periods=len(values), freq=freq)
    frame = pd.DataFrame(values, columns=[f"c{i}" for i in range(values.shape[1])])
    frame.insert(0, "date", index.strftime("%Y-%m-%d %H:%M:%S"))
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


# --- scaler ----------------------------------------------------------------------------------------------------
def test_scaler_matches_hand_computation_and_inverts():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])  # channel 1 is constant
    scaler = StandardScaler.fit(x)
    np.testing.assert_allclose(scaler.mean, [3.0, 10.0])
    np.testing.assert_allclose(scaler.scale, [np.sqrt(8 / 3), 1.0])  # population std; constant -> scale 1
    assert scaler.constant.tolist() == [False, True]
    z = scaler.transform(x)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z[:, 1], 0.0)
    np.testing.assert_allclose(z[:, 0], (x[:, 0] - 3.0) / np.sqrt(8 / 3), rtol=1e-6)
    t = torch.tensor(x, dtype=torch.float32).expand(4, 3, 2)  # [..., C] tensors
    zt = scaler.transform(t)
    assert zt.dtype == torch.float32 and zt.shape == (4, 3, 2)
    torch.testing.assert_close(scaler.inverse_transform(zt), t)
    np.testing.assert_allclose(scaler.inverse_transform(z), x)
    with pytest.raises(DataError, match="2 channels"):
        scaler.transform(np.zeros((3, 5)))


def test_scaler_treats_rounding_noise_as_constant():
    x = np.full((100, 1), 1e6) + np.random.default_rng(0).normal(scale=1e-4, size=(100, 1)) * 1e-6
    assert StandardScaler.fit(x).constant.all()


def test_constant_channel_through_the_datamodule(tmp_path):
    values = np.random.default_rng(0).normal(size=(200, 3))
    values[:, 1] = 7.0
    dm = ForecastingDataModule(path=str(frame_csv(tmp_path, values)), context_length=16, prediction_length=4)
    assert dm.scaler.constant.tolist() == [False, True, False]
    assert torch.isfinite(dm.values).all()
    assert torch.all(dm.values[:, 1] == 0)


# --- splits ----------------------------------------------------------------------------------------------------
def test_percentage_split_borders_and_windows_by_hand():
    index = pd.date_range("2020-01-01", periods=100, freq="h")
    borders = split_borders(index, "70/10/20")
    assert (borders.train, borders.val, borders.test) == ((0, 70), (70, 80), (80, 100))
    # L=8, H=4: train windows start 0..58; val targets rows 70..79 -> starts 62..68; test 72..88
    assert window_starts(borders, "train", 8, 4).tolist() == list(range(0, 59))
    assert window_starts(borders, "val", 8, 4).tolist() == list(range(62, 69))
    assert window_starts(borders, "test", 8, 4).tolist() == list(range(72, 89))
    assert window_starts(borders, "train", 8, 4, stride=5).tolist() == list(range(0, 59, 5))
    b = split_borders(pd.date_range("2020-01-01", periods=101, freq="h"), "60/15/25")
    assert (b.train, b.val, b.test) == ((0, 60), (60, 76), (76, 101))  # int(60.6), 101 - 60 - int(25.25)
    with pytest.raises(ConfigError, match="summing to 100"):
        split_borders(index, "70/20/20")
    with pytest.raises(ConfigError, match="'ett' or 'ett_rows'"):
        split_borders(index, "70-10-20")


def test_ett_split_by_calendar_months_and_by_code_rows():
    index = pd.date_range("2016-07-01", periods=17420, freq="h")  # the length of ETTh1
    b = split_borders(index, "ett")
    # 2016-07-01 + 12 months = 2017-07-01: 365 days; +4 months (Jul..Oct: 123 days); +4 (Nov..Feb: 120 days)
    assert b.train == (0, 365 * 24)
    assert b.val == (365 * 24, (365 + 123) * 24)
    assert b.test == ((365 + 123) * 24, (365 + 123 + 120) * 24)
    assert index[b.val[0]] == pd.Timestamp("2017-07-01") and index[b.test[1] - 1] == pd.Timestamp("2018-02-28 23:00")
    rows = split_borders(index, "ett_rows")  # the Informer code: 12*30*24, +4*30*24, +4*30*24
    assert (rows.train, rows.val, rows.test) == ((0, 8640), (8640, 11520), (11520, 14400))
    with pytest.raises(DataError, match="split 'ett' needs 20 months"):
        split_borders(index[:9000], "ett")


def test_windows_equal_slices_of_the_scaled_table():
    dm = ForecastingDataModule(path=str(FIXTURE), context_length=24, prediction_length=12, stride=3)
    raw = pd.read_csv(FIXTURE).drop(columns="date").to_numpy(np.float64)
    assert dm.borders.train == (0, 1050)
    mean, std = raw[:1050].mean(0), raw[:1050].std(0)
    scaled = (raw - mean) / std
    item = dm.train_set[5]  # start row 5 * stride = 15
    np.testing.assert_allclose(item["past"].numpy(), scaled[15:39], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(item["future"].numpy(), scaled[39:51], rtol=1e-5, atol=1e-5)
    first_val = dm.val_set[0]  # lookback rows 1026..1049 (end of train), targets 1050..1061
    np.testing.assert_allclose(first_val["past"].numpy(), scaled[1026:1050], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first_val["future"].numpy(), scaled[1050:1062], rtol=1e-5, atol=1e-5)
    # every window is a view into the one table, not a copy
    assert item["past"].untyped_storage().data_ptr() == dm.values.untyped_storage().data_ptr()
    assert len(dm.train_set) == len(range(0, 1050 - 36 + 1, 3))
    assert len(dm.val_set) == 150 - 12 + 1 and len(dm.test_set) == 300 - 12 + 1  # eval stride 1
    np.testing.assert_allclose(dm.scaler.inverse_transform(item["past"]).numpy(), raw[15:39], rtol=1e-5)


def test_no_leakage_from_val_and_test_into_training(tmp_path):
    """Perturb every val/test value: the scaler and every training window stay bit-identical."""
    raw = pd.read_csv(FIXTURE)
    perturbed = raw.copy()
    n_train = 1050  # 70% of 1500
    channels = raw.columns[1:]
    rng = np.random.default_rng(1)
    perturbed.loc[n_train:, channels] = rng.normal(100.0, 50.0, size=(len(raw) - n_train, len(channels))).round(3)
    (tmp_path / "a.csv").write_text(raw.to_csv(index=False))
    (tmp_path / "b.csv").write_text(perturbed.to_csv(index=False))
    kwargs = dict(context_length=48, prediction_length=24, calendar_features=True)
    a = ForecastingDataModule(path=str(tmp_path / "a.csv"), **kwargs)
    b = ForecastingDataModule(path=str(tmp_path / "b.csv"), **kwargs)
    assert a.borders.train == b.borders.train == (0, n_train)
    np.testing.assert_array_equal(a.scaler.mean, b.scaler.mean)
    np.testing.assert_array_equal(a.scaler.scale, b.scaler.scale)
    assert len(a.train_set) == len(b.train_set) == n_train - 72 + 1
    for name in ("past", "future", "past_time", "future_time"):
        wa = torch.stack([a.train_set[i][name] for i in range(len(a.train_set))])
        wb = torch.stack([b.train_set[i][name] for i in range(len(b.train_set))])
        assert torch.equal(wa, wb), name
    # the perturbation is visible where it should be: val targets differ
    assert not torch.equal(a.val_set[0]["future"], b.val_set[0]["future"])
    # the training loader's batches are identical too
    batch_a, batch_b = next(iter(a.train_dataloader())), next(iter(b.train_dataloader()))
    assert torch.equal(batch_a["past"], batch_b["past"]) and torch.equal(batch_a["future"], batch_b["future"])


@pytest.mark.parametrize("split", ["70/10/20", "ett_rows"])
def test_every_target_lies_inside_its_split(tmp_path, split):
    if split == "ett_rows":  # 20 x 30 days, daily rows
        path = frame_csv(tmp_path, np.random.default_rng(0).normal(size=(640, 2)), freq="D")
        L, H = 20, 7
    else:
        path, L, H = FIXTURE, 48, 24
    dm = ForecastingDataModule(path=str(path), context_length=L, prediction_length=H, split=split)
    for name in ("train", "val", "test"):
        start, end = dm.borders[name]
        lo, hi = dm.timestamps(name)[0], dm.timestamps(name)[-1]
        starts = getattr(dm, f"{name}_set").starts.numpy()
        assert len(starts) > 0
        targets = dm.index[(starts[:, None] + L + np.arange(H)[None]).ravel()]
        assert ((targets >= lo) & (targets <= hi)).all(), name
        assert (starts + L >= start).all() and (starts + L + H <= end).all()
        if name == "train":  # training windows never read a row outside the training split
            assert (starts >= start).all()
        else:  # all targets of the split are covered (stride 1)
            assert starts[0] + L == start and starts[-1] + L + H == end


def test_series_shorter_than_one_window(tmp_path):
    path = frame_csv(tmp_path, np.random.default_rng(0).normal(size=(100, 2)))
    with pytest.raises(DataError, match=r"training split has 70 rows, fewer than .* 64 \+ 16 = 80"):
        ForecastingDataModule(path=str(path), context_length=64, prediction_length=16)
    with pytest.raises(DataError, match=r"val split has 10 rows \(34 with the 24-row lookback.*24 \+ 16 = 40"):
        ForecastingDataModule(path=str(path), context_length=24, prediction_length=16)


# --- calendar features -----------------------------------------------------------------------------------------
def test_timef_calendar_features_on_known_timestamps():
    index = pd.DatetimeIndex(["2016-07-01 00:00", "2016-12-31 23:00", "2017-01-02 12:00"])
    f = calendar_features(index, "hour")  # hour-of-day, day-of-week, day-of-month, day-of-year
    expected = [
        [-0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5],  # Friday, 1st, day 183 of leap 2016
        [0.5, 5 / 6 - 0.5, 0.5, 365 / 365 - 0.5],  # Saturday 23:00, 31st, day 366
        [12 / 23 - 0.5, -0.5, 1 / 30 - 0.5, 1 / 365 - 0.5],  # Monday noon, 2nd, day 2
    ]
    np.testing.assert_allclose(f, expected, atol=1e-6)
    assert f.dtype == np.float32
    assert calendar_features(pd.date_range("2020-01-01", periods=5, freq="30min")).shape == (5, 5)
    assert calendar_features(pd.date_range("2020-01-01", periods=5, freq="h")).shape == (5, 4)
    assert calendar_features(pd.bdate_range("2020-01-01", periods=5)).shape == (5, 3)
    assert calendar_features(pd.date_range("2020-01-01", periods=5, freq="MS")).shape == (5, 1)
    assert np.abs(calendar_features(pd.date_range("2016-01-01", periods=9000, freq="h"))).max() <= 0.5


def test_calendar_features_in_batches():
    dm = ForecastingDataModule(path=str(FIXTURE), context_length=24, prediction_length=12, calendar_features=True)
    item = dm.train_set[3]
    assert item["past_time"].shape == (24, 4) and item["future_time"].shape == (12, 4)
    np.testing.assert_allclose(item["past_time"][0, 0].item(), 3 / 23 - 0.5, atol=1e-6)  # row 3 is 03:00


# --- few-shot subsets ------------------------------------------------------------------------------------------
def test_subsample_fraction_and_cap():
    starts = np.arange(100)
    assert subsample(starts, None, 0.05, "last", 0).tolist() == [95, 96, 97, 98, 99]
    uniform = subsample(starts, None, 0.1, "uniform", 0)
    assert len(uniform) == 10 and (np.diff(uniform) > 0).all()
    assert uniform.tolist() == subsample(starts, None, 0.1, "uniform", 0).tolist()  # seeded
    assert subsample(starts, 5, None, "last", 0).tolist() == [0, 25, 50, 74, 99]  # evenly spaced, ends kept
    assert subsample(starts, None, None, "last", 0) is starts
    with pytest.raises(ConfigError, match="train_fraction"):
        subsample(starts, None, 0.0, "last", 0)


def test_datamodule_few_shot_keeps_the_last_training_windows():
    full = ForecastingDataModule(path=str(FIXTURE), context_length=24, prediction_length=12)
    few = ForecastingDataModule(path=str(FIXTURE), context_length=24, prediction_length=12, train_fraction=0.05)
    n = len(full.train_set)
    assert len(few.train_set) == round(0.05 * n)
    assert few.train_set.starts.tolist() == full.train_set.starts[n - len(few.train_set) :].tolist()
    assert len(few.val_set) == len(full.val_set)  # evaluation untouched
    capped = ForecastingDataModule(path=str(FIXTURE), context_length=24, prediction_length=12, max_train_windows=10)
    assert len(capped.train_set) == 10
