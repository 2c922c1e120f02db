"""The image and `invoke serve` carry the workspace's model, whatever else the store holds.

The sequence of issue 9, for real, in a clone with its own BentoML store: train model A and
commit; train model B (3 epochs) and commit; go back to A (`git checkout`, `dvc checkout`).
The store's `latest` is then B, the workspace's archive A. Built the old way (the service
asking for `latest`), the image was labelled A and served B.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cicd.bento import model_info
from tests.support import runs
from tests.support.project import (
    Project,
    docker,
    listening_ports,
    post_image,
    remove_images,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]

MODEL = "celestial_bodies_classifier_model"
ARCHIVE = Path(f"model/{MODEL}.bentomodel")
SAMPLE = Path("data/raw/Mars/Mars_1.jpg")
BENTO_YAML = "/home/bentoml/bento/bento.yaml"


def model_tag(project: Project) -> str:
    return model_info(project.path(ARCHIVE)).tag


def local_answer(project: Project) -> dict:
    from celestial.reference import load_classifier

    classifier = load_classifier(project.path(ARCHIVE))
    return classifier.predict_bytes(project.path(SAMPLE).read_bytes())


def store_latest(project: Project) -> str:
    done = project.run("bentoml", "models", "get", f"{MODEL}:latest", "-o", "json")
    info = json.loads(done.stdout)
    return f"{info['name']}:{info['version']}"


@pytest.fixture(scope="module")
def two_models(new_project, training):
    """A clone at commit A whose store also holds B, saved after A (store `latest` = B)."""
    # Images are only tagged for this namespace, never pushed: no registry needed.
    namespace = runs.image("workspace-model", host="registry.invalid")
    clone = new_project(
        "workspace-model", None, env={"CONTAINER_REGISTRY_HOST": namespace}, trained=training
    )  # model A: pulled from the run's trained remote; model B: trained here
    clone.run("git", "config", "user.email", "tests@localhost")
    clone.run("git", "config", "user.name", "tests")
    clone.session("train")
    model_a = model_tag(clone)
    params = yaml.safe_load(clone.path("params.yaml").read_text())
    params["train"]["epochs"] = 3
    clone.path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    clone.session("train")
    model_b = model_tag(clone)
    assert model_b != model_a
    clone.run("git", "commit", "-qam", "model B: 3 epochs")
    clone.run("git", "checkout", "-q", "HEAD~1")
    clone.run("dvc", "checkout")
    assert model_tag(clone) == model_a
    assert clone.run("git", "status", "--porcelain").stdout == ""
    # The store's `latest` as the fixture leaves it: a build or an import of A by another
    # test makes A `latest` again, so the precondition is read here, not by a later test.
    latest = store_latest(clone)
    yield clone, model_a, model_b, latest
    remove_images(f"{namespace}/")


@pytest.fixture(scope="module")
def built(two_models) -> str:
    """The image of the workspace's commit, built here: every test that needs it asks this
    fixture, not an earlier test (each passes alone with -k, in any order)."""
    clone, *_ = two_models
    clone.invoke("build")
    return f"{clone.env['CONTAINER_REGISTRY_HOST']}/celestial-bodies-classifier:{clone.head()}"


def image_bento(reference: str) -> dict:
    """The bento.yaml inside an image: what the service there was built to serve."""
    inside = docker("run", "--rm", *runs.label_args(), "--entrypoint", "cat", reference, BENTO_YAML)
    return yaml.safe_load(inside.stdout)


def image_label(reference: str, label: str) -> str:
    template = f'{{{{index .Config.Labels "{label}"}}}}'
    return docker("image", "inspect", "--format", template, reference).stdout.strip()


def test_the_store_latest_is_not_the_workspace_model(two_models):
    # The precondition that made the old service serve the wrong model.
    clone, model_a, model_b, latest = two_models
    assert latest == model_b
    assert model_tag(clone) == model_a


def test_the_image_serves_and_names_the_workspace_model(two_models, built):
    clone, model_a, *_ = two_models
    reference = built
    assert reference.endswith(":" + clone.run("git", "rev-parse", "HEAD").stdout.strip())
    bento = image_bento(reference)
    carried = [model["tag"] for service in bento["services"] for model in service["models"]]
    assert carried == [model_a]
    assert bento["args"]["model_tag"] == model_a
    assert image_label(reference, "model.tag") == model_a
    smoke = clone.invoke("smoke")  # compares the image's answer with the local model's
    assert "smoke test passed" in smoke.stdout


def test_a_bento_that_carries_another_model_is_refused(two_models, built, tmp_path):
    # The commit's bento (model A) exists (``built`` made it: alone, this test once built a
    # bento of B and passed nothing); the workspace's archive is swapped for B without
    # `dvc checkout` (git status stays clean: model/ is DVC's). One line says what to do.
    clone, model_a, *_ = two_models
    archive = clone.path(ARCHIVE)
    saved = tmp_path / "a.bentomodel"
    saved.write_bytes(archive.read_bytes())
    clone.run("git", "checkout", "-q", "-")
    clone.run("dvc", "checkout", str(ARCHIVE.parent))
    b_bytes = archive.read_bytes()
    clone.run("git", "checkout", "-q", "HEAD~1")
    archive.unlink()  # DVC links files from its cache: replace, never write through
    archive.write_bytes(b_bytes)
    try:
        done = clone.invoke("bento", check=False)
        assert done.returncode != 0
        # Refused before any bento is built: the archive is not what dvc.lock records.
        assert "is not the train:model output that dvc.lock records" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        archive.unlink()
        clone.run("dvc", "checkout", str(ARCHIVE.parent))
    assert model_tag(clone) == model_a


def test_invoke_serve_serves_the_workspace_model(two_models):
    clone, *_ = two_models
    # Port 0: the server binds a port the OS assigns and keeps (no bind-then-release race).
    server = subprocess.Popen(
        [sys.executable, "-m", "invoke", "serve", "--port", "0"],
        cwd=clone.root, env=clone.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        answer = post_image(port_of(server), clone.path(SAMPLE), timeout=300)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    expected = local_answer(clone)
    assert answer["prediction"] == expected["prediction"]
    for label, p in expected["probabilities"].items():
        assert abs(answer["probabilities"][label] - p) < 1e-4, label


def port_of(server: subprocess.Popen, timeout: float = 300) -> int:
    """The port where ``server`` (told port 0) answers ``/readyz``; fails if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, f"invoke serve exited:\n{server.stdout.read()}"
        for port in listening_ports(server.pid):
            try:
                wait_ready(port, timeout=2)
                return port
            except AssertionError:
                pass
        assert time.monotonic() < deadline, "invoke serve is not ready"
        time.sleep(0.5)


def test_the_image_carries_what_serving_needs_and_nothing_of_training(built):
    # README, Image: no scikit-learn, skl2onnx, matplotlib or dvc in the image.
    reference = built
    probe = (
        "import importlib.util as u, json; print(json.dumps({m: bool(u.find_spec(m)) for m in "
        "['sklearn', 'skl2onnx', 'matplotlib', 'dvc', 'bentoml', 'onnxruntime', 'PIL']}))"
    )
    found = json.loads(
        docker(
            "run", "--rm", *runs.label_args(), "--entrypoint", "python", reference, "-c", probe
        ).stdout
    )
    assert found == {
        "sklearn": False, "skl2onnx": False, "matplotlib": False, "dvc": False,
        "bentoml": True, "onnxruntime": True, "PIL": True,
    }  # fmt: skip
