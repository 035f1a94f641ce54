"""The MRL card, its configs, the check's batch schedule, and the claim check in quick mode (slow tier)."""

import math

import pytest

from paperzoo.core.checks import run_check
from paperzoo.core.errors import DataError
from paperzoo.retrieval.dense.mrl.card import CARD
from paperzoo.retrieval.dense.mrl.check import batch_schedule, check


def test_card_points_at_real_objects_and_configs():
    from paperzoo.core.card import load_object

    assert CARD.key == "mrl" and CARD.number == 120 and CARD.kind == "train"
    assert {"tiny", "wikipedia"} <= set(CARD.configs())
    for path in (CARD.task, CARD.check, *CARD.entry_points):
        assert load_object(path) is not None


def test_batch_schedule_covers_epochs_without_repeats_inside_a_batch():
    batches = batch_schedule(num_pairs=10, steps=7, batch_size=4, seed=0)
    assert len(batches) == 7 and all(len(b) == 4 and len(set(b)) == 4 for b in batches)
    # each epoch is a permutation; its last partial batch is dropped (10 pairs -> 2 batches per epoch)
    assert sorted(batches[0] + batches[1]) == sorted(set(batches[0] + batches[1]))
    assert batches == batch_schedule(10, 7, 4, seed=0) and batches != batch_schedule(10, 7, 4, seed=1)
    with pytest.raises(DataError):
        batch_schedule(num_pairs=3, steps=1, batch_size=4, seed=0)


@pytest.mark.slow
def test_quick_check_runs_and_records_every_dimension():
    result = run_check(check, quick=True)
    assert result.key == "mrl" and len(result.criteria) == 8
    assert all(math.isfinite(c.measured) for c in result.criteria)
    assert {m for m, _ in result.curves["MRL"]} == {24.0, 48.0, 96.0, 192.0, 384.0}
    assert 0 < result.method["nDCG@10 at 384 d"] <= 1
