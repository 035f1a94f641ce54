"""pytest plugin of paperzoo (registered through the `pytest11` entry point, so every package's tests get it).

- Network access is blocked in every test: a silent download fallback (DATA.md) fails loudly instead. Loopback
  stays open for DDP's gloo rendezvous.
- Markers: `slow` (claim checks in quick mode, wheel builds), `gpu` (skipped without CUDA) and `peers` (equality
  with peer libraries installed from the `peers` dependency group).
- Each pytest-xdist worker runs torch on one intra-op thread: `make test` starts one worker per core, and a worker
  spinning a second OpenMP thread made small-model steps up to 18x slower on the 2-core machine.
"""

import os
import socket
from typing import Any

import pytest

LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0")


class NetworkBlockedError(RuntimeError):
    """A test tried to reach the network."""


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = str(address[0]) if isinstance(address, tuple) and address else ""
    return host.startswith(LOOPBACK)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: claim checks in quick mode and other long tests (make test-slow)")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")
    config.addinivalue_line("markers", "peers: compares with a peer library from the `peers` group (make test-peers)")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every socket connection except to loopback addresses."""
    connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            raise NetworkBlockedError(f"network access to {address!r} is blocked in paperzoo tests")
        return connect(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback((host,)):
            raise NetworkBlockedError(f"name lookup of {host!r} is blocked in paperzoo tests")
        return real_getaddrinfo(host, *args, **kwargs)

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
