"""A recording proxy for the transport tests: a listening socket named as every proxy."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
)


def every_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listening socket that every proxy variable names (and no NO_PROXY): it records, by
    accepting, whoever connects. For a fixture: ``yield from every_proxy(monkeypatch)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    address = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, address)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield listener
    listener.close()


def contacted(listener: socket.socket) -> bool:
    """Did anyone connect to the proxy?"""
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True
