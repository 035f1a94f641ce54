"""Event matching, F1 and stop latency of the duplex metrics, on hand-counted cases."""

from types import SimpleNamespace

import pytest

from paperzoo.speech.duplex.metrics import EventCounts, match_events, score_dialogues


def test_matches_within_the_window_after_the_reference():
    counts = match_events([1.0, 2.5, 5.0], [0.8, 2.0, 4.0], tolerance=0.8)
    # 0.8 -> 1.0 (+0.2), 2.0 -> 2.5 (+0.5), 4.0 -> nothing within 0.8 s (5.0 is +1.0): a miss and a false positive
    assert (counts.tp, counts.fp, counts.fn) == (2, 1, 1)
    assert counts.delays == pytest.approx([0.2, 0.5])
    assert counts.f1 == pytest.approx(4 / 6)
    assert counts.precision == pytest.approx(2 / 3) and counts.recall == pytest.approx(2 / 3)
    assert counts.mean_delay == pytest.approx(0.35)


def test_a_prediction_before_its_reference_does_not_match():
    counts = match_events([0.9], [1.0], tolerance=0.8)  # starting before the user finished is an interruption
    assert (counts.tp, counts.fp, counts.fn) == (0, 1, 1)
    assert counts.f1 == 0.0


def test_one_prediction_matches_one_reference():
    counts = match_events([1.2], [1.0, 1.1], tolerance=0.8)
    assert (counts.tp, counts.fp, counts.fn) == (1, 0, 1)
    assert counts.delays == pytest.approx([0.2])  # the earlier reference takes it


def test_references_take_the_earliest_free_prediction():
    counts = match_events([1.7, 1.6], [1.0, 1.5], tolerance=0.8)
    assert (counts.tp, counts.fp, counts.fn) == (2, 0, 0)
    assert counts.delays == pytest.approx([0.6, 0.2])


def test_boundaries_are_inclusive_and_nothing_to_do_scores_one():
    counts = match_events([1.0, 2.8], [1.0, 2.0], tolerance=0.8)
    assert (counts.tp, counts.fp, counts.fn) == (2, 0, 0)
    assert match_events([], [], tolerance=0.5).f1 == 1.0
    assert match_events([], [1.0], tolerance=0.5).f1 == 0.0


def test_counts_add_and_dialogues_are_summed():
    total = EventCounts(1, 2, 3, [0.1]) + EventCounts(4, 5, 6, [0.3])
    assert (total.tp, total.fp, total.fn, total.delays) == (5, 7, 9, [0.1, 0.3])
    dialogues = [
        SimpleNamespace(starts=[1.2], turn_ends=[1.0], stops=[3.3, 6.0], overlaps=[3.0], barge_ins=[3.0]),
        SimpleNamespace(starts=[0.5, 2.0], turn_ends=[1.5], stops=[], overlaps=[4.0], barge_ins=[4.0]),
    ]
    scores = score_dialogues(dialogues, take_tolerance=0.8, stop_tolerance=0.8)
    assert (scores.turn_taking.tp, scores.turn_taking.fp, scores.turn_taking.fn) == (2, 1, 0)
    assert (scores.barge_in.tp, scores.barge_in.fp, scores.barge_in.fn) == (1, 1, 1)
    summary = scores.summary()
    assert summary["turn-taking F1"] == pytest.approx(4 / 5)
    assert summary["barge-in F1"] == pytest.approx(2 / 4)
    assert summary["stop latency s"] == pytest.approx(0.3)
    assert summary["response delay s"] == pytest.approx((0.2 + 0.5) / 2)


def test_scripted_barge_in_f1_counts_stops_after_self_caused_overlaps_as_false_alarms():
    # The policy started in a pause of a user turn, so the user's next clause overlapped it at 1.0 s (not scripted);
    # scripted barge-ins at 3.0 s (hit by 3.2), 6.0 s (missed) and 9.0 s (the response was about to end: late);
    # an unscripted overlap after a response that ended anyway at 11.0 s (late overlap).
    dialogue = SimpleNamespace(
        starts=[],
        turn_ends=[],
        stops=[1.3, 3.2, 5.0, 9.5, 11.1],
        overlaps=[1.0, 3.0, 6.0],
        late_overlaps=[9.0, 11.0],
        barge_ins=[3.0, 6.0],
        late_barge_ins=[9.0],
    )
    scores = score_dialogues([dialogue], stop_tolerance=0.8)
    # any overlap: 1.3 -> 1.0, 3.2 -> 3.0 hit; 6.0 missed; 5.0 false; 9.5 and 11.1 ignored (late)
    assert (scores.barge_in.tp, scores.barge_in.fp, scores.barge_in.fn) == (2, 1, 1)
    # scripted: 3.2 -> 3.0 hit; 6.0 missed; 1.3, 5.0 and 11.1 false alarms; 9.5 ignored (late scripted barge-in)
    scripted = scores.scripted_barge_in
    assert (scripted.tp, scripted.fp, scripted.fn) == (1, 3, 1)
    assert scripted.delays == pytest.approx([0.2])
    summary = scores.summary()
    assert summary["barge-in F1"] == pytest.approx(4 / 6)
    assert summary["scripted barge-in F1"] == pytest.approx(2 / 6)
    assert summary["scripted barge-in precision"] == pytest.approx(1 / 4)
    assert summary["scripted barge-in recall"] == pytest.approx(1 / 2)
    assert summary["scripted barge-ins"] == 2.0 and summary["false stops (scripted)"] == 3.0
    assert summary["scripted stop latency s"] == pytest.approx(0.2)
