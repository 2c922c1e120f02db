"""The smoke test's verdicts on services that fail, each on a tiny image built in seconds.

A service that crashes, one that never gets ready, one that answers HTTP 500: a 20-line HTTP
server on the base image plays each (the smoke test only sees a container, a port and HTTP
answers), and `invoke smoke --image` must fail with one line naming what went wrong and leave
no container behind. That a failing image is never pushed is proven on the real service, built
by the publish session (test_publish.py, "wrong answer").
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from cicd.labels import CONTAINER_LABEL
from tests.support import runs
from tests.support.project import Project, docker, docker_client_path, remove_images

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPOSITORY = runs.image("smoke-failures")
SERVER = """\
import os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

MODE = os.environ["MODE"]
if MODE == "crashes":
    sys.exit(3)
if MODE == "never-ready":
    time.sleep(3600)


class Handler(BaseHTTPRequestHandler):
    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.answer(200 if self.path == "/readyz" else 404)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(500)


HTTPServer(("0.0.0.0", 3000), Handler).serve_forever()
"""
DOCKERFILE = """\
FROM python:3.11-slim
COPY server.py /server.py
ARG MODE
ENV MODE=$MODE
CMD ["python3", "/server.py"]
"""
FAILURES = {
    "crashes": ("the container exited with code 3 before it was ready", {}),
    # The setting, through invoke's environment: a deadline of 5 s, not the default 90 s.
    "never-ready": ("the container was not ready within 5 s", {"INVOKE_SUITE_SMOKE_TIMEOUT": "5"}),
    "answers-500": ("POST /predict answered HTTP 500", {}),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Iterator[dict[str, str]]:
    context = tmp_path_factory.mktemp("tiny-service")
    (context / "server.py").write_text(SERVER)
    (context / "Dockerfile").write_text(DOCKERFILE)
    built = {}
    for mode in FAILURES:
        reference = f"{REPOSITORY}:{mode}"
        # Without the run's label, as the real service image: the smoke container gets it
        # from the suite (CONTAINER_LABELS), which is what the test checks.
        subprocess.run(
            [docker_client_path(), "build", "--quiet", "--build-arg", f"MODE={mode}",
             "--tag", reference, str(context)],
            check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        built[mode] = reference
    yield built
    remove_images(f"{REPOSITORY}:")


@pytest.fixture(scope="module")
def project(new_project, training) -> Project:
    """The model and the sample image, for the answer the smoke test expects."""
    project = new_project("smoke-failures", None, trained=training)
    project.invoke("pull")
    return project


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failing_service_fails_the_smoke_test_in_one_line(project, images, failure):
    message, env = FAILURES[failure]
    since = time.time()
    done = project.invoke("smoke", "--image", images[failure], check=False, env=env)
    assert done.returncode != 0
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: "), done.stdout + done.stderr
    assert message in error[0], error[0]
    assert "Traceback" not in done.stderr
    left = docker("ps", "--all", "--quiet", "--filter", f"ancestor={images[failure]}")
    assert not left.stdout.strip(), "the smoke test left its container behind"
    # Had the step been killed, its container would have stayed: it carries the run's label
    # (the sweep of dead runs and the watchdog find it) and the suite's own.
    (labels,) = runs.created_labels(docker_client_path(), images[failure], since)
    assert labels.get(runs.LABEL) == runs.current(), labels
    assert labels.get(CONTAINER_LABEL) == "smoke", labels
