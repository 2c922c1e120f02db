"""Transport limits against misbehaving peers (in-process fakes): no proxy for a registry on
this machine, tag pages that loop or never end, an upload PUT whose answer is lost, a manifest
by digest without a digest header, and one deadline for the whole call (token included)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cicd import registry as registry_module
from cicd.errors import SuiteError
from cicd.http import Http
from cicd.retry import RetryPolicy
from cicd.shell import Runner
from tests.support.proxy import contacted, every_proxy
from tests.unit.test_http_faults import (
    BASIC,
    MANIFEST,
    Action,
    _challenge,
    _serve,
    answer,
    client,
    one_line,
)

registry = pytest.fixture(_serve)
TAGS = "/v2/org/app/tags/list"
UPLOADS = "/v2/org/app/blobs/uploads/"


def slow_answer(seconds: float, body: bytes) -> Action:
    def reply(handler) -> None:
        time.sleep(seconds)
        answer(200, body)(handler)

    return reply


def hang_up(handler) -> None:
    """Read the request, answer nothing: the answer is lost (a proxy's idle cut, a reset)."""
    handler.close_connection = True


# -- proxies --------------------------------------------------------------------------------


@pytest.fixture
def proxy(monkeypatch) -> Iterator[socket.socket]:
    yield from every_proxy(monkeypatch)


def test_a_registry_on_this_machine_is_never_reached_through_a_proxy(registry, proxy):
    # Through the proxy (which never answers), it would fail: the assertions say why.
    with contextlib.suppress(SuiteError):
        client(registry, io.StringIO(), timeout=3).manifest("org/app", "abc")
    assert not contacted(proxy), "the Basic credential went to the proxy"
    assert registry.requests and registry.requests[0]["headers"]["authorization"] == BASIC


# -- tag pages ------------------------------------------------------------------------------


def tags_page(tags: list[str], next_last: str | None) -> Action:
    link = {"Link": f'<{TAGS}?n=1000&last={next_last}>; rel="next"'} if next_last else {}
    return answer(200, json.dumps({"name": "org/app", "tags": tags}).encode(), link)


def test_a_tag_page_that_names_itself_as_next_stops_with_one_line(registry):
    registry.script[TAGS] = [tags_page(["a"], "a")] * 30  # then 404: today's loop ends there
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).tags("org/app")
    assert "already read" in one_line(error)
    assert registry.hits(TAGS) == 2


def test_tag_pages_stop_at_the_page_cap(registry, monkeypatch):
    monkeypatch.setattr(registry_module, "MAX_PAGES", 5, raising=False)
    registry.script[TAGS] = [tags_page([f"t{i}"], f"t{i}") for i in range(30)]
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).tags("org/app")
    assert "over 5 pages" in one_line(error)
    assert registry.hits(TAGS) == 5


# -- uploads --------------------------------------------------------------------------------

CONTENT = b'{"history": []}'
DIGEST = "sha256:" + hashlib.sha256(CONTENT).hexdigest()
BLOB = f"/v2/org/app/blobs/{DIGEST}"


def upload_session(number: int) -> Action:
    return answer(202, b"", {"Location": f"/upload/{number}"})


def test_an_upload_put_whose_answer_is_lost_is_never_replayed(registry):
    registry.script[UPLOADS] = [upload_session(1), upload_session(2)]
    registry.script["/upload/1"] = [hang_up]  # then 404: the session is closed
    registry.script["/upload/2"] = [answer(201)]
    out = io.StringIO()
    assert client(registry, out).upload_blob("org/app", CONTENT) == DIGEST
    assert registry.hits("/upload/1") == 1, "the closed session's PUT was replayed"
    assert f"retry 1/3 of upload of {DIGEST} to org/app" in out.getvalue()
    assert "/upload/1" not in out.getvalue(), "an upload's URL (its state) is not shown"
    assert registry.hits("/upload/2") == 1 and registry.hits(UPLOADS) == 2
    assert all(r["body"] == CONTENT for r in registry.requests if r["path"].startswith("/upload/"))


def test_an_upload_whose_lost_answer_was_a_success_is_not_made_again(registry):
    registry.script[UPLOADS] = [upload_session(1)]
    registry.script["/upload/1"] = [hang_up]
    registry.routes[BLOB] = answer(200, CONTENT)  # it was stored: only the answer was lost
    assert client(registry, io.StringIO()).upload_blob("org/app", CONTENT) == DIGEST
    assert registry.hits("/upload/1") == 1 and registry.hits(UPLOADS) == 1


# -- digests --------------------------------------------------------------------------------


def test_a_manifest_asked_by_digest_is_checked_without_a_digest_header(registry):
    asked = "sha256:" + "0" * 64
    registry.script[f"/v2/org/app/manifests/{asked}"] = [answer(200, MANIFEST)]
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).manifest("org/app", asked)
    assert "does not match" in one_line(error) and asked in str(error.value)
    right = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    registry.script[f"/v2/org/app/manifests/{right}"] = [answer(200, MANIFEST)]
    manifest = client(registry, io.StringIO()).manifest("org/app", right)
    assert manifest is not None and manifest.digest == right


# -- deadlines ------------------------------------------------------------------------------


def test_the_deadline_covers_the_token_round_trip(registry):
    """Token and retried request each take 1.5 s: alone, each is within a 2 s deadline;
    together they are not, and the call gives up once (no third request)."""
    manifest = "/v2/org/app/manifests/abc"
    registry.script[manifest] = [_challenge(f"{registry.url}/token"), slow_answer(1.5, MANIFEST)]
    registry.script["/token"] = [slow_answer(1.5, json.dumps({"token": "T0KEN"}).encode())]
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO(), timeout=2).manifest("org/app", "abc")
    assert "2 s deadline" in one_line(error)
    assert registry.hits("/token") == 1 and registry.hits(manifest) == 2


def headers_then_silence(after: float) -> Action:
    """Headers after ``after`` seconds, then a promised body that never comes."""

    def reply(handler) -> None:
        time.sleep(after)
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.flush()
        time.sleep(10)

    return reply


def test_the_deadline_covers_the_reads_of_the_body(registry):
    registry.script["/v2/org/app/manifests/abc"] = [headers_then_silence(1.8)] * 3
    started = time.monotonic()
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO(), timeout=2).manifest("org/app", "abc")
    # Today each read may wait a whole deadline: gave up after about 3.8 s.
    assert time.monotonic() - started < 3.2
    assert "2 s deadline" in one_line(error)


def test_an_upload_never_confirmed_is_one_line_after_the_policys_sessions(registry):
    registry.script[UPLOADS] = [upload_session(n) for n in range(1, 5)]
    for n in range(1, 5):
        registry.script[f"/upload/{n}"] = [hang_up]
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).upload_blob("org/app", CONTENT)
    assert "did not confirm the upload" in one_line(error)
    assert registry.hits(UPLOADS) == 4  # the policy's 4 attempts: 4 sessions, 1 PUT each
    assert all(registry.hits(f"/upload/{n}") == 1 for n in range(1, 5))


# -- a deadline that holds while the headers trickle in ------------------------------------

TRICKLE_EVERY = 0.3  # seconds between two header bytes
TRICKLE_MAX = 40  # bytes: then the server gives up (12 s), so a broken client still ends


class Trickler:
    """A raw HTTP/1.1 server on 127.0.0.1: on each connection it answers ``fast`` requests
    whole (keep-alive), then sends the next request ``HTTP/1.1 200 OK`` and one header byte
    every 0.3 s, counting the bytes it sent until the client cut the connection."""

    def __init__(self, fast: int = 0):
        self.fast = fast
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.trickled = 0  # header bytes sent before the client closed (or TRICKLE_MAX)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/v2/"

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                self.connections += 1
                with connection:
                    self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        stream = connection.makefile("rb")
        for n in range(self.fast + 1):
            while stream.readline() not in (b"\r\n", b""):  # the request's head (no body)
                pass
            if n < self.fast:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        connection.sendall(b"HTTP/1.1 200 OK\r\n")
        with contextlib.suppress(OSError):
            while self.trickled < TRICKLE_MAX:
                connection.sendall(b"X")  # fails once the client has shut the connection
                self.trickled += 1
                time.sleep(TRICKLE_EVERY)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def trickler() -> Iterator[Callable[[int], Trickler]]:
    made: list[Trickler] = []

    def make(fast: int = 0) -> Trickler:
        made.append(Trickler(fast))
        return made[-1]

    yield make
    for server in made:
        server.close()


def trickled_within(deadline: float) -> int:
    """The most header bytes the server can send before a deadline that holds cuts the call:
    one per 0.3 s, plus the one a send makes after the cut before it fails, plus one for the
    scheduling of two threads on a loaded machine."""
    return int(deadline / TRICKLE_EVERY) + 2


@pytest.mark.parametrize("reused", [False, True], ids=["new connection", "keep-alive"])
def test_the_deadline_holds_while_the_headers_trickle_in(trickler, reused):
    """Counted, not timed: httpx's read timeout is per read, so before, each byte reset it and
    the call went on until the server gave up (40 bytes). A reused keep-alive connection gives
    no connect event: its socket is found in the pool."""
    server = trickler(1 if reused else 0)
    http = Http(Runner(out=io.StringIO()), "trickler", timeout=2, policy=RetryPolicy(attempts=4))
    try:
        if reused:
            assert http.send("GET", server.url).body == b"{}"
        with pytest.raises(SuiteError) as error:
            http.send("GET", server.url)
    finally:
        http.close()
    assert "2 s deadline" in one_line(error)
    assert server.connections == 1  # one attempt; reused: the keep-alive connection
    assert server.trickled <= trickled_within(2), server.trickled
