"""Smoke test of an image: run it, wait until ready, ask one prediction, compare with the model.

The container listens on 127.0.0.1 only, on a host port Docker assigns (and keeps for the
container's life: no probe-then-bind race with other jobs), and is always removed, failure
included. An image that fails here is never pushed.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cicd.docker import docker_call, whales
from cicd.errors import SuiteError
from cicd.settings import Settings
from cicd.shell import Runner

if TYPE_CHECKING:
    from cicd.context import Run

SERVICE_PORT = 3000
PROBABILITY_TOLERANCE = 1e-4


class SmokeError(SuiteError):
    """The image did not answer as the model does: it must not be published."""


def smoke_test(run: Run, image: str | None = None) -> dict[str, Any] | None:
    """Run ``image`` (default: this commit's), POST the sample image, and check that the
    answer is the local model's."""
    from cicd import dvc
    from cicd.image import target

    runner, settings, client = run.runner, run.settings, run.docker
    image = image or target(run).references[0]
    dvc.pull_if_missing(run, settings.smoke_image)
    expected = expected_answer(run)
    sample = settings.path(settings.smoke_image)
    if not sample.is_file() and not runner.dry:
        raise SuiteError(
            f"no sample image at {sample} for the smoke test: run `invoke repro` (it generates "
            "the data set) or `invoke pull`, or set suite.smoke_image in invoke.yaml"
        )
    docker = whales(client)
    publish = f"127.0.0.1::{SERVICE_PORT}"  # empty host port: Docker assigns one
    # A name of our own: the container can be removed even when the step is interrupted
    # before `docker run` has told us its id.
    name = f"smoke-{uuid.uuid4().hex[:12]}"
    command = [client.path, "run", "--detach", "--name", name, "--publish", publish, image]
    container = None
    try:
        container = docker_call(
            runner,
            command,
            lambda: docker.run(image, detach=True, name=name, publish=[(publish,)]),
            hint="build the image first: `invoke build`",
        )
        url = f"http://127.0.0.1:{_host_port(container) if container is not None else '<port>'}"
        runner.call(["GET", f"{url}/readyz"], lambda: _wait_ready(url, container, settings))
        answer = runner.call(
            ["POST", f"{url}/predict", f"image=@{sample}"], lambda: _post(url, sample)
        )
        if runner.dry:
            return None
        check_answer(answer, expected)
        runner.detail(
            f"smoke test passed: {image} predicts {answer['prediction']!r} for {sample.name}"
        )
        return answer
    except SmokeError:
        # The error is one line; what the service said is above it, before the container goes.
        if container is not None:
            runner.echo(f"the container's last lines:\n{_logs_tail(container)}")
        raise
    finally:
        _remove(runner, docker, [client.path, "rm", "--force", name], name)


def expected_answer(run: Run) -> dict | None:
    """What the local model answers for the smoke test's sample image."""
    if run.dry:
        return None
    from celestial.classifier import Classifier

    settings = run.settings
    classifier = Classifier.from_bentomodel(settings.path(settings.bentomodel))
    return classifier.predict_bytes(settings.path(settings.smoke_image).read_bytes())


def _remove(runner: Runner, docker: Any, command: list[str], name: str) -> None:
    """Remove the smoke container, if it was created; this never hides the step's error."""
    from python_on_whales.exceptions import DockerException

    def remove() -> None:
        with contextlib.suppress(DockerException):  # never created: nothing to remove
            docker.container.remove(name, force=True)

    runner.call(command, remove, quiet=True)


def check_answer(answer: Any, expected: Mapping[str, Any] | None) -> None:
    """The answer has the service's shape and, when known, the local model's prediction."""
    if not isinstance(answer, dict) or not isinstance(answer.get("probabilities"), dict):
        raise SmokeError(
            f"the service answered {str(answer)[:200]!r}: expected prediction and probabilities"
        )
    probabilities = answer["probabilities"]
    if answer.get("prediction") not in probabilities:
        raise SmokeError(f"the prediction {answer.get('prediction')!r} is not one of the labels")
    if abs(sum(probabilities.values()) - 1.0) > 1e-3:
        raise SmokeError("the probabilities do not sum to 1")
    if expected is None:
        return
    if answer["prediction"] != expected["prediction"]:
        raise SmokeError(
            f"the image predicts {answer['prediction']!r} but the local model predicts "
            f"{expected['prediction']!r}: the image does not serve this model"
        )
    for label, p in expected["probabilities"].items():
        if abs(probabilities.get(label, -1.0) - p) > PROBABILITY_TOLERANCE:
            raise SmokeError(f"probability of {label!r} differs from the local model's")


def _host_port(container: Any) -> int:
    """The port of 127.0.0.1 that Docker mapped to the service's port."""
    # python-on-whales leaves the mapping as Docker's JSON: {"3000/tcp": [{"HostPort": ...}]}
    for binding in (container.network_settings.ports or {}).get(f"{SERVICE_PORT}/tcp") or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    # No mapping: the container has already stopped (Docker drops the ports of a dead one).
    container.reload()
    raise _exited(container)


def _exited(container: Any) -> SmokeError:
    return SmokeError(
        f"the container exited with code {container.state.exit_code} before it was ready: "
        "its last lines, above, say why"
    )


def _wait_ready(url: str, container: Any, settings: Settings) -> None:
    deadline = time.monotonic() + settings.smoke_timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        container.reload()
        if not container.state.running:
            raise _exited(container)
        time.sleep(0.5)
    raise SmokeError(
        f"the container was not ready within {settings.smoke_timeout:g} s: its last lines are "
        "above; if it is only slow, raise suite.smoke_timeout in invoke.yaml"
    )


def _logs_tail(container: Any, lines: int = 15) -> str:
    try:
        text = container.logs()
    except Exception:  # the logs are a courtesy; the real error is raised by the caller
        text = ""
    return "\n".join(str(text).splitlines()[-lines:])


def _post(url: str, sample: Path) -> Any:
    boundary = uuid.uuid4().hex
    content_type = mimetypes.guess_type(sample.name)[0] or "application/octet-stream"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{sample.name}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        + sample.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise SmokeError(
            f"POST /predict answered HTTP {error.code} ({error.read()[:200]!r}): the image's "
            "service fails on the sample image; its last lines are above"
        ) from None
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
        raise SmokeError(f"POST /predict failed: {error}") from None
