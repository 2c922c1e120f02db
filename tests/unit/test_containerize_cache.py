"""containerize's command: the inline cache always recorded, the registry's ``latest`` as the
layer cache only when the registry holds it, shown by the dry run, pulled logged in.

The build itself does not run: a recording runner keeps the command and its environment.
The registry is a small fake speaking the manifest API (200 or 404 for ``latest``)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from cicd import http, image
from cicd.bento import ModelInfo
from cicd.ci import Revision
from cicd.context import Run
from cicd.docker import Client
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
        labels[image.CACHE_BASE_LABEL] = base
    config = {
        "config": {"Labels": labels},
        "history": HISTORY,
        image.INLINE_CACHE_KEY: inline_cache(*cached),
    }
    return json.dumps(config).encode()


def digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


USER, PASSWORD = "ci-bot", "cache-pass-5f1e"
INLINE = "build-arg=BUILDKIT_INLINE_CACHE=1"


class FakeRegistry(BaseHTTPRequestHandler):
    """Holds ``latest`` or not; with ``auth``, basic auth like the embedded registry."""

    has_latest: ClassVar[bool] = True
    config: ClassVar[bytes] = image_config(1, 2)  # latest's: its cache carries its layers
    auth: ClassVar[bool] = False
    requests: ClassVar[list[str]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.auth and self.headers.get("Authorization") != expected:
            return send(self, 401, b"{}", {"WWW-Authenticate": 'Basic realm="fake"'})
        config = {"mediaType": MEDIA, "digest": digest(self.config)}
        manifest = json.dumps({"schemaVersion": 2, "config": config, "layers": LAYERS}).encode()
        if self.path == f"/v2/{REPOSITORY}/manifests/latest" and self.has_latest:
            return send(self, 200, manifest, {"Content-Type": MEDIA})
        if self.path == f"/v2/{REPOSITORY}/blobs/{digest(self.config)}" and self.has_latest:
            return send(self, 200, self.config)
        return send(self, 404, b"{}")


@pytest.fixture
def registry():
    FakeRegistry.has_latest, FakeRegistry.auth, FakeRegistry.requests = True, False, []
    FakeRegistry.config = image_config(1, 2)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()


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


def make_run(host: str, *, dry: bool = False, credentials: bool = False) -> Run:
    environ = {"CONTAINER_REGISTRY_HOST": host}
    if credentials:
        environ |= {"CONTAINER_REGISTRY_USERNAME": USER, "CONTAINER_REGISTRY_PASSWORD": PASSWORD}
    settings = load(ROOT, environ)
    run = Run(Recording(dry=dry, verbose=True), settings, environ)
    run.runner.add_secret(PASSWORD)
    run.__dict__["docker"] = Client("/usr/bin/docker", {})  # no engine asked
    return run


def containerize(run: Run) -> list[str]:
    """The containerize command that ran (or was shown), as its words."""
    goal = image.Target(Revision(SHA), MODEL, run.settings.repository)
    image.containerize(run, goal)
    if run.dry:
        line = next(x for x in run.runner.printed.splitlines() if "bentoml containerize" in x)
        return line.split()
    return next(c for c, _ in run.runner.commands if "containerize" in c)


def options(command: list[str]) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command) if word == "--opt"]


def test_the_registrys_latest_is_the_cache_when_it_holds_it(registry):
    run = make_run(registry)
    opts = options(containerize(run))
    assert INLINE in opts
    assert f"cache-from={registry}/{REPOSITORY}:latest" in opts
    assert f"label=org.opencontainers.image.revision={SHA}" in opts  # the labels stay
    assert f"label={image.MODEL_DIGEST_LABEL}={MODEL.digest}" in opts
    assert [o for o in opts if o.startswith("cache-from=")] == [
        f"cache-from={registry}/{REPOSITORY}:latest"
    ]  # its cache carries its dependencies: the next image names it
    assert f"label={image.CACHE_BASE_LABEL}={EARLIER}" in opts
    assert "layer cache: " in run.runner.printed


def test_an_image_built_from_the_cache_passes_on_the_one_that_carries_the_dependencies(
    registry,
):
    """Docker 20.10 records no layer for a step taken from an imported cache: `latest`'s
    records carry only its code layer, so the build also takes the image it names."""
    FakeRegistry.config = image_config(2, base=BASE)
    opts = options(containerize(make_run(registry)))
    assert [o for o in opts if o.startswith("cache-from=")] == [
        f"cache-from={registry}/{REPOSITORY}:latest",
        f"cache-from={registry}/{REPOSITORY}:{BASE}",
    ]
    assert f"label={image.CACHE_BASE_LABEL}={BASE}" in opts


def test_which_images_cache_carries_its_dependencies():
    manifest = json.dumps({"layers": LAYERS}).encode()
    carries = image.carries_its_dependencies
    assert carries(json.loads(image_config(1, 2)), manifest)
    assert carries(json.loads(image_config(1)), manifest)  # the heaviest built layer
    assert not carries(json.loads(image_config(2)), manifest)
    assert not carries(json.loads(image_config(0, 2)), manifest)  # the base's is not built
    assert not carries({}, manifest) and not carries({"history": HISTORY}, b"{}")


def test_a_first_publish_records_the_cache_and_uses_none(registry):
    FakeRegistry.has_latest = False
    run = make_run(registry)
    opts = options(containerize(run))
    assert INLINE in opts  # the next build can use this one's
    assert not any(opt.startswith("cache-from=") for opt in opts)
    assert "is not in the registry: building without a layer cache" in run.runner.printed


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
    assert "building without it" in run.runner.printed


def test_the_dry_run_shows_the_cache_options_and_asks_nothing(registry):
    run = make_run(registry, dry=True)
    words = containerize(run)
    opts = options(words)
    assert INLINE in opts and f"cache-from={registry}/{REPOSITORY}:latest" in opts
    assert f"GET http://{registry}/v2/{REPOSITORY}/manifests/latest" in run.runner.printed
    assert FakeRegistry.requests == [], "a dry run talked to the registry"


def test_with_credentials_the_build_pulls_the_cache_with_them(registry):
    FakeRegistry.auth = True
    run = make_run(registry, credentials=True)
    containerize(run)
    (command, env), config = run.runner.commands[-1], run.runner.configs[-1]
    assert f"cache-from={registry}/{REPOSITORY}:latest" in options(command)
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert config == {"auths": {registry: {"auth": auth}}}  # docker login's format
    assert not Path(env["DOCKER_CONFIG"]).exists(), "the credentials outlived the build"
    assert PASSWORD not in run.runner.printed and auth not in run.runner.printed
    assert "login" not in run.runner.printed  # no `docker login`: a refusal is the push's


def test_without_credentials_the_build_keeps_the_users_docker_config(registry):
    run = make_run(registry)
    containerize(run)
    build_env = next(env for c, env in run.runner.commands if "containerize" in c)
    assert "DOCKER_CONFIG" not in build_env
