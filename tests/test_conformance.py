"""The conformance suite (paperzoo.core.testing.conformance) over every installed method card."""

import pytest

from paperzoo.core.card import discover_cards
from paperzoo.core.testing import conformance

TRAINED = [card for card in discover_cards().values() if card.task]


@pytest.fixture(params=TRAINED, ids=lambda card: card.key)
def card(request):
    return request.param


def test_forward_backward_and_loss_drops(card):
    task, data = conformance.build_from_config(card.config("tiny"))
    batch = conformance.first_train_batch(data)
    conformance.check_forward_backward(task, batch)
    conformance.check_loss_drops(task, batch)


def test_tiny_config_fits_and_round_trips_through_the_cli(card, tmp_path):
    conformance.fit_tiny_and_round_trip(card, tmp_path)
