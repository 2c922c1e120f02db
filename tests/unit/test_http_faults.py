"""The registry client under faults: small scripted servers on 127.0.0.1 (port 0), one per origin.

Each server answers from a script (first answers for a path), else serves one tiny image,
and records every request with its headers: the "other origin" servers prove that a
credential never reached them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from cicd.errors import SuiteError
from cicd.http import Http
from cicd.registry import Credentials, RegistryClient, realm_problem
from cicd.retry import RetryPolicy
from cicd.shell import Runner
from tests.support.fake_http import send
from tests.support.project import refused_port

USER, PASSWORD = "ci-bot", "pw-SENTINEL-7"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CONFIG = json.dumps({"config": {"Labels": {"model.digest": "sha256:abc"}}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "config": {"digest": CONFIG_DIGEST}}).encode()
MANIFEST_PATH = "/v2/org/app/manifests/abc"
BLOB_PATH = f"/v2/org/app/blobs/{CONFIG_DIGEST}"
FAST = RetryPolicy(attempts=4, wait_initial=0.01, wait_max=5)

Action = Callable[[BaseHTTPRequestHandler], None]


def answer(status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> Action:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        send(handler, status, body, headers)

    return reply


def cut_mid_body(body: bytes) -> Action:
    """Promise the whole body, send half of it, then reset the connection."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        # SO_LINGER 0: close with an RST, as a crashing proxy does.
        handler.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        handler.close_connection = True

    return send


def slow(seconds: float) -> Action:
    def send(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        answer(200, MANIFEST)(handler)

    return send


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.script: dict[str, list[Action]] = {}
        self.routes: dict[str, Action] = {
            "/v2/": answer(200),
            MANIFEST_PATH: answer(200, MANIFEST),
            BLOB_PATH: answer(200, CONFIG),
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r["path"].split("?")[0] == path)


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        path = self.path.split("?")[0]
        queued = self.server.script.get(path) or self.server.script.get("*")
        action = queued.pop(0) if queued else self.server.routes.get(path, answer(404))
        action(self)

    do_GET = do_PUT = do_POST = do_PATCH = _handle

    def log_message(self, *args: object) -> None:
        pass


def _serve() -> Iterator[Scripted]:
    server = Scripted()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


registry = pytest.fixture(_serve)
other = pytest.fixture(_serve)  # another origin: must never receive a credential


def client(
    server: Scripted, out: io.StringIO, waits: list[float] | None = None, **options: Any
) -> RegistryClient:
    runner = Runner(out=out) if waits is None else Runner(out=out, sleep=waits.append)
    options.setdefault("policy", FAST)
    return RegistryClient(server.address, Credentials(USER, PASSWORD), runner=runner, **options)


def one_line(error: pytest.ExceptionInfo[SuiteError]) -> str:
    text = str(error.value)
    assert "\n" not in text and PASSWORD not in text
    return text


# -- retries ---------------------------------------------------------------------------------


def test_502_then_ok_is_retried_and_each_retry_is_shown(registry: Scripted):
    registry.script[MANIFEST_PATH] = [answer(502), answer(502)]
    out, waits = io.StringIO(), []
    manifest = client(registry, out, waits).manifest("org/app", "abc")
    assert manifest is not None and manifest.config_digest == CONFIG_DIGEST
    assert registry.hits(MANIFEST_PATH) == 3 and len(waits) == 2
    shown = out.getvalue()
    assert f"retry 1/3 of GET {registry.url}{MANIFEST_PATH}" in shown and "(HTTP 502)" in shown
    assert "retry 2/3" in shown and "retry 3/3" not in shown


def test_429_waits_as_long_as_retry_after_says(registry: Scripted):
    registry.script[MANIFEST_PATH] = [answer(429, headers={"Retry-After": "2"})]
    out, waits = io.StringIO(), []
    assert client(registry, out, waits).manifest("org/app", "abc") is not None
    assert waits == [2.0]  # not the policy's 0.01 s
    assert "in 2.0 s (HTTP 429)" in out.getvalue()


def test_retry_after_longer_than_the_longest_wait_stops_with_one_line(registry: Scripted):
    registry.script[MANIFEST_PATH] = [answer(429, headers={"Retry-After": "3600"})]
    waits: list[float] = []
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO(), waits).manifest("org/app", "abc")
    assert "after 3600 s" in one_line(error) and "run again later" in str(error.value)
    assert registry.hits(MANIFEST_PATH) == 1 and waits == []


def test_persistent_5xx_gives_up_after_the_attempts_with_one_line(registry: Scripted):
    registry.script[MANIFEST_PATH] = [answer(503)] * 10
    waits: list[float] = []
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO(), waits).manifest("org/app", "abc")
    assert "failed 4 times (last: HTTP 503)" in one_line(error)
    assert registry.hits(MANIFEST_PATH) == 4 and len(waits) == 3


def test_a_policy_of_one_attempt_never_retries_nor_says_it_would(registry: Scripted):
    registry.script[MANIFEST_PATH] = [answer(503)] * 2
    out, waits = io.StringIO(), []
    with pytest.raises(SuiteError) as error:
        client(registry, out, waits, policy=RetryPolicy(attempts=1)).manifest("org/app", "abc")
    assert "failed (HTTP 503)" in one_line(error)
    assert registry.hits(MANIFEST_PATH) == 1 and waits == [] and "retr" not in out.getvalue()


def test_a_post_is_retried_on_503_and_not_on_502(registry: Scripted):
    waits: list[float] = []
    http = Http(Runner(out=io.StringIO(), sleep=waits.append), "registry x", policy=FAST)
    registry.script["/upload"] = [answer(503), answer(202), answer(502)]
    assert http.send("POST", f"{registry.url}/upload").status == 202
    assert registry.hits("/upload") == 2 and len(waits) == 1
    with pytest.raises(SuiteError, match="answered HTTP 502 after it was sent; not retried"):
        http.send("POST", f"{registry.url}/upload")
    assert registry.hits("/upload") == 3 and len(waits) == 1
    http.close()


def test_a_reset_mid_body_is_retried(registry: Scripted):
    registry.script[BLOB_PATH] = [cut_mid_body(CONFIG)]
    out = io.StringIO()
    registry_client = client(registry, out)
    manifest = registry_client.manifest("org/app", "abc")
    assert manifest is not None
    assert registry_client.labels("org/app", manifest) == {"model.digest": "sha256:abc"}
    assert registry.hits(BLOB_PATH) == 2 and "connection broken" in out.getvalue()


def test_a_body_always_cut_short_is_one_line(registry: Scripted):
    registry.script[MANIFEST_PATH] = [cut_mid_body(MANIFEST)] * 10
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).manifest("org/app", "abc")
    assert "failed 4 times (last: connection broken" in one_line(error)


@pytest.mark.parametrize(
    "status, outcome",
    [
        (401, "refused user 'ci-bot': check CONTAINER_REGISTRY_USERNAME and"),
        (403, "answered HTTP 403 for org/app"),
        (404, None),  # no such tag: a fact, not an error
    ],
)
def test_no_retry_on_401_403_404(registry: Scripted, status: int, outcome: str | None):
    registry.script[MANIFEST_PATH] = [answer(status)] * 5
    out = io.StringIO()
    if outcome is None:
        assert client(registry, out).manifest("org/app", "abc") is None
    else:
        with pytest.raises(SuiteError) as error:
            client(registry, out).manifest("org/app", "abc")
        assert outcome in one_line(error)
    assert registry.hits(MANIFEST_PATH) == 1 and "retry" not in out.getvalue()


def test_the_deadline_bounds_a_call_that_never_answers(registry: Scripted):
    # Counted, not timed: one attempt, cut at the deadline, and no other after it.
    registry.script[MANIFEST_PATH] = [slow(3)] * 5
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO(), timeout=1).manifest("org/app", "abc")
    assert registry.hits(MANIFEST_PATH) == 1
    assert "1 s deadline" in one_line(error) and "network_timeout" in str(error.value)


def test_a_refused_connection_is_not_retried_and_says_what_to_do():
    out = io.StringIO()
    with refused_port() as port, pytest.raises(SuiteError) as error:  # held: nobody listens
        RegistryClient(f"127.0.0.1:{port}", runner=Runner(out=out), policy=FAST).ping()
    assert "not reachable" in one_line(error) and "invoke registry" in str(error.value)
    assert "retry" not in out.getvalue()


def test_the_dry_run_shows_the_call_and_that_retries_apply(registry: Scripted):
    out = io.StringIO()
    runner = Runner(dry=True, out=out)
    assert RegistryClient(registry.address, runner=runner).manifest("org/app", "abc") is None
    assert f"[dry-run] $ curl --fail --request GET {registry.url}{MANIFEST_PATH}" in out.getvalue()
    assert "retried on 429, 5xx, resets and timeouts" in out.getvalue()
    assert registry.requests == []


# -- malformed answers ----------------------------------------------------------------------


def test_html_with_200_is_one_line_not_a_traceback(registry: Scripted):
    registry.script[MANIFEST_PATH] = [
        answer(200, b"<html>Sign in to the proxy</html>", {"Content-Type": "text/html"})
    ]
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).manifest("org/app", "abc")
    assert "text/html instead of JSON" in one_line(error)
    assert registry.hits(MANIFEST_PATH) == 1


def test_a_manifest_that_does_not_match_its_digest_is_refused(registry: Scripted):
    registry.script[MANIFEST_PATH] = [
        answer(200, MANIFEST, {"Docker-Content-Digest": "sha256:" + "0" * 64})
    ]
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).manifest("org/app", "abc")
    assert "does not match its digest" in one_line(error)


# -- redirects ------------------------------------------------------------------------------


def test_a_redirect_to_another_origin_never_carries_the_credential(
    registry: Scripted, other: Scripted
):
    registry.script[BLOB_PATH] = [answer(307, b"", {"Location": f"{other.url}{BLOB_PATH}"})]
    other.routes[BLOB_PATH] = answer(200, CONFIG)
    registry_client = client(registry, io.StringIO())
    manifest = registry_client.manifest("org/app", "abc")
    assert manifest is not None
    assert registry_client.labels("org/app", manifest) == {"model.digest": "sha256:abc"}
    assert registry.requests[0]["headers"]["authorization"] == BASIC  # its own origin: yes
    assert [r["path"] for r in other.requests] == [BLOB_PATH]
    received = json.dumps(other.requests[0]["headers"])
    assert "authorization" not in other.requests[0]["headers"]
    assert PASSWORD not in received and BASIC.split()[1] not in received


def test_a_redirect_to_another_port_of_the_same_host_is_another_origin(
    registry: Scripted, other: Scripted
):
    registry.script[MANIFEST_PATH] = [answer(308, b"", {"Location": f"{other.url}/m"})]
    other.routes["/m"] = answer(307, b"", {"Location": f"{registry.url}{MANIFEST_PATH}"})
    assert client(registry, io.StringIO()).manifest("org/app", "abc") is not None
    assert "authorization" not in other.requests[0]["headers"]
    # Back on the first origin after a foreign hop: still nothing (the hop chose the path).
    assert "authorization" not in registry.requests[-1]["headers"]


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[Http, list]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = Http(Runner(out=io.StringIO()), "registry example", policy=FAST)
    mocked = httpx.Client(transport=httpx.MockTransport(record))
    http._clients = {False: mocked, True: mocked}  # through a proxy or direct: the mock
    return http, seen


def test_https_to_http_redirect_is_refused():
    http, seen = _mock(
        lambda r: httpx.Response(307, headers={"Location": "http://registry.example/x"})
    )
    with pytest.raises(SuiteError) as error:
        http.send("GET", "https://registry.example/v2/", credentials={"Authorization": BASIC})
    assert "from https to plain http" in one_line(error)
    assert [str(r.url) for r in seen] == ["https://registry.example/v2/"]


def test_a_redirect_to_a_file_url_is_refused():
    http, seen = _mock(lambda r: httpx.Response(302, headers={"Location": "file:///etc/passwd"}))
    with pytest.raises(SuiteError) as error:
        http.send("GET", "https://registry.example/v2/")
    assert "to a file: URL: refused" in one_line(error) and len(seen) == 1


# -- token realms ---------------------------------------------------------------------------


def _challenge(realm: str | None) -> Action:
    value = "Bearer " + (f'realm="{realm}",' if realm else "") + 'service="fake"'
    return answer(401, b"{}", {"WWW-Authenticate": value})


@pytest.mark.parametrize(
    "realm",
    ["{other}/token", "http://auth.example.invalid/token", "file://{secret_file}#"],
    ids=["another-local-origin-over-http", "http-non-loopback", "file"],
)
def test_an_unsafe_realm_never_gets_the_credential(
    registry: Scripted, other: Scripted, tmp_path, realm: str
):
    secret_file = tmp_path / "token.json"
    secret_file.write_text(json.dumps({"access_token": "LOCAL-FILE-TOKEN"}))
    realm = realm.format(other=other.url, secret_file=secret_file)
    registry.script[MANIFEST_PATH] = [_challenge(realm)]
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).manifest("org/app", "abc")
    assert "refused" in one_line(error) and realm in str(error.value)
    assert other.requests == []
    seen = json.dumps([r["headers"] for r in registry.requests])
    assert "LOCAL-FILE-TOKEN" not in seen and registry.hits(MANIFEST_PATH) == 1


def test_a_same_origin_http_realm_of_a_local_registry_works(registry: Scripted):
    registry.script[MANIFEST_PATH] = [_challenge(f"{registry.url}/token")]
    registry.routes["/token"] = answer(200, json.dumps({"token": "T0KEN-abc"}).encode())
    out = io.StringIO()
    assert client(registry, out).manifest("org/app", "abc") is not None
    token_request = next(r for r in registry.requests if r["path"].startswith("/token"))
    assert token_request["headers"]["authorization"] == BASIC
    assert "scope=repository%3Aorg%2Fapp%3Apull" in token_request["path"]
    assert registry.requests[-1]["headers"]["authorization"] == "Bearer T0KEN-abc"


def test_realm_rules():
    local, remote = "http://127.0.0.1:5000", "https://ghcr.io"
    assert realm_problem(remote, "https://auth.docker.io/token") is None  # https: any host
    assert realm_problem(local, "http://127.0.0.1:5000/token") is None
    assert realm_problem(local, "http://127.0.0.1:5001/token")  # another origin over http
    assert realm_problem(remote, "http://ghcr.io/token")  # down to http
    assert realm_problem(remote, "file:///etc/passwd")
    assert realm_problem(remote, "/token")


def test_a_challenge_without_realm_is_one_line(registry: Scripted):
    registry.script[MANIFEST_PATH] = [_challenge(None)]
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).manifest("org/app", "abc")
    assert "names no realm" in one_line(error)


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"<html>login</html>", "instead of JSON"), (b'{"expires_in": 60}', "without a token")],
    ids=["html", "no-token"],
)
def test_a_bad_token_answer_is_one_line(registry: Scripted, body: bytes, expected: str):
    registry.script[MANIFEST_PATH] = [_challenge(f"{registry.url}/token")]
    registry.routes["/token"] = answer(200, body)
    with pytest.raises(SuiteError) as error:
        client(registry, io.StringIO()).manifest("org/app", "abc")
    assert expected in one_line(error)


def test_only_this_machine_is_spoken_to_in_plain_http():
    from cicd.registry import scheme

    assert scheme("127.0.0.1:5050") == "http" and scheme("localhost:5000") == "http"
    assert scheme("[::1]:5000") == "http" and scheme("[::1]") == "http"
    assert scheme("127.evil.example") == "https" and scheme("127.evil.example:5000") == "https"
    assert scheme("ghcr.io") == "https" and scheme("10.0.0.1:5000") == "https"
