"""Slow tier: every card's claim check in quick mode runs, and yields a complete, serialisable result."""

import pytest

from paperzoo.core.card import discover_cards, load_object
from paperzoo.core.checks import ClaimResult, run_check

CHECKED = [card for card in discover_cards().values() if card.check]


@pytest.mark.slow
@pytest.mark.parametrize("card", CHECKED, ids=lambda card: card.key)
def test_quick_claim_check(card):
    result = run_check(load_object(card.check), quick=True)
    assert result.key == card.key and result.quick
    assert result.criteria and result.method and result.baselines
    assert ClaimResult.from_json(result.to_json()).passed == result.passed
