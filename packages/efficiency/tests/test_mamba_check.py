"""Mamba's claim check: the quick mode runs end to end and records every model's figures; the card imports."""

import pytest

from paperzoo.efficiency.sequence.mamba.card import CARD


def test_card_points_at_real_objects():
    from paperzoo.core.card import load_object

    assert CARD.key == "mamba" and CARD.number == 96
    for path in (*CARD.entry_points, CARD.check, CARD.task):
        load_object(path)
    assert {"tiny", "selective_copying", "induction_heads"} <= set(CARD.configs())


@pytest.mark.slow
def test_quick_check_runs_and_records_baselines():
    from paperzoo.efficiency.sequence.mamba.check import check

    result = check(quick=True)
    assert set(result.baselines) == {"s4d", "attention"}
    assert len(result.criteria) == 8
    assert result.method["parameters"] > 0 and "step ms/token at context 64" in result.method
    ratio = result.baselines["attention"]["parameters"] / result.method["parameters"]
    assert 0.9 < ratio < 1.1  # same size
