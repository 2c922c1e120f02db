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
import urllib.request
from pathlib import Path

import pytest
import yaml

from cicd.bento import model_info
from cicd.docker import choose_client

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = Path("model/celestial_bodies_classifier_model.bentomodel")
SAMPLE = Path("data/raw/Mars/Mars_1.jpg")
BENTO_YAML = "/home/bentoml/bento/bento.yaml"


class Clone:
    """A clone of this repository with its own HOME, BentoML store and DVC remote."""

    def __init__(self, base: Path):
        self.root = base / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(self.root)], check=True)
        self.registry = f"127.0.0.1:9/workspace-model-{os.getpid()}"  # tags only: no push
        self.env = {
            **os.environ,
            "HOME": str(base / "home"),
            "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")),
            "BENTOML_HOME": str(base / "bentoml"),
            "CONTAINER_REGISTRY_HOST": self.registry,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        }
        for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "VIRTUAL_ENV", "NOX_CURRENT_SESSION"):
            self.env.pop(name, None)
        (base / "home").mkdir()
        self.run("dvc", "remote", "modify", "--local", "local", "url", str(base / "dvc-remote"))
        self.run("git", "config", "user.email", "test@example.invalid")
        self.run("git", "config", "user.name", "test")

    def run(self, *command: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            command, cwd=self.root, env={**self.env, **env},
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def invoke(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "invoke", *args, check=check, **env)

    def model_tag(self) -> str:
        return model_info(self.root / ARCHIVE).tag

    def local_answer(self) -> dict:
        from celestial.classifier import Classifier

        classifier = Classifier.from_bentomodel(self.root / ARCHIVE)
        return classifier.predict_bytes((self.root / SAMPLE).read_bytes())

    def store_latest(self) -> str:
        done = self.run(
            "bentoml", "models", "get", "celestial_bodies_classifier_model:latest", "-o", "json"
        )
        info = json.loads(done.stdout)
        return f"{info['name']}:{info['version']}"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A clone at commit A whose store also holds B, saved after A (store `latest` = B)."""
    clone = Clone(tmp_path_factory.mktemp("workspace-model"))
    clone.invoke("train")
    model_a = clone.model_tag()
    params = yaml.safe_load((clone.root / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (clone.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    clone.invoke("train")
    model_b = clone.model_tag()
    assert model_b != model_a
    clone.run("git", "commit", "-qam", "model B: 3 epochs")
    clone.run("git", "checkout", "-q", "HEAD~1")
    clone.run("dvc", "checkout")
    assert clone.model_tag() == model_a
    assert clone.run("git", "status", "--porcelain").stdout == ""
    yield clone, model_a, model_b
    client = choose_client().path
    listed = subprocess.run(
        [client, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    ).stdout.split()
    ours = [ref for ref in listed if ref.startswith(clone.registry)]
    if ours:
        subprocess.run([client, "rmi", "--force", *ours], capture_output=True, check=False)


def image_bento(reference: str) -> dict:
    """The bento.yaml inside an image: what the service there was built to serve."""
    done = subprocess.run(
        [choose_client().path, "run", "--rm", "--entrypoint", "cat", reference, BENTO_YAML],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return yaml.safe_load(done.stdout)


def image_label(reference: str, label: str) -> str:
    done = subprocess.run(
        [choose_client().path, "image", "inspect", "--format",
         f'{{{{index .Config.Labels "{label}"}}}}', reference],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_the_store_latest_is_not_the_workspace_model(two_models):
    # The precondition that made the old service serve the wrong model.
    clone, model_a, model_b = two_models
    assert clone.store_latest() == model_b
    assert clone.model_tag() == model_a


def test_the_image_serves_and_names_the_workspace_model(two_models):
    clone, model_a, _ = two_models
    clone.invoke("build")
    sha = clone.run("git", "rev-parse", "HEAD").stdout.strip()
    reference = f"{clone.registry}/celestial-bodies-classifier:{sha}"
    bento = image_bento(reference)
    carried = [model["tag"] for service in bento["services"] for model in service["models"]]
    assert carried == [model_a]
    assert bento["args"]["model_tag"] == model_a
    assert image_label(reference, "model.tag") == model_a
    smoke = clone.invoke("smoke")  # compares the image's answer with the local model's
    assert "smoke test passed" in smoke.stdout


def test_a_bento_that_carries_another_model_is_refused(two_models, tmp_path):
    # The commit's bento (model A) exists; the workspace's archive is swapped for B without
    # `dvc checkout` (git status stays clean: model/ is DVC's). One line says which is which.
    clone, model_a, model_b = two_models
    archive = clone.root / ARCHIVE
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
        assert f"carries model {model_a} but the workspace's archive is {model_b}" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        archive.unlink()
        clone.run("dvc", "checkout", str(ARCHIVE.parent))
    assert clone.model_tag() == model_a


def test_invoke_serve_serves_the_workspace_model(two_models):
    clone, _, _ = two_models
    # Port 0: the server binds a port the OS assigns and keeps (no bind-then-release race).
    server = subprocess.Popen(
        [sys.executable, "-m", "invoke", "serve", "--port", "0"],
        cwd=clone.root, env=clone.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        answer = post_when_ready(clone.root / SAMPLE, server)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    expected = clone.local_answer()
    assert answer["prediction"] == expected["prediction"]
    for label, p in expected["probabilities"].items():
        assert abs(answer["probabilities"][label] - p) < 1e-4, label


def listening_port(pid: int) -> int | None:
    """The TCP port a process tree listens on (the server was told port 0)."""
    import psutil

    try:
        root = psutil.Process(pid)
        for process in (root, *root.children(recursive=True)):
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    return int(connection.laddr.port)
    except psutil.Error:
        pass
    return None


def post_when_ready(image: Path, server: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, f"invoke serve exited:\n{server.stdout.read()}"
        port = listening_port(server.pid)
        try:
            if port:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
        except OSError:
            pass
        assert time.monotonic() < deadline, "invoke serve not ready"
        time.sleep(0.5)
    boundary = "workspace-model"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"'
            "\r\nContent-Type: image/jpeg\r\n\r\n"
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
