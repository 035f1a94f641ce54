"""The ID/OOD windows of the scaling study, and (slow tier) the claim check in quick mode."""

import numpy as np
import pytest

from paperzoo.core.errors import DataError
from paperzoo.timeseries.scaling.data import generated_series, real_ood_series, scaling_split


def test_split_takes_training_windows_before_id_windows_and_ood_from_other_series():
    split = scaling_split("synthetic", window=16, stride=4, n_generated=4, generated_length=100, seed=3)
    # per series: training windows from the first 80 values (17 of them), ID windows from the last 20 (2)
    assert split.train.shape == (4 * 17, 16) and split.id_val.shape == (4 * 2, 16)
    series = generated_series(4, 100, seed=3)
    np.testing.assert_allclose(split.train[0].numpy(), series[0][:16], rtol=1e-6)
    np.testing.assert_allclose(split.train[16].numpy(), series[0][64:80], rtol=1e-6)  # the last before the cut
    np.testing.assert_allclose(split.id_val[0].numpy(), series[0][80:96], rtol=1e-6)
    real = dict(real_ood_series())
    assert split.n_ood_series == len(real) and {"co2", "airline", "lynx", "sunspots"} <= set(real)
    assert split.ood.shape[1] == 16 and bool(split.ood.isfinite().all())
    # at most 32 windows of any one series
    assert len(split.ood) <= 32 * len(real)


def test_split_rejects_windows_longer_than_every_series():
    with pytest.raises(DataError, match="shorter"):
        scaling_split("synthetic", window=512, n_generated=2, generated_length=100)
    with pytest.raises(DataError, match="unknown source"):
        scaling_split("web")  # type: ignore[arg-type]


@pytest.mark.slow
def test_quick_check_yields_fits_for_both_axes():
    from paperzoo.timeseries.scaling.check import check

    result = check(quick=True, source="synthetic")
    assert result.key == "tsfm_scaling"
    assert any(c.name.startswith("params:") for c in result.criteria)
    assert {"encoder ID NLL vs params", "encoder OOD NLL vs data"} <= set(result.curves)
    assert "ID params: alpha" in result.method and "params: alpha OOD / alpha ID" in result.method
