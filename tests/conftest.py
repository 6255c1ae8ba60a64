"""Shared test configuration.

Every test runs with the network cut off (loopback stays open for DDP's gloo rendezvous), so a
code path that tries to download weights or data fails loudly instead of passing by luck. Tests
marked ``gpu`` are skipped when CUDA is not available.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _is_loopback(address) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    else:  # AF_UNIX paths and the like
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``gpu`` when CUDA is not available (the marker's promise)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="marked gpu: needs CUDA, and torch.cuda.is_available() is False")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_network():
    # a private MonkeyPatch, so tests' own `monkeypatch` fixture keeps its teardown order
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        if not _is_loopback(address):
            raise RuntimeError(f"tests must not reach the network (tried {address!r})")
        return real_connect(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect)
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
