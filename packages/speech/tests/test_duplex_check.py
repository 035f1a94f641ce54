"""SALMONN-omni's card and claim check: the card's objects import, the decision rule can fail, and the quick check
runs end to end with the oracle at the ceiling (slow tier)."""

import math

import pytest

from paperzoo.core.card import load_object
from paperzoo.speech.duplex import check as duplex_check
from paperzoo.speech.duplex.card import CARD


def test_card():
    assert (CARD.key, CARD.number, CARD.kind, CARD.domain) == ("salmonn_omni", 1, "component", "speech")
    assert {"tiny", "duplex_espeak"} <= set(CARD.configs())
    for path in (*CARD.entry_points, CARD.task, CARD.check):
        load_object(path)


def test_rule_needs_both_f1_ahead_of_the_vad():
    vad = {"turn-taking F1": 0.60, "scripted barge-in F1": 0.70, "barge-in F1": 0.70}
    ahead = duplex_check.decide({"turn-taking F1": 0.65, "scripted barge-in F1": 0.75, "barge-in F1": 0.0}, vad)
    assert all(c.passed for c in ahead)  # the any-overlap barge-in F1 is reported, not decided on
    behind = duplex_check.decide({"turn-taking F1": 0.61, "scripted barge-in F1": 0.90, "barge-in F1": 0.9}, vad)
    assert [c.passed for c in behind] == [False, True]  # +0.01 < the margin
    inflated = {"turn-taking F1": 0.9, "scripted barge-in F1": 0.5, "barge-in F1": 0.99}
    assert [c.passed for c in duplex_check.decide(inflated, vad)] == [True, False]
    assert "scripted" in duplex_check.decide(inflated, vad)[1].name


@pytest.mark.slow
def test_quick_check_runs():
    result = duplex_check.check(quick=True)
    assert result.key == "salmonn_omni" and len(result.criteria) == 2
    oracle = result.baselines["oracle (reference labels)"]
    assert oracle["turn-taking F1"] == 1.0 and oracle["barge-in F1"] == 1.0 and oracle["scripted barge-in F1"] == 1.0
    for figures in (result.method, result.baselines["energy VAD + timeout"]):
        assert 0.0 <= figures["turn-taking F1"] <= 1.0 and 0.0 <= figures["barge-in F1"] <= 1.0
    assert result.method["shift threshold"] in duplex_check.THRESHOLDS
    assert all(math.isfinite(loss) for _, loss in result.curves["DuplexStateModel"])
