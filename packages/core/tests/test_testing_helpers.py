"""The helpers other packages rely on: network blocking, mutation checks, golden values."""

import socket

import pytest
import torch

from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.core.testing.golden import assert_golden
from paperzoo.core.testing.plugin import NetworkBlockedError


def test_network_is_blocked_but_loopback_is_not():
    with pytest.raises(NetworkBlockedError, match="blocked in paperzoo tests"):
        socket.create_connection(("example.org", 80), timeout=1)
    with pytest.raises(NetworkBlockedError):
        socket.socket().connect(("93.184.216.34", 80))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=1)
    client.close()
    server.close()


def test_check_no_mutation_catches_in_place_changes():
    weights = {"w": torch.ones(3)}

    def pure(state):
        return {k: v * 2 for k, v in state.items()}

    def in_place(state):
        state["w"].mul_(2)
        return state

    assert torch.equal(check_no_mutation(pure, state=weights)["w"], torch.full((3,), 2.0))
    with pytest.raises(AssertionError, match="in_place mutated 'state'"):
        check_no_mutation(in_place, state=weights)


def test_golden_values_detect_a_change(tmp_path, monkeypatch):
    path = tmp_path / "g.json"
    monkeypatch.setenv("PAPERZOO_UPDATE_GOLDEN", "1")
    assert_golden(path, torch.tensor([1.0, 2.0]))
    monkeypatch.delenv("PAPERZOO_UPDATE_GOLDEN")
    assert_golden(path, torch.tensor([1.0, 2.0 + 1e-7]))
    with pytest.raises(AssertionError, match="g.json"):
        assert_golden(path, torch.tensor([1.0, 2.1]))
