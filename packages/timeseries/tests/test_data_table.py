"""Reading and validating tables: the ETT fixture, and every bad-input rule of `paperzoo.timeseries.data.table`."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from paperzoo.core.errors import DataError
from paperzoo.timeseries.data.table import read_table, validate_table

FIXTURE = Path(__file__).parent / "fixtures" / "ett_small.csv"
ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


def ett_frame(rows: int = 48) -> pd.DataFrame:
    """A small frame in the ETT layout (date column as strings, like the CSV)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 7)).round(3), columns=ETT_COLUMNS)
    dates = pd.date_range("2016-07-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    frame.insert(0, "date", dates)
    return frame


def write(frame: pd.DataFrame, tmp_path: Path, name: str = "data.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_fixture_is_in_the_ett_format():
    header = FIXTURE.read_text().splitlines()[0]
    assert header == "date," + ",".join(ETT_COLUMNS)
    table = read_table(FIXTURE)
    assert table.shape == (1500, 7)
    assert list(table.columns) == ETT_COLUMNS
    assert table.index[0] == pd.Timestamp("2016-07-01 00:00:00")
    assert (np.diff(table.index.to_numpy()) == np.timedelta64(1, "h")).all()
    assert table.dtypes.eq(np.float64).all() and not table.isna().any().any()


def test_fixture_generator_is_deterministic():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_ett_small", FIXTURE.with_name("make_ett_small.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    regenerated = module.make()
    stored = pd.read_csv(FIXTURE)
    assert list(regenerated.columns) == list(stored.columns)
    np.testing.assert_allclose(regenerated[ETT_COLUMNS].to_numpy(), stored[ETT_COLUMNS].to_numpy(), atol=5e-4)


def test_column_selection_and_parquet(tmp_path):
    frame = ett_frame()
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    table = read_table(path, columns=["OT", "HUFL"])
    assert list(table.columns) == ["OT", "HUFL"]
    np.testing.assert_array_equal(table["OT"].to_numpy(), frame["OT"].to_numpy())
    with pytest.raises(DataError, match=r"no column\(s\) \['XX'\]"):
        read_table(path, columns=["XX"])


def test_missing_file_and_date_column(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    path = write(ett_frame().rename(columns={"date": "when"}), tmp_path)
    with pytest.raises(DataError, match="no date column 'date'"):
        read_table(path)
    assert len(read_table(path, date_column="when")) == 48


def test_unparseable_date(tmp_path):
    frame = ett_frame()
    frame.loc[5, "date"] = "2016-07-32 05:00:00"
    with pytest.raises(DataError, match=r"unparseable date '2016-07-32 05:00:00' at row 5"):
        read_table(write(frame, tmp_path))


def test_duplicate_timestamp(tmp_path):
    frame = ett_frame()
    frame.loc[7, "date"] = frame.loc[6, "date"]
    with pytest.raises(DataError, match=r"timestamp 2016-07-01 06:00:00 appears twice \(rows 6 and 7\)"):
        read_table(write(frame, tmp_path))


def test_non_monotonic_timestamps(tmp_path):
    frame = ett_frame()
    frame.loc[[10, 11], "date"] = frame.loc[[11, 10], "date"].to_numpy()
    with pytest.raises(DataError, match=r"not increasing: 2016-07-01 10:00:00 at row 11 comes after"):
        read_table(write(frame, tmp_path))


def test_non_numeric_channel(tmp_path):
    frame = ett_frame().astype({"MULL": object})
    frame.loc[3, "MULL"] = "n/a?"
    with pytest.raises(DataError, match=r"column 'MULL' has a non-numeric value 'n/a\?' at 2016-07-01 03:00:00"):
        read_table(write(frame, tmp_path))


def test_infinite_value():
    frame = ett_frame().set_index("date")
    frame.iloc[4, 2] = np.inf
    with pytest.raises(DataError, match="column 'MUFL' has an infinite value at 2016-07-01 04:00:00"):
        validate_table(frame, "src")


def test_short_gap_is_interpolated_linearly(tmp_path):
    frame = ett_frame()
    frame.loc[10:12, "OT"] = np.nan  # 3 missing, limit 6
    table = read_table(write(frame, tmp_path), interpolate_limit=6)
    before, after = frame.loc[9, "OT"], frame.loc[13, "OT"]
    np.testing.assert_allclose(table["OT"].to_numpy()[10:13], before + (after - before) * np.array([1, 2, 3]) / 4)
    np.testing.assert_array_equal(table["HUFL"].to_numpy(), frame["HUFL"].to_numpy())


def test_long_gap_is_an_error_naming_column_time_and_length(tmp_path):
    frame = ett_frame()
    frame.loc[20:26, "LULL"] = np.nan  # 7 missing
    path = write(frame, tmp_path)
    with pytest.raises(
        DataError,
        match=r"column 'LULL' has 7 consecutive missing value\(s\) inside the series from "
        r"2016-07-01 20:00:00.*interpolate_limit=6",
    ):
        read_table(path, interpolate_limit=6)
    assert not read_table(path, interpolate_limit=7).isna().any().any()


def test_missing_values_at_the_edges_are_an_error(tmp_path):
    frame = ett_frame()
    frame.loc[0, "HULL"] = np.nan
    with pytest.raises(DataError, match=r"column 'HULL' has 1 consecutive missing value\(s\) at the start"):
        read_table(write(frame, tmp_path))
    frame = ett_frame()
    frame.loc[47, "HULL"] = np.nan
    with pytest.raises(DataError, match="at the end from 2016-07-02 23:00:00"):
        read_table(write(frame, tmp_path))


def test_missing_timestamps_are_reindexed_then_interpolated(tmp_path):
    frame = ett_frame()
    short = frame.drop(index=[20, 21, 22])  # three hours missing from an hourly table
    table = read_table(write(short, tmp_path))  # frequency="infer": hourly, so reindexed
    assert len(table) == 48
    a, b = frame.loc[19, "OT"], frame.loc[23, "OT"]
    np.testing.assert_allclose(table["OT"].to_numpy()[20:23], a + (b - a) * np.array([1, 2, 3]) / 4)
    long = frame.drop(index=range(20, 30))
    with pytest.raises(DataError, match=r"10 consecutive missing value\(s\) inside the series from 2016-07-01 20:00"):
        read_table(write(long, tmp_path))
    assert len(read_table(write(long, tmp_path), frequency=None)) == 38  # rows as steps: no reindexing


def test_declared_frequency_rejects_off_grid_timestamps(tmp_path):
    frame = ett_frame()
    frame.loc[5, "date"] = "2016-07-01 05:30:00"
    with pytest.raises(DataError, match=r"2016-07-01 05:30:00 is not on the regular 'h' grid"):
        read_table(write(frame, tmp_path), frequency="h")


def test_daily_tables_are_not_reindexed_by_default():
    trading = pd.bdate_range("2020-01-01", periods=30)
    frame = pd.DataFrame({"x": np.arange(30.0)}, index=trading)
    table = validate_table(frame, "src")
    assert len(table) == 30  # weekends are not steps
    assert len(validate_table(frame, "src", frequency="D", interpolate_limit=2)) == (trading[-1] - trading[0]).days + 1


def test_timezone_aware_timestamps_become_naive_utc():
    frame = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0]}, index=["2013-01-01T06:00:00Z", "2013-01-01T07:00:00Z", "2013-01-01T08:00:00Z"]
    )
    table = validate_table(frame, "src")
    assert table.index.tz is None and table.index[0] == pd.Timestamp("2013-01-01 06:00")
