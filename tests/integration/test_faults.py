"""Publishing against a real Distribution registry: ``latest`` and faults on the way.

Two tiny images (``python:3.11-slim`` plus labels) stand for two commits: A, committed first,
and B, its child (real commit objects, in a repository of their own: which is later is git's
answer, from the commits that signed provenances name). Their SHA tags are pushed with the
docker client; what the suite does with ``latest`` is then read back through the registry's
API and its access log. Then a
fault-injecting proxy in front of the registry answers 502, 429, resets mid-body, HTML,
redirects to another origin (which records what it receives) and unsafe token realms.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import http.client
import io
import json
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cicd import attestation_store, image, provenance, signing
from cicd.bento import ModelInfo
from cicd.ci import Revision
from cicd.context import Run
from cicd.errors import SuiteError
from cicd.image import Target
from cicd.labels import CREATED_LABEL, REVISION_LABEL
from cicd.publish import already_published
from cicd.registry import OCI_MANIFEST, Manifest, RegistryClient, content_digest
from cicd.settings import Settings, load
from cicd.shell import Runner
from tests.support.project import ROOT, SIGNING_KEY, Registry, docker_client_path
from tests.unit.test_http_faults import answer, cut_mid_body

pytestmark = [pytest.mark.slow, pytest.mark.docker]

MODEL = ModelInfo("celestial_bodies_classifier_model:faults", "sha256:" + "ab" * 32)
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree: every repository has it


def commit_object(message: str, when: dt.datetime, parent: str = "") -> tuple[str, bytes]:
    """A git commit object of the empty tree, and its SHA: the same bytes, so the same SHA,
    on every machine (no clock, no identity of the one running the tests)."""
    seconds = int(when.timestamp())
    person = f"Tests <tests@example.com> {seconds} +0000"
    parents = f"parent {parent}\n" if parent else ""
    body = f"tree {EMPTY_TREE}\n{parents}author {person}\ncommitter {person}\n\n{message}\n"
    raw = body.encode()
    return hashlib.sha1(b"commit %d\0" % len(raw) + raw).hexdigest(), raw


JANUARY, FEBRUARY = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
_OLDER = commit_object("A", JANUARY)
_NEWER = commit_object("B", FEBRUARY, parent=_OLDER[0])
OLDER = Revision(_OLDER[0], timestamp=int(JANUARY.timestamp()))
NEWER = Revision(_NEWER[0], timestamp=int(FEBRUARY.timestamp()))


@functools.cache
def commits() -> Path:
    """A repository holding A and its child B (nothing else): the settings' root, where
    "is this commit later than that one" is asked."""
    root = Path(tempfile.mkdtemp(prefix="faults-commits-"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for _, raw in (_OLDER, _NEWER):
        subprocess.run(
            ["git", "-C", str(root), "hash-object", "-t", "commit", "-w", "--stdin"],
            input=raw, check=True, capture_output=True,
        )  # fmt: skip
    return root


def settings(registry: Registry, repository: str) -> Settings:
    """The repository's settings, aimed at the test registry with its credentials, signing
    with the tests' key (so trusting its public half), in the repository of A and B."""
    return dataclasses.replace(
        load(ROOT, {}),
        root=commits(),
        registry=registry.address,
        registry_username=registry.user,
        registry_password=registry.password,
        image_name=repository,
        network_timeout=30.0,
        signing_key=SIGNING_KEY,
    )


def goal(config: Settings, revision: Revision) -> Target:
    return Target(revision, MODEL, config.repository)


def run(config: Settings, out: io.StringIO | None = None) -> Run:
    """The run context of a step with these settings, its output in ``out``."""
    return Run(Runner(out=out or io.StringIO()), config, {})


def build(config: Settings, revision: Revision) -> str:
    """An image of ``revision`` with the labels the suite gives it; returns its ID."""
    labels = image.labels(config, revision, MODEL)
    assert labels[CREATED_LABEL] and labels[REVISION_LABEL] == revision.sha
    lines = [
        "FROM python:3.11-slim",
        "LABEL " + " ".join(f'"{k}"="{v}"' for k, v in labels.items()),
    ]
    reference = goal(config, revision).references[0]
    subprocess.run(
        [docker_client_path(), "build", "--quiet", "--tag", reference, "-"],
        input="\n".join(lines) + "\n", text=True, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    inspect = [docker_client_path(), "image", "inspect", "--format", "{{.Id}}", reference]
    return subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()


def publish_image(step: Run, local: image.Image) -> str:
    """What the publish session does with a smoke-tested image, but for attest: its SHA tag
    pushed, then ``latest`` moved (in the session, after attest). Returns the digest."""
    return image.move_tags(step, local, image.push(step, local))


def push(registry: Registry, *references: str, tag_as: str | None = None) -> None:
    """``docker push`` with a throwaway login (as another job, outside the suite, would)."""
    client = docker_client_path()
    with tempfile.TemporaryDirectory() as config:
        login = [client, "--config", config, "login", registry.address, "--username"]
        subprocess.run(
            [*login, registry.user, "--password-stdin"],
            input=registry.password, text=True, check=True, capture_output=True,
        )  # fmt: skip
        for reference in references:
            target = reference
            if tag_as:
                target = reference.rsplit(":", 1)[0] + f":{tag_as}"
                subprocess.run([client, "tag", reference, target], check=True)
            subprocess.run(
                [client, "--config", config, "push", target], check=True, capture_output=True
            )
        subprocess.run([client, "--config", config, "logout", registry.address], check=False)


def attest(registry: Registry, revision: Revision, digest: str, repository: str) -> None:
    """A signed SBOM and provenance of ``revision``'s image ``digest``, attached as the
    publish session attaches them (the tag scheme of a registry without referrers)."""
    name, client = f"{registry.address}/{repository}", registry.client()
    now = dt.datetime.now(dt.UTC)
    facts = provenance.BuildFacts(
        repository=name, image_digest=digest, commit=revision.sha, source_url="",
        tags=(revision.sha, "latest"), model_tag=MODEL.tag, model_digest=MODEL.digest,
        model_path="model/model.bentomodel",
        base=provenance.BaseImage("python:3.11-slim", "sha256:" + "0" * 64),
        versions={"suite": "tests"}, builder_id="urn:tests", started=now, finished=now,
        files={n: (ROOT / n).read_bytes() for n in ("params.yaml", "dvc.lock")},
    )  # fmt: skip
    bom = {"bomFormat": "CycloneDX", "specVersion": "1.6",
           "components": [{"type": "library", "name": "x", "purl": "pkg:pypi/x@1"}]}  # fmt: skip
    statements = {
        attestation_store.SBOM: provenance.sbom_statement(name, digest, bom),
        attestation_store.PROVENANCE: provenance.provenance_statement(facts),
    }
    subject = client.manifest(repository, digest)
    client.upload_blob(repository, attestation_store.EMPTY_JSON)
    for kind, statement in statements.items():
        body = provenance.dumps(signing.envelope(statement, signing.signer(SIGNING_KEY)))
        layer = client.upload_blob(repository, body)
        raw = attestation_store.artifact_manifest(kind, subject, layer, len(body))
        config = content_digest(attestation_store.EMPTY_JSON)
        manifest = Manifest(content_digest(raw), config, raw, OCI_MANIFEST)
        client.put_manifest(repository, attestation_store.tag_for(digest, kind), manifest)


def log_since(registry: Registry, mark: int) -> list[str]:
    return registry.requests()[mark:]


def test_a_missing_then_stale_latest_is_repaired_without_a_rebuild(registry: Registry):
    config = settings(registry, "faults-repair")
    client = registry.client()
    older, newer = goal(config, OLDER), goal(config, NEWER)
    build(config, OLDER), build(config, NEWER)
    push(registry, newer.references[0])  # a publish whose `latest` step failed
    assert client.manifest("faults-repair", "latest") is None

    out = io.StringIO()
    mark = len(registry.requests())
    digest = already_published(run(config, out), newer)
    assert digest and client.manifest("faults-repair", "latest").digest == digest
    assert "repaired (manifest PUT, no rebuild)" in out.getvalue()
    requests = log_since(registry, mark)
    assert sum('"PUT /v2/faults-repair/manifests/latest' in line for line in requests) == 1
    assert not any("/blobs/uploads/" in line for line in requests), "a layer was pushed"

    mark = len(registry.requests())
    assert already_published(run(config), newer) == digest
    assert not any('"PUT ' in line for line in log_since(registry, mark))  # nothing to repair

    push(registry, older.references[0], tag_as="latest")  # another job moved latest back, by hand
    assert client.manifest("faults-repair", "latest").digest != digest
    out = io.StringIO()
    assert already_published(run(config, out), newer) == digest
    assert client.manifest("faults-repair", "latest").digest == digest
    assert "repaired" in out.getvalue()


def test_latest_never_moves_to_an_older_commit(registry: Registry):
    config = settings(registry, "faults-older")
    client = registry.client()
    older, newer = goal(config, OLDER), goal(config, NEWER)
    older_id = build(config, OLDER)
    build(config, NEWER)
    push(registry, newer.references[0])
    push(registry, newer.references[0], tag_as="latest")
    push(registry, older.references[0])
    latest = client.manifest("faults-older", "latest")
    attest(registry, NEWER, latest.digest, "faults-older")  # B's image, signed: proven later

    mark = len(registry.requests())
    with pytest.raises(SuiteError) as refused:
        already_published(run(config), older)
    message = str(refused.value)
    assert (
        f"holds the signed image of commit {NEWER.sha[:12]}, which descends from this one"
        in message
    )
    assert "not moving it back" in message and "\n" not in message

    # The push path of an older commit stops the same way, after pushing only its SHA tag.
    with pytest.raises(SuiteError, match="not moving it back"):
        publish_image(run(config), older.image(older_id))
    assert client.manifest("faults-older", "latest") == latest
    assert not any(
        "/manifests/latest" in line and '"PUT ' in line for line in log_since(registry, mark)
    )


def test_an_older_publish_landing_after_the_newer_one_is_undone(registry, monkeypatch):
    # The worst interleaving of two publishes at once, made deterministic: the older job read
    # `latest` before the newer job's PUT, so its own PUT lands right after it.
    config = settings(registry, "faults-interleave")
    client = registry.client()
    older, newer = goal(config, OLDER), goal(config, NEWER)
    older_id, newer_id = build(config, OLDER), build(config, NEWER)
    push(registry, older.references[0])
    older_manifest = client.manifest("faults-interleave", OLDER.sha)
    real_put, overtaken = RegistryClient.put_manifest, []

    def put_then_overtaken(self, repository, tag, manifest):
        digest = real_put(self, repository, tag, manifest)
        if tag == "latest" and not overtaken:
            overtaken.append(real_put(self, repository, tag, older_manifest))  # its stale PUT
        return digest

    monkeypatch.setattr(RegistryClient, "put_manifest", put_then_overtaken)
    out = io.StringIO()
    digest = publish_image(run(config, out), newer.image(newer_id))
    monkeypatch.undo()
    assert "moved forward again" in out.getvalue()
    assert client.manifest("faults-interleave", "latest").digest == digest
    assert client.manifest("faults-interleave", NEWER.sha).digest == digest
    attest(registry, NEWER, digest, "faults-interleave")  # its attest step, after the push

    # The older job goes on to its own settle: it sees a newer commit's image and stops.
    with pytest.raises(SuiteError, match="not moving it back"):
        publish_image(run(config), older.image(older_id))
    assert client.manifest("faults-interleave", "latest").digest == digest
    assert client.manifest("faults-interleave", OLDER.sha) == older_manifest


def test_latest_moves_only_after_attest_so_an_older_publish_finds_the_newer_one_signed(
    registry: Registry,
):
    """Two publishes at once, step by step as the sessions run them: B pushes, A (older)
    pushes, attests and moves `latest`, then B attests and moves it; then A again, refused.
    The guard is that a push moves no tag: when push moved `latest` (before this change), A's
    push found B's image there unsigned (proving nothing) and took `latest`, and B's run,
    whose last move was at its push, left it there: the window finding 8 left."""
    repository = "faults-window"
    config = settings(registry, repository)
    client = registry.client()
    older, newer = goal(config, OLDER), goal(config, NEWER)
    older_image = older.image(build(config, OLDER))
    newer_image = newer.image(build(config, NEWER))

    newer_pushed = image.push(run(config), newer_image)  # B's push step
    assert client.manifest(repository, "latest") is None  # the push moves no tag
    older_pushed = image.push(run(config), older_image)  # A's push step
    assert client.manifest(repository, "latest") is None
    assert older_pushed is not None and newer_pushed is not None
    attest(registry, OLDER, older_pushed.digest, repository)  # A's attest step...
    image.move_tags(run(config), older_image, older_pushed)  # ...and its `latest`
    assert client.manifest(repository, "latest").digest == older_pushed.digest
    attest(registry, NEWER, newer_pushed.digest, repository)  # B's attest step...
    image.move_tags(run(config), newer_image, newer_pushed)  # ...moves it forward
    assert client.manifest(repository, "latest").digest == newer_pushed.digest

    with pytest.raises(SuiteError, match="not moving it back"):  # A again, after B
        image.move_tags(run(config), older_image, older_pushed)
    assert client.manifest(repository, "latest").digest == newer_pushed.digest


def test_a_future_created_label_does_not_pin_latest(registry: Registry):
    """Finding 8 of issue 23: a registry writer's image under `latest` labelled as made in
    2099 (every label of the suite set, a commit this clone lacks) is no reason to keep it:
    the next publish moves `latest` onto its own image. The signed image of a commit this
    clone lacks is moved too, and the line says why it could not tell which is later."""
    repository = "faults-future"
    config, client = settings(registry, repository), registry.client()
    future = Revision("f" * 40, timestamp=int(dt.datetime(2099, 1, 1, tzinfo=dt.UTC).timestamp()))
    newer, forged = goal(config, NEWER), goal(config, future)
    newer_id = build(config, NEWER)
    build(config, future)
    push(registry, forged.references[0], tag_as="latest")
    assert (
        registry.client().labels(repository, client.manifest(repository, "latest"))[CREATED_LABEL]
        == "2099-01-01T00:00:00Z"
    )

    out = io.StringIO()
    digest = publish_image(run(config, out), newer.image(newer_id))
    assert client.manifest(repository, "latest").digest == digest
    assert "cannot be decided" not in out.getvalue()  # an unsigned image proves nothing

    push(registry, forged.references[0])
    attest(registry, future, client.manifest(repository, future.sha).digest, repository)
    push(registry, forged.references[0], tag_as="latest")
    out = io.StringIO()
    assert publish_image(run(config, out), newer.image(newer_id)) == digest
    assert client.manifest(repository, "latest").digest == digest
    assert (
        f"latest held the signed image of commit {'f' * 12}; whether {NEWER.sha[:12]} is later "
        f"cannot be decided here (commit {'f' * 12} is not in this clone: fetch its full "
        "history): moving it"
    ) in out.getvalue()


@pytest.mark.parametrize("round_", range(3))
def test_two_publishes_of_different_commits_at_once(registry, round_):
    """Both pushes really at the same time, three rounds: whatever the interleaving, `latest`
    ends on the newer commit and each SHA tag on its own image."""
    repository = f"faults-at-once-{round_}"
    config = settings(registry, repository)
    targets = {OLDER: goal(config, OLDER), NEWER: goal(config, NEWER)}
    images = {OLDER: build(config, OLDER), NEWER: build(config, NEWER)}
    errors: dict[Revision, BaseException] = {}
    # Both signed before the race, as publish's attest step signs an image before it moves
    # `latest` (until then an image proves nothing: docs/supply-chain.md).
    for revision, target in targets.items():
        push(registry, target.references[0])
        digest = registry.client().manifest(repository, revision.sha).digest
        attest(registry, revision, digest, repository)
    start = threading.Barrier(2)

    def publish(revision: Revision) -> None:
        start.wait()
        try:
            publish_image(run(config), targets[revision].image(images[revision]))
        except SuiteError as error:
            errors[revision] = error

    threads = [threading.Thread(target=publish, args=(revision,)) for revision in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert NEWER not in errors, errors[NEWER]
    if OLDER in errors:  # it lost the race for `latest`: it says so, in one line
        assert "not moving it back" in str(errors[OLDER]), errors[OLDER]
    client = registry.client()
    latest = client.manifest(repository, "latest")
    assert latest == client.manifest(repository, NEWER.sha)
    assert client.manifest(repository, OLDER.sha).config_digest == images[OLDER]
    assert latest.config_digest == images[NEWER]


# -- a fault-injecting proxy in front of the real registry ------------------------------------

Fault = Callable[[BaseHTTPRequestHandler, Callable[[], tuple[int, list, bytes]]], None]


def status(code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Fault:
    return lambda handler, _forward: answer(code, body, headers)(handler)


def reset_mid_body() -> Fault:
    """Forward, then send only half of the registry's answer and reset the connection."""
    return lambda handler, forward: cut_mid_body(forward()[2])(handler)


class FaultProxy(ThreadingHTTPServer):
    """Forwards to the registry unless a queued fault matches (method, part of the path)."""

    daemon_threads = True

    def __init__(self, upstream: str, own_auth: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.own_auth = own_auth  # a storage host's own access to the data, as S3's is
        self.faults: list[tuple[str, str, Fault]] = []
        self.requests: list[dict] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: FaultProxy

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append({"method": self.command, "path": self.path, "headers": headers})

        def forward() -> tuple[int, list, bytes]:
            sent = {k: v for k, v in headers.items() if k not in ("host", "connection")}
            if self.server.own_auth:
                sent["authorization"] = self.server.own_auth
            upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
            upstream.request(self.command, self.path, body=body or None, headers=sent)
            got = upstream.getresponse()
            return got.status, got.getheaders(), got.read()

        for index, (method, part, fault) in enumerate(self.server.faults):
            if method == self.command and part in self.path:
                del self.server.faults[index]
                return fault(self, forward)
        code, upstream_headers, data = forward()
        self.send_response(code)
        for key, value in upstream_headers:
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = _handle

    def log_message(self, *args: object) -> None:
        pass


def _start(server: FaultProxy) -> Iterator[FaultProxy]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def published(registry: Registry) -> str:
    """B's image under its SHA tag and latest in ``faults-proxy``; returns its digest."""
    config = settings(registry, "faults-proxy")
    build(config, NEWER)
    push(registry, goal(config, NEWER).references[0])
    push(registry, goal(config, NEWER).references[0], tag_as="latest")
    return registry.client().manifest("faults-proxy", NEWER.sha).digest


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    yield from _start(FaultProxy(registry.address))


@pytest.fixture
def storage(registry: Registry) -> Iterator[FaultProxy]:
    """Another origin (the blob storage a registry redirects to); records what it receives."""
    basic = "Basic " + base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
    yield from _start(FaultProxy(registry.address, own_auth=basic))


MANIFEST = f"/manifests/{NEWER.sha}"
HTML = status(200, b"<html>proxy login</html>", {"Content-Type": "text/html"})


def challenge(realm: str | None) -> Fault:
    value = "Bearer " + (f'realm="{realm}",' if realm else "") + 'service="registry"'
    return status(401, b"{}", {"WWW-Authenticate": value})


SCENARIOS = {
    "502-then-ok": ([("GET", MANIFEST, status(502))], None),
    "429-retry-after": ([("GET", "/blobs/", status(429, headers={"Retry-After": "1"}))], None),
    "reset-mid-manifest": ([("GET", MANIFEST, reset_mid_body())], None),
    "reset-mid-blob-twice": ([("GET", "/blobs/", reset_mid_body())] * 2, None),
    "503-always": ([("GET", MANIFEST, status(503))] * 4, "failed 4 times (last: HTTP 503)"),
    "html-200": ([("GET", MANIFEST, HTML)], "text/html instead of JSON"),
    "realm-file": (
        [("GET", MANIFEST, challenge("file:///etc/hostname#"))],
        "refused (only https realms",
    ),
    "realm-http-remote": (
        [("GET", MANIFEST, challenge("http://auth.example.invalid/token"))],
        "refused (plain http only",
    ),
    "realm-missing": ([("GET", MANIFEST, challenge(None))], "names no realm"),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_fault_on_the_way_is_retried_or_one_clear_line(
    registry: Registry, published: str, proxy: FaultProxy, name: str
):
    faults, error = SCENARIOS[name]
    proxy.faults = list(faults)
    config = dataclasses.replace(settings(registry, "faults-proxy"), registry=proxy.address)
    out = io.StringIO()
    if error is None:
        assert already_published(run(config, out), goal(config, NEWER)) == published
        assert "retry 1/3" in out.getvalue()
    else:
        with pytest.raises(SuiteError) as failed:
            already_published(run(config, out), goal(config, NEWER))
        assert error in str(failed.value) and "\n" not in str(failed.value)
    assert proxy.faults == [], "a scripted fault was never reached"
    assert registry.password not in out.getvalue()
    # Nothing half-published: both tags still on B's image.
    assert registry.client().manifest("faults-proxy", "latest").digest == published


def test_a_blob_redirected_to_another_origin_gets_no_credential(
    registry: Registry, published: str, proxy: FaultProxy, storage: FaultProxy
):
    moved = lambda handler, _: answer(  # noqa: E731
        307, b"", {"Location": f"http://{storage.address}{handler.path}"}
    )(handler)
    proxy.faults = [("GET", "/blobs/", moved)]
    config = dataclasses.replace(settings(registry, "faults-proxy"), registry=proxy.address)
    assert already_published(run(config), goal(config, NEWER)) == published
    assert [r["path"].split("/")[-2] for r in storage.requests] == ["blobs"]
    received = json.dumps(storage.requests)
    assert "authorization" not in storage.requests[0]["headers"]
    assert registry.password not in received
    assert base64.b64encode(f"{registry.user}:".encode()).decode()[:8] not in received
    assert proxy.requests[0]["headers"]["authorization"].startswith("Basic ")  # its own origin


def test_the_latest_repair_survives_a_503_and_a_failing_put_leaves_nothing_half_done(
    registry: Registry, proxy: FaultProxy
):
    config = dataclasses.replace(settings(registry, "faults-proxy-put"), registry=proxy.address)
    build(settings(registry, "faults-proxy-put"), NEWER)
    push(registry, goal(settings(registry, "faults-proxy-put"), NEWER).references[0])
    client = registry.client()

    proxy.faults = [("PUT", "/manifests/latest", status(500))] * 4
    with pytest.raises(SuiteError, match="failed 4 times"):
        already_published(run(config), goal(config, NEWER))
    assert client.manifest("faults-proxy-put", "latest") is None  # no latest, no other tag

    proxy.faults = [("PUT", "/manifests/latest", status(503))]
    out = io.StringIO()
    digest = already_published(run(config, out), goal(config, NEWER))
    assert client.manifest("faults-proxy-put", "latest").digest == digest
    assert "retry 1/3 of PUT" in out.getvalue() and "repaired" in out.getvalue()
