"""The publish path for real: a Docker engine builds, a registry with htpasswd auth receives.

From a temporary clone of this repository: `nox -s train`, then `nox -s publish`, as CI does;
then the failure modes. A sentinel password is used throughout and must appear nowhere.
Needs a Docker engine and Debian's docker-registry (scripts/bootstrap).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from cicd.docker import choose_client
from tests.support.project import (
    IMAGE,
    SENTINEL,
    USER,
    Project,
    post_image,
    run_image,
    start_registry,
    stop_registry,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def published(new_project, registry):
    """`nox -s train -- --push` then `nox -s publish` in a fresh clone."""
    project = new_project("project", registry)
    project.nox("-s", "train", "--", "--push")
    # The pipeline is reproducible: a fresh clone's run gives back the committed dvc.lock
    # (otherwise CI would refuse to publish a dirty tree).
    status = project.run("git", "status", "--porcelain").stdout
    assert not status, f"`nox -s train` in a clean clone changed tracked files:\n{status}"
    started = time.monotonic()
    project.nox("-s", "publish")
    project.first_publish_seconds = time.monotonic() - started
    return project


def registry_client(project: Project):
    return project.registry.client()


def head(project: Project) -> str:
    return project.head()


def tags(project: Project) -> list[str]:
    return project.registry.tags(IMAGE)


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

    address = published.registry.address
    manifest = registry_client(published).manifest(IMAGE, "latest")
    reference = f"{address}/{IMAGE}@{manifest.digest}"
    docker = DockerClient(client_call=[choose_client().path], config=str(tmp_path))
    docker.login(address, USER, SENTINEL)
    try:
        docker.pull(reference, quiet=True)
        container, port = run_image(reference)
        try:
            answer = post_image(port, published.root / "data/raw/Mars/Mars_1.jpg")
        finally:
            docker.container.remove(container, force=True)
    finally:
        docker.logout(address)
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


def test_registry_down_is_a_clear_error(published, tmp_path):
    # A registry that was up and is gone: its port is closed (a port nobody holds).
    gone = start_registry(tmp_path / "gone")
    stop_registry(gone)
    done = published.invoke("publish", env={"CONTAINER_REGISTRY_HOST": gone.address}, check=False)
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


def test_missing_model_names_the_command_that_makes_it(new_project, registry):
    project = new_project("no-model", registry)
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
        [client, "image", "inspect", f"{published.registry.address}/{IMAGE}:latest"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert SENTINEL not in inspected.stdout
