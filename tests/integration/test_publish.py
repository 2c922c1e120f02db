"""The publish path for real: a Docker engine builds, a registry with htpasswd auth receives.

From a temporary clone of this repository: `nox -s train`, then `nox -s publish`, as CI does;
then the failure modes. A sentinel password is used throughout and must appear nowhere.
Needs a Docker engine and Debian's docker-registry (scripts/bootstrap).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cicd import local_registry
from cicd.docker import choose_client
from cicd.registry import Credentials, RegistryClient

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
USER = "ci-bot"
# The registry password, made per run so that it is in no file unless the suite leaks it.
SENTINEL = "sentinel-" + secrets.token_hex(12)
IMAGE = "celestial-bodies-classifier"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Project:
    """A clone of the repository with its own DVC remote, BentoML store and HOME."""

    root: Path
    env: dict[str, str]
    registry: str
    outputs: list[str] = field(default_factory=list)

    def run(self, *command: str, env: dict | None = None, check: bool = True, cwd=None):
        done = subprocess.run(
            command, cwd=cwd or self.root, env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        self.outputs.append(done.stdout + done.stderr)
        if check:
            assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def invoke(self, *args: str, **kwargs):
        return self.run(sys.executable, "-m", "invoke", *args, **kwargs)

    def nox(self, *args: str, **kwargs):
        return self.run(sys.executable, "-m", "nox", *args, **kwargs)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A Distribution registry with htpasswd auth on a free port, stopped at the end."""
    state = tmp_path_factory.mktemp("registry")
    port = free_port()
    local_registry.start(port=port, storage=state, htpasswd=(USER, SENTINEL), use_image=False)
    yield f"127.0.0.1:{port}"
    local_registry.stop(port=port, state_dir=state)
    remove_images(f"127.0.0.1:{port}/")


def remove_images(prefix: str) -> None:
    """Untag the images the tests built for their throwaway registry (layers are shared)."""
    client = choose_client().path
    listed = subprocess.run(
        [client, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    ours = [ref for ref in listed if ref.startswith(prefix)]
    if ours:
        subprocess.run([client, "rmi", "--force", *ours], capture_output=True, check=False)


def make_project(base: Path, registry: str, dvc_remote: Path) -> Project:
    root = base / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(root)], check=True)
    home = base / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        # keep the machine's package caches: only what the suite writes goes to the fake HOME
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")),
        "BENTOML_HOME": str(base / "bentoml"),
        "CONTAINER_REGISTRY_HOST": registry,
        "CONTAINER_REGISTRY_USERNAME": USER,
        "CONTAINER_REGISTRY_PASSWORD": SENTINEL,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "VIRTUAL_ENV", "NOX_CURRENT_SESSION"):
        env.pop(name, None)
    project = Project(root, env, registry)
    project.run("dvc", "remote", "modify", "--local", "local", "url", str(dvc_remote))
    return project


@pytest.fixture(scope="module")
def published(tmp_path_factory, registry):
    """`nox -s train -- --push` then `nox -s publish` in a fresh clone."""
    base = tmp_path_factory.mktemp("project")
    project = make_project(base, registry, base / "dvc-remote")
    project.nox("-s", "train", "--", "--push")
    # The pipeline is reproducible: a fresh clone's run gives back the committed dvc.lock
    # (otherwise CI would refuse to publish a dirty tree).
    status = project.run("git", "status", "--porcelain").stdout
    assert not status, f"`nox -s train` in a clean clone changed tracked files:\n{status}"
    started = time.monotonic()
    project.nox("-s", "publish")
    project.first_publish_seconds = time.monotonic() - started
    return project


def registry_client(project: Project) -> RegistryClient:
    return RegistryClient(project.registry, Credentials(USER, SENTINEL))


def head(project: Project) -> str:
    return project.run("git", "rev-parse", "HEAD").stdout.strip()


def test_publish_pushes_both_tags_with_one_digest_and_the_labels(published):
    client = registry_client(published)
    sha = head(published)
    by_sha, latest = client.manifest(IMAGE, sha), client.manifest(IMAGE, "latest")
    assert by_sha is not None and by_sha == latest
    labels = client.labels(IMAGE, by_sha)
    assert labels["org.opencontainers.image.revision"] == sha
    assert labels["org.opencontainers.image.version"] == sha
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["model.tag"].startswith("celestial_bodies_classifier_model:")
    archive = published.root / "model" / "celestial_bodies_classifier_model.bentomodel"
    assert labels["model.digest"] == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()


def test_the_pushed_image_pulled_by_digest_answers_a_prediction(published, tmp_path):
    from python_on_whales import DockerClient

    manifest = registry_client(published).manifest(IMAGE, "latest")
    reference = f"{published.registry}/{IMAGE}@{manifest.digest}"
    docker = DockerClient(client_call=[choose_client().path], config=str(tmp_path))
    docker.login(published.registry, USER, SENTINEL)
    try:
        docker.pull(reference, quiet=True)
        port = free_port()
        container = docker.run(reference, detach=True, publish=[(f"127.0.0.1:{port}", 3000)])
        try:
            answer = post_image(port, published.root / "data/raw/Mars/Mars_1.jpg")
        finally:
            container.remove(force=True)
    finally:
        docker.logout(published.registry)
    assert answer["prediction"] in answer["probabilities"]
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3


def test_a_second_publish_of_the_same_commit_skips(published):
    before = registry_client(published).manifest(IMAGE, "latest")
    done = published.nox("-s", "publish")
    assert "already published" in done.stdout + done.stderr
    assert "bentoml containerize" not in done.stdout + done.stderr
    assert registry_client(published).manifest(IMAGE, "latest") == before


def test_wrong_password_is_a_clear_error_and_nothing_is_pushed(published):
    before = tags(published)
    done = published.invoke(
        "publish", "--force", env={"CONTAINER_REGISTRY_PASSWORD": "wrong"}, check=False
    )
    assert done.returncode != 0
    assert "refused user 'ci-bot'" in done.stderr and "CONTAINER_REGISTRY_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr
    assert tags(published) == before


def test_registry_down_is_a_clear_error(published):
    done = published.invoke(
        "publish", env={"CONTAINER_REGISTRY_HOST": f"127.0.0.1:{free_port()}"}, check=False
    )
    assert done.returncode != 0
    assert "is not reachable" in done.stderr and "Traceback" not in done.stderr


def test_no_docker_engine_is_a_clear_error(published, tmp_path):
    done = published.invoke(
        "publish", env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}, check=False
    )
    assert done.returncode != 0
    assert "no Docker engine answers" in done.stderr and "Traceback" not in done.stderr


def test_an_image_that_fails_its_smoke_test_is_not_pushed(published):
    serve = published.root / "src" / "serve.py"
    original = serve.read_text()
    # A service that answers in the right shape, but not the model's prediction.
    answer = "return self.classifier.predict(decode_image(image.read_bytes()))"
    wrong = (
        "p = self.classifier.predict(decode_image(image.read_bytes()))['probabilities']\n"
        "            return {'prediction': min(p, key=p.get), 'probabilities': p}"
    )
    assert answer in original, "serve.py changed: update this test's patch"
    serve.write_text(original.replace(answer, wrong))
    try:
        before = tags(published)
        done = published.invoke("publish", check=False)
        assert done.returncode != 0
        assert "but the local model predicts" in done.stderr, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert tags(published) == before, "an image that failed its smoke test was pushed"
    finally:
        serve.write_text(original)


def test_missing_model_names_the_command_that_makes_it(tmp_path, registry):
    project = make_project(tmp_path, registry, tmp_path / "empty-remote")
    done = project.invoke("publish", check=False)
    assert done.returncode != 0
    assert "nox -s train" in done.stderr and "Traceback" not in done.stderr


def test_the_password_appears_nowhere(published):
    # Runs last in this module: every command above has run with the sentinel password.
    for output in published.outputs:
        assert SENTINEL not in output
    roots = [published.root, Path(published.env["HOME"]), Path(published.env["BENTOML_HOME"])]
    for root in roots:
        for path in root.rglob("*"):
            if ".nox" in path.parts or not path.is_file() or path.is_symlink():
                continue
            assert SENTINEL.encode() not in path.read_bytes(), f"password found in {path}"
    client = choose_client().path
    inspected = subprocess.run(
        [client, "image", "inspect", f"{published.registry}/{IMAGE}:latest"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert SENTINEL not in inspected.stdout


def tags(project: Project) -> list[str]:
    url = f"http://{project.registry}/v2/{IMAGE}/tags/list"
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{USER}:{SENTINEL}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return sorted(json.loads(response.read()).get("tags") or [])
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise


def post_image(port: int, image: Path, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    boundary = "testboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"'
            f"\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
