"""The TTM claim check in quick mode (slow tier): it runs, records finite figures and a < 1M-parameter model."""

import math

import pytest

from paperzoo.core.checks import run_check
from paperzoo.timeseries.ttm.check import check


@pytest.mark.slow
def test_quick_check_runs_and_records_the_figures():
    result = run_check(check, quick=True)
    assert result.key == "ttm" and len(result.criteria) == 3
    assert all(math.isfinite(c.measured) for c in result.criteria)
    assert result.method["parameters"] < 1_000_000
    assert result.method["parameters of the paper-size default (TinyTimeMixer())"] < 1_000_000
    assert "sktime:airline" in result.config["held-out series used"]
