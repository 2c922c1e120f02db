"""containerize's command: the inline cache always recorded; as the layer cache, the registry's
``latest`` by digest, and only when its SBOM and provenance are signed by the trusted key
about that digest (finding 12 of issue 23); shown by the dry run, pulled logged in.

The build itself does not run: a recording runner keeps the ``docker build`` command that
containerize runs in the suite's process (the bento's build context is a stand-in directory)
and its environment; the dry run shows the equivalent ``bentoml containerize`` command.
The registry is a small fake speaking the manifest and blob API, holding images and, for
the signed ones, their attestations under cosign's tag scheme (as on Distribution 2.8);
tests/integration/test_layer_cache_trust.py does the same against the real registry."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from cicd import attestation_store, http, image, layer_cache, provenance, signing
from cicd import containerize as containerize_module
from cicd.bento import ModelInfo
from cicd.ci import Revision
from cicd.containerize import containerize as build_image
from cicd.context import Run
from cicd.docker import Client
from cicd.labels import CACHE_BASE_LABEL, MODEL_DIGEST_LABEL
from cicd.settings import load
from cicd.shell import Runner
from tests.support.fake_http import send
from tests.support.project import refused_port

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
MODEL = ModelInfo("celestial_bodies_classifier_model:abc", "sha256:" + "1" * 64)
REPOSITORY = "celestial-bodies-classifier"
EARLIER = "f" * 40  # the commit of the image `latest` holds
BASE = "e" * 40  # the image whose cache `latest` names in its label
MEDIA = "application/vnd.docker.distribution.manifest.v2+json"
# Three layers: the base image's, the dependencies' (heaviest built), the code's.
LAYERS = [{"size": 60_000_000}, {"size": 84_000_000}, {"size": 1_500_000}]
HISTORY = [{"comment": "Imported from -"}] + [{"comment": "buildkit.dockerfile.v0"}] * 2


def inline_cache(*layers: int) -> str:
    """BuildKit's inline cache records, one carrying each of ``layers`` (indexes)."""
    records = [{"digest": f"sha256:{i}", "layers": [{"layer": i}]} for i in layers]
    return base64.b64encode(json.dumps([*records, {"digest": "sha256:x"}]).encode()).decode()


def image_config(*cached: int, base: str = "") -> bytes:
    labels = {"org.opencontainers.image.version": EARLIER}
    if base:
        labels[CACHE_BASE_LABEL] = base
    config = {
        "config": {"Labels": labels},
        "history": HISTORY,
        layer_cache.INLINE_CACHE_KEY: inline_cache(*cached),
    }
    return json.dumps(config).encode()


def digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


USER, PASSWORD = "ci-bot", "cache-pass-5f1e"
INLINE = "build-arg=BUILDKIT_INLINE_CACHE=1"


KEY = signing.generate_private_pem()  # the trusted key of these tests
OTHER_KEY = signing.generate_private_pem()


class FakeRegistry(BaseHTTPRequestHandler):
    """Serves :attr:`manifests` (by tag and by digest) and :attr:`blobs`; no referrers API
    (404, as Distribution 2.8); with ``auth``, basic auth like the embedded registry."""

    manifests: ClassVar[dict[str, bytes]] = {}
    blobs: ClassVar[dict[str, bytes]] = {}
    auth: ClassVar[bool] = False
    requests: ClassVar[list[str]] = []
    address: ClassVar[str] = ""  # host:port, set by the `registry` fixture

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.auth and self.headers.get("Authorization") != expected:
            return send(self, 401, b"{}", {"WWW-Authenticate": 'Basic realm="fake"'})
        prefix = f"/v2/{REPOSITORY}/"
        kind, _, reference = self.path.removeprefix(prefix).partition("/")
        if kind == "manifests" and reference in self.manifests:
            body = self.manifests[reference]
            return send(self, 200, body, {"Content-Type": json.loads(body)["mediaType"]})
        if kind == "blobs" and reference in self.blobs:
            return send(self, 200, self.blobs[reference])
        return send(self, 404, b"{}")


def put_image(tag: str, config: bytes, *, key: str | None = KEY, unsigned: bool = False) -> str:
    """An image under ``tag``; its SBOM and provenance signed by ``key`` (None: none attached;
    ``unsigned``: attached without signatures). Returns its digest."""
    config_ref = {"mediaType": MEDIA, "digest": digest(config), "size": len(config)}
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": MEDIA, "config": config_ref, "layers": LAYERS}
    ).encode()
    image_digest = digest(manifest)
    FakeRegistry.manifests[tag] = FakeRegistry.manifests[image_digest] = manifest
    FakeRegistry.blobs[digest(config)] = config
    if key is not None or unsigned:
        signer = None if unsigned else signing.signer(key)
        for kind in attestation_store.KINDS:
            predicate = (
                {"bomFormat": "CycloneDX"}
                if kind is attestation_store.SBOM
                else {"buildDefinition": {}}
            )
            # Its subject names the image as attest does: the registry's host included.
            statement = provenance.statement(
                f"{FakeRegistry.address}/{REPOSITORY}", image_digest, kind.predicate_type, predicate
            )
            body = provenance.dumps(signing.envelope(statement, signer))
            FakeRegistry.blobs[digest(body)] = body
            artifact = attestation_store.artifact_manifest(kind, None, digest(body), len(body))
            FakeRegistry.manifests[attestation_store.tag_for(image_digest, kind)] = artifact
    return image_digest


def serve_fake_registry() -> Iterator[str]:
    """The fake registry, emptied, on a free port of 127.0.0.1: its address (the fixture
    ``registry``; other test files make it theirs the same way)."""
    FakeRegistry.auth, FakeRegistry.requests = False, []
    FakeRegistry.manifests, FakeRegistry.blobs = {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeRegistry.address = f"127.0.0.1:{server.server_port}"
    yield FakeRegistry.address
    server.shutdown()


registry = pytest.fixture(serve_fake_registry)


@contextlib.contextmanager
def stand_in_context(run, bento_tag, buildkit, scratch):
    """A build context without a bento store: a directory with a Dockerfile."""
    context = Path(scratch) / "context"
    (context / "env" / "docker").mkdir(parents=True)
    dockerfile = context / "env" / "docker" / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    yield str(context), str(dockerfile), ()


@pytest.fixture(autouse=True)
def no_bento_store(monkeypatch):
    """containerize's build context is BentoML's, from the bento store: a stand-in here."""
    monkeypatch.setattr(containerize_module, "build_context", stand_in_context)


class Recording(Runner):
    """Runs nothing: keeps each command (and its environment), shows it as the runner does."""

    def __init__(self, **kwargs):
        super().__init__(out=io.StringIO(), **kwargs)
        self.commands: list[tuple[list[str], dict[str, str]]] = []
        self.configs: list[dict | None] = []  # the DOCKER_CONFIG of each run, as it ran

    def run(self, command, *, env=None, **kwargs):
        if self.dry:
            return super().run(command, env=env, **kwargs)
        self.show(command)
        self.commands.append(([str(part) for part in command], dict(env or {})))
        config = Path((env or {}).get("DOCKER_CONFIG", "/nonexistent")) / "config.json"
        self.configs.append(json.loads(config.read_text()) if config.exists() else None)
        return ""

    @property
    def printed(self) -> str:
        return self.out.getvalue()


@pytest.fixture(scope="module")
def trusted_key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "publish.pub"
    path.write_text(signing.public_pem_of(KEY))
    return path


def make_run(
    host: str, *, dry: bool = False, credentials: bool = False, key: Path | None = None
) -> Run:
    environ = {"CONTAINER_REGISTRY_HOST": host}
    if credentials:
        environ |= {"CONTAINER_REGISTRY_USERNAME": USER, "CONTAINER_REGISTRY_PASSWORD": PASSWORD}
    settings = load(ROOT, environ)
    if key is not None:
        settings = dataclasses.replace(settings, signing_public_key=key)
    run = Run(Recording(dry=dry, verbose=True), settings, environ)
    run.runner.add_secret(PASSWORD)
    run.__dict__["docker"] = Client("/usr/bin/docker", {})  # no engine asked
    return run


def containerize(run: Run) -> list[str]:
    """The build command that ran (the ``docker build``), or the ``bentoml containerize``
    the dry run showed, as its words."""
    goal = image.Target(Revision(SHA), MODEL, run.settings.repository)
    build_image(run, goal)
    if run.dry:
        line = next(x for x in run.runner.printed.splitlines() if "bentoml containerize" in x)
        return line.split()
    return docker_build(run)[0]


def docker_build(run: Run) -> tuple[list[str], dict[str, str]]:
    """The ``docker build`` the recording runner kept, and its environment."""
    return next((c, env) for c, env in run.runner.commands if c[1:2] == ["build"])


# docker build's options that `bentoml containerize --opt KEY=VALUE` gives
DOCKER_OPTIONS = ("--build-arg", "--cache-from", "--label", "--iidfile")


def options(command: list[str]) -> list[str]:
    """``KEY=VALUE`` of each ``--opt`` (bentoml containerize) or backend option (docker build)."""
    if "--opt" in command:
        return [command[i + 1] for i, word in enumerate(command) if word == "--opt"]
    return [f"{w[2:]}={command[i + 1]}" for i, w in enumerate(command) if w in DOCKER_OPTIONS]


def cache_from(command: list[str]) -> list[str]:
    return [o for o in options(command) if o.startswith("cache-from=")]


def test_the_registrys_latest_is_the_cache_by_digest_when_its_provenance_verifies(
    registry, trusted_key
):
    latest = put_image("latest", image_config(1, 2))  # its cache carries its dependencies
    run = make_run(registry, key=trusted_key)
    opts = options(containerize(run))
    assert INLINE in opts
    assert cache_from(run.runner.commands[-1][0]) == [
        f"cache-from={registry}/{REPOSITORY}@{latest}"
    ]
    assert f"label=org.opencontainers.image.revision={SHA}" in opts  # the labels stay
    assert f"label={MODEL_DIGEST_LABEL}={MODEL.digest}" in opts
    assert f"label={CACHE_BASE_LABEL}={EARLIER}" in opts  # the next image names it
    assert f"cache: from {latest} (verified)" in run.runner.printed


@pytest.mark.parametrize(
    ("attached", "why"),
    [
        (dict(key=None), "no SBOM attached"),
        (dict(unsigned=True), "signature: the SBOM and provenance are unsigned"),
        (dict(key=OTHER_KEY), "signature: the SBOM is signed by another key"),
    ],
    ids=["nothing-attached", "unsigned", "another-key"],
)
def test_a_latest_whose_provenance_does_not_verify_is_no_cache_source(
    registry, trusted_key, attached, why
):
    """Finding 12: a registry writer's image pushed as `latest` (whatever its labels say)
    feeds no cache records into the build."""
    latest = put_image("latest", image_config(1, 2), **attached)
    run = make_run(registry, key=trusted_key)
    command = containerize(run)
    assert INLINE in options(command)  # the image still records its own cache
    assert cache_from(command) == []
    assert f"cache: none ({registry}/{REPOSITORY}:latest is {latest}, not verified: " in (
        run.runner.printed
    )
    assert why in run.runner.printed


def test_an_image_built_from_the_cache_passes_on_the_one_that_carries_the_dependencies(
    registry, trusted_key
):
    """Docker 20.10 records no layer for a step taken from an imported cache: `latest`'s
    records carry only its code layer, so the build also takes the image it names, by
    digest, once that one verifies too."""
    base = put_image(BASE, image_config(1, 2))
    latest = put_image("latest", image_config(2, base=BASE))
    run = make_run(registry, key=trusted_key)
    opts = options(containerize(run))
    assert [o for o in opts if o.startswith("cache-from=")] == [
        f"cache-from={registry}/{REPOSITORY}@{latest}",
        f"cache-from={registry}/{REPOSITORY}@{base}",
    ]
    assert f"label={CACHE_BASE_LABEL}={BASE}" in opts
    assert f"cache: from {latest} (verified) and {base} (verified: " in run.runner.printed


def test_the_image_a_label_names_is_no_cache_source_unless_it_verifies(registry, trusted_key):
    put_image(BASE, image_config(1, 2), key=None)  # a tag the label names, rewritten unsigned
    latest = put_image("latest", image_config(2, base=BASE))
    run = make_run(registry, key=trusted_key)
    opts = options(containerize(run))
    assert [o for o in opts if o.startswith("cache-from=")] == [
        f"cache-from={registry}/{REPOSITORY}@{latest}"
    ]


def test_which_images_cache_carries_its_dependencies():
    manifest = json.dumps({"layers": LAYERS}).encode()
    carries = layer_cache.carries_its_dependencies
    assert carries(json.loads(image_config(1, 2)), manifest)
    assert carries(json.loads(image_config(1)), manifest)  # the heaviest built layer
    assert not carries(json.loads(image_config(2)), manifest)
    assert not carries(json.loads(image_config(0, 2)), manifest)  # the base's is not built
    assert not carries({}, manifest) and not carries({"history": HISTORY}, b"{}")


def test_a_first_publish_records_the_cache_and_uses_none(registry):
    run = make_run(registry)
    opts = options(containerize(run))
    assert INLINE in opts  # the next build can use this one's
    assert not any(opt.startswith("cache-from=") for opt in opts)
    assert "cache: none (" in run.runner.printed and "is not in the registry)" in run.runner.printed


def test_a_registry_that_does_not_answer_means_no_cache_at_once(monkeypatch):
    # Counted, not timed: one request sent, none retried.
    sent = []
    once = http.Http._once

    def counted(self, method, url, *args, **kwargs):
        sent.append(f"{method} {url}")
        return once(self, method, url, *args, **kwargs)

    monkeypatch.setattr(http.Http, "_once", counted)
    with refused_port() as port:  # kept bound, never listening: nobody else can take it
        run = make_run(f"127.0.0.1:{port}")
        opts = options(containerize(run))
    assert len(sent) == 1, f"the cache probe retried: {sent}"
    assert INLINE in opts and not any(opt.startswith("cache-from=") for opt in opts)
    assert "cache: none (" in run.runner.printed


def test_the_dry_run_shows_the_cache_options_and_asks_nothing(registry):
    put_image("latest", image_config(1, 2))
    run = make_run(registry, dry=True)
    words = containerize(run)
    opts = options(words)
    assert INLINE in opts
    shown = [o.strip("'") for o in opts]  # quoted: `<` is special to a shell
    assert f"cache-from={registry}/{REPOSITORY}@sha256:<verified-latest>" in shown
    assert f"GET http://{registry}/v2/{REPOSITORY}/manifests/latest" in run.runner.printed
    assert FakeRegistry.requests == [], "a dry run talked to the registry"


def test_with_credentials_the_build_pulls_the_cache_with_them(registry, trusted_key):
    FakeRegistry.auth = True
    latest = put_image("latest", image_config(1, 2))
    run = make_run(registry, credentials=True, key=trusted_key)
    containerize(run)
    (command, env), config = run.runner.commands[-1], run.runner.configs[-1]
    assert f"cache-from={registry}/{REPOSITORY}@{latest}" in options(command)
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert config == {"auths": {registry: {"auth": auth}}}  # docker login's format
    assert not Path(env["DOCKER_CONFIG"]).exists(), "the credentials outlived the build"
    assert PASSWORD not in run.runner.printed and auth not in run.runner.printed
    assert "login" not in run.runner.printed  # no `docker login`: a refusal is the push's


def test_without_credentials_the_build_keeps_the_users_docker_config(registry, trusted_key):
    put_image("latest", image_config(1, 2))
    run = make_run(registry, key=trusted_key)
    containerize(run)
    _, build_env = docker_build(run)
    assert "DOCKER_CONFIG" not in build_env
