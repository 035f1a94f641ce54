"""The self-pretraining claim check's decision rule on hand-made accuracies (the training runs are in the slow tier)."""

import pytest

from paperzoo.efficiency.sequence.spt.check import MAX_INIT_DIFFERENCE, decide


def table(**runs: tuple[float, float]) -> dict[str, dict[str, float]]:
    return {model: {"scratch": scratch, "spt": spt} for model, (scratch, spt) in runs.items()}


def verdicts(accuracy) -> dict[str, bool]:
    criteria, _ = decide(accuracy)
    return {c.name: c.passed for c in criteria}


def test_the_papers_picture_passes():
    # transformer 0.40 -> 0.60, S4D-LegS 0.60 -> 0.64, random 0.50 -> 0.62: gap 0.20 from scratch, 0.04 after SPT
    accuracy = {"a": table(transformer=(0.40, 0.60), s4d_legs=(0.60, 0.64), s4d_random=(0.50, 0.62))}
    criteria, summary = decide(accuracy)
    assert all(c.passed for c in criteria), criteria
    assert summary["gap_scratch"] == pytest.approx(0.20) and summary["gap_spt"] == pytest.approx(0.04)
    assert summary["gap_closed"] == pytest.approx(0.8)
    assert summary["init_difference_spt"] == pytest.approx(0.02)
    assert summary["init_difference_scratch"] == pytest.approx(0.10)


def test_averages_over_datasets_and_each_part_can_fail():
    first = table(transformer=(0.40, 0.40), s4d_legs=(0.60, 0.60), s4d_random=(0.50, 0.40))
    second = table(transformer=(0.40, 0.42), s4d_legs=(0.60, 0.58), s4d_random=(0.50, 0.48))
    result = verdicts({"a": first, "b": second})
    assert result == {
        "transformer SPT gain (acc)": False,  # +0.01
        "mean S4D SPT gain (acc)": False,  # (-0.01 - 0.06) / 2
        "scratch gap S4D-LegS - transformer": True,  # 0.20
        "share of that gap closed by SPT": False,  # 1 - 0.18 / 0.20 = 0.1
        "|S4D LegS - random| after SPT": False,  # 0.15
    }


def test_no_scratch_gap_means_nothing_closed():
    accuracy = {"a": table(transformer=(0.50, 0.70), s4d_legs=(0.45, 0.60), s4d_random=(0.45, 0.60))}
    criteria, summary = decide(accuracy)
    assert summary["gap_closed"] == 0.0
    assert [c.passed for c in criteria] == [True, True, False, False, True]
    assert MAX_INIT_DIFFERENCE > 0
