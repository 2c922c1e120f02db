"""The registry client against a small fake registry speaking the real HTTP API."""

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from cicd.errors import SuiteError
from cicd.registry import Credentials, RegistryClient, scheme
from tests.support.fake_http import send
from tests.support.project import refused_port

CONFIG = json.dumps({"config": {"Labels": {"model.digest": "sha256:abc"}}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "config": {"digest": CONFIG_DIGEST}}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
TOKEN = "tok-123"


class FakeRegistry(BaseHTTPRequestHandler):
    """Bearer-token auth like GHCR: /token with basic auth gives a token."""

    requests: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(b"bot:right").decode()
            if self.headers.get("Authorization") != expected:
                return self._send(401, b"{}")
            return self._send(200, json.dumps({"token": TOKEN}).encode())
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"http://127.0.0.1:{self.server.server_port}/token"
            challenge = f'Bearer realm="{realm}",service="fake"'
            return self._send(401, b"{}", {"WWW-Authenticate": challenge})
        if self.path == "/v2/org/app/manifests/abc":
            return self._send(200, MANIFEST, {"Docker-Content-Digest": MANIFEST_DIGEST})
        if self.path == f"/v2/org/app/blobs/{CONFIG_DIGEST}":
            return self._send(200, CONFIG)
        return self._send(404, b"{}")

    def _send(self, status, body, headers=None):
        send(self, status, body, headers)


@pytest.fixture
def registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeRegistry.requests = []
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()


def test_manifest_and_labels_through_the_token_flow(registry):
    client = RegistryClient(registry, Credentials("bot", "right"))
    manifest = client.manifest("org/app", "abc")
    assert manifest.digest == MANIFEST_DIGEST and manifest.config_digest == CONFIG_DIGEST
    assert client.labels("org/app", manifest) == {"model.digest": "sha256:abc"}
    assert all("right" not in path for path, _ in FakeRegistry.requests)


def test_missing_tag_is_none(registry):
    assert RegistryClient(registry, Credentials("bot", "right")).manifest("org/app", "nope") is None


def test_wrong_password_is_a_clear_error(registry):
    with pytest.raises(SuiteError, match="refused user 'bot'"):
        RegistryClient(registry, Credentials("bot", "wrong")).manifest("org/app", "abc")


def test_registry_down_is_a_clear_error():
    with refused_port() as port, pytest.raises(SuiteError, match="not reachable"):
        RegistryClient(f"127.0.0.1:{port}").ping()  # held, never listening: nobody answers


def test_plain_http_only_on_this_machine():
    assert scheme("127.0.0.1:5050") == "http" and scheme("localhost:5000") == "http"
    assert scheme("ghcr.io") == "https" and scheme("registry.example.com:5000") == "https"


class Recorder(BaseHTTPRequestHandler):
    """A registry with basic auth whose upload Location is ``target`` (itself or storage)."""

    seen: ClassVar[list] = []
    target: ClassVar[str] = ""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.seen.append(("POST", self.path, self.headers.get("Authorization")))
        where = self.target or f"http://127.0.0.1:{self.server.server_port}"
        send(self, 202, b"", {"Location": f"{where}/v2/app/blobs/uploads/u1?_state=s"})

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.seen.append(("PUT", self.path, self.headers.get("Authorization"), body))
        send(self, 201, b"")


@pytest.fixture
def servers():
    made = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        made.append(server)
    Recorder.seen = []
    yield [f"127.0.0.1:{server.server_port}" for server in made]
    for server in made:
        server.shutdown()


def test_a_blob_upload_posts_then_puts_with_its_digest(servers):
    Recorder.target = ""
    client = RegistryClient(servers[0], Credentials("bot", "right"))
    digest = client.upload_blob("app", b'{"entries": []}')
    assert digest == "sha256:" + hashlib.sha256(b'{"entries": []}').hexdigest()
    (post, put) = Recorder.seen
    assert post[:2] == ("POST", "/v2/app/blobs/uploads/") and post[2].startswith("Basic ")
    assert put[1].startswith("/v2/app/blobs/uploads/u1?_state=s&digest=sha256%3A")
    assert put[2].startswith("Basic ") and put[3] == b'{"entries": []}'


def test_an_upload_sent_to_another_host_gets_no_credentials(servers):
    Recorder.target = f"http://{servers[1]}"
    client = RegistryClient(servers[0], Credentials("bot", "right"))
    client.upload_blob("app", b"{}")
    post, put = Recorder.seen
    assert post[2] and put[2] is None
