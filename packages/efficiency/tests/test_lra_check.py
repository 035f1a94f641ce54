"""The LRA claim check's quick mode runs end to end and decides by its rule (slow tier)."""

import pytest

from paperzoo.efficiency.sequence.lra.check import check


@pytest.mark.slow
def test_quick_check_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    result = check(quick=True)
    assert result.key == "lra" and result.quick
    assert "s4d/listops/acc" in result.method and "listops/acc" in result.baselines["attention"]
    names = [c.name for c in result.criteria]
    assert "listops: s4d acc - best transformer acc" in names and "long-range mixers available" in names
    gap = result.method["s4d/listops/acc"] - result.baselines["attention"]["listops/acc"]
    assert next(c for c in result.criteria if c.name.startswith("listops: s4d")).measured == pytest.approx(gap)
    assert "| attention |" in result.config["table"]
