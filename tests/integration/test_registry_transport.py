"""The transport against a real Distribution registry (with a password): an upload session
ends with its PUT (why an upload PUT is never replayed), and a registry on this machine is
never reached through the environment's proxy."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import httpx
import pytest

from cicd.registry import Credentials, RegistryClient, content_digest
from cicd.shell import Runner
from tests.support.project import Registry
from tests.support.proxy import contacted, every_proxy

RECORD = b'{"history": ["transport"]}'


def test_the_registry_closes_an_upload_session_with_its_put(registry: Registry):
    """A replayed PUT meets 404 BLOB_UPLOAD_UNKNOWN: the answer the suite once took for a
    permission problem. Hence: never replay, look the blob up, or start a new session."""
    auth = (registry.user, registry.password)
    base = f"http://{registry.address}"
    with httpx.Client(auth=auth, trust_env=False) as http:
        started = http.post(f"{base}/v2/transport-raw/blobs/uploads/")
        assert started.status_code == 202
        url = httpx.URL(base).join(started.headers["Location"])
        url = url.copy_merge_params({"digest": content_digest(RECORD)})
        assert http.put(url, content=RECORD).status_code == 201
        replay = http.put(url, content=RECORD)
    assert replay.status_code == 404 and "BLOB_UPLOAD_UNKNOWN" in replay.text


@pytest.fixture
def proxy(monkeypatch) -> Iterator[socket.socket]:
    yield from every_proxy(monkeypatch)


def test_the_local_registry_is_spoken_to_directly_whatever_the_proxy(
    registry: Registry, proxy: socket.socket
):
    runner = Runner(out=io.StringIO())
    client = RegistryClient(
        registry.address, Credentials(registry.user, registry.password), runner=runner, timeout=10
    )
    client.ping()
    digest = client.upload_blob("transport-direct", RECORD)
    assert client.blob("transport-direct", digest) == RECORD
    assert client.tags("transport-none") == []
    assert not contacted(proxy), "the Basic credential went to the proxy"
