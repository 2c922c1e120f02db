"""A step that hangs is stopped at its deadline; a cancelled step (SIGTERM) leaves nothing running.

The DVC remote is a TCP port that accepts connections and never answers, so `invoke pull`
hangs in `dvc pull`, as it would behind a dead proxy.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from cicd.labels import CONTAINER_LABEL
from tests.support import runs
from tests.support.project import Project, docker, docker_client_path, remove_images
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def silent_remote() -> Iterator[str]:
    """An HTTP address whose connections are accepted (by the kernel) and never answered."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/dvc-store"


@pytest.fixture(scope="module")
def project(new_project, silent_remote) -> Project:
    project = new_project("interrupts", None)
    project.run("dvc", "remote", "add", "--local", "--force", "--default", "silent", silent_remote)
    return project


def survivors(project: Project, besides: int | None = None) -> list[str]:
    """Processes still running in the project's directory (dvc and its workers), other than
    the step ``besides`` itself."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status", "cwd"]):
        if process.info["pid"] == besides or process.info["status"] == "zombie":
            continue
        if process.info["cwd"] == str(project.root):
            found.append(" ".join(process.info["cmdline"] or []))
    return found


def test_a_hanging_command_is_stopped_at_its_deadline(project):
    # Not timed: the message says the deadline stopped it, and nothing of it is left.
    done = project.invoke("pull", check=False, env={"INVOKE_SUITE_COMMAND_TIMEOUT": "5"})
    assert done.returncode != 0
    assert "did not finish within 5 s and was stopped (suite.command_timeout" in done.stderr
    assert "Traceback" not in done.stderr
    eventually(lambda: not survivors(project), "dvc and its workers stopped")
    assert "$ " in done.stdout and "dvc pull" in done.stdout  # it did start


def test_sigterm_stops_the_step_and_what_it_started(project):
    step = subprocess.Popen(
        [sys.executable, "-m", "invoke", "pull"], cwd=project.root, env=project.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert "dvc pull" in step.stdout.readline()
    deadline = time.monotonic() + 60
    while not survivors(project, besides=step.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # dvc is running and hanging on the remote
    assert survivors(project, besides=step.pid), "dvc pull never started"
    step.send_signal(signal.SIGTERM)
    assert step.wait(timeout=60) == 130
    assert "error: interrupted: stopped and cleaned up" in step.stderr.read()
    eventually(lambda: not survivors(project), "dvc and its workers stopped")


SLEEPER = f"{runs.image('interrupts-sleeper')}:latest"


@pytest.fixture(scope="module")
def trained(new_project, training) -> Iterator[Project]:
    """A project with its data and model (pulled from the run's trained remote), and an image
    that starts a container that never gets ready, as a hanging service would."""
    project = new_project("interrupts-trained", None, trained=training)
    project.invoke("pull")
    # Without the run's label, as the real service image: the smoke container gets it from
    # the suite (CONTAINER_LABELS; test_a_killed_smoke_steps_container_goes_with_its_run).
    subprocess.run(
        [docker_client_path(), "build", "--quiet", "--tag", SLEEPER, "-"],
        input='FROM python:3.11-slim\nCMD ["sleep", "600"]\n', text=True, check=True,
        capture_output=True,
    )  # fmt: skip
    yield project
    remove_images(SLEEPER)


def containers_of(image: str) -> list[str]:
    listed = docker("ps", "--all", "--quiet", "--filter", f"ancestor={image}")
    return listed.stdout.split()


def interrupt_when(step: subprocess.Popen, ready, what: str) -> tuple[int, str]:
    """Wait until ``ready()``, SIGTERM the step, return its exit code and stderr."""
    deadline = time.monotonic() + 120
    while not ready():
        assert step.poll() is None, f"the step ended before {what}: {step.communicate()}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.3)
    step.send_signal(signal.SIGTERM)
    code = step.wait(timeout=60)
    return code, step.stderr.read()


@pytest.mark.docker
def test_sigterm_during_the_smoke_test_removes_its_container(trained):
    env = {**trained.env, "INVOKE_SUITE_SMOKE_TIMEOUT": "300"}
    step = subprocess.Popen(
        [sys.executable, "-m", "invoke", "smoke", "--image", SLEEPER], cwd=trained.root,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    code, stderr = interrupt_when(step, lambda: containers_of(SLEEPER), "the smoke container")
    assert code == 130 and "interrupted: stopped and cleaned up" in stderr
    assert containers_of(SLEEPER) == []


@pytest.mark.docker
def test_a_killed_smoke_steps_container_goes_with_its_run(trained):
    # SIGKILL: the step cleans nothing up, its container stays. It carries its run's label
    # (the suite's CONTAINER_LABELS setting; the image has none), so the sweep of dead runs
    # removes it once the run is dead, and not before.
    run = subprocess.Popen(["sleep", "600"])  # stands for the run's controller
    marker = f"{run.pid}-{runs.process_start(run.pid)}"
    env = {
        **trained.env, "INVOKE_SUITE_SMOKE_TIMEOUT": "300",
        runs.CONTAINER_LABELS: f"{runs.LABEL}={marker}",
    }  # fmt: skip
    step = subprocess.Popen(
        [sys.executable, "-m", "invoke", "smoke", "--image", SLEEPER], cwd=trained.root,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        eventually(lambda: containers_of(SLEEPER), "the smoke container", timeout=120)
        step.kill()
        step.wait(timeout=60)
        (cid,) = containers_of(SLEEPER)  # nothing removed it
        labels = docker("inspect", "--format", "{{json .Config.Labels}}", cid).stdout
        assert json.loads(labels)[CONTAINER_LABEL] == "smoke", labels
        client = docker_client_path()
        assert not any(
            cid.startswith(line.split()[0]) for line in runs.remove_containers_of_dead_runs(client)
        ), "its run still runs"
        assert containers_of(SLEEPER) == [cid]
        run.kill()
        run.wait()
        removed = runs.remove_containers_of_dead_runs(client)
        assert any(cid.startswith(line.split()[0]) for line in removed), removed
        assert containers_of(SLEEPER) == []
    finally:
        step.kill()
        run.kill()
        run.wait()
        if containers_of(SLEEPER):
            docker("rm", "--force", *containers_of(SLEEPER), check=False)


@pytest.mark.docker
def test_sigterm_during_the_smoke_test_stops_the_sbom_draft_too(trained, tmp_path):
    # The publish session's smoke step drafts the SBOM of the image under test meanwhile
    # (cicd.attestation_draft): the interruption stops both, and neither leaves a container
    # or the SBOM's scratch directory (sbom-*, made in the step's TMPDIR) behind.
    # Named after a registry nobody serves (port 9, discard), in this run's namespace: two
    # runs never share the name, and a killed run's image is found by its marker.
    registry = runs.image("interrupts", host="127.0.0.1:9")
    image = f"{registry}/celestial-bodies-classifier:{trained.head()}"
    docker("tag", SLEEPER, image)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **trained.env, "INVOKE_SUITE_SMOKE_TIMEOUT": "300",
        "CONTAINER_REGISTRY_HOST": registry, "TMPDIR": str(scratch),
    }  # fmt: skip
    try:
        step = subprocess.Popen(
            [sys.executable, "-m", "invoke", "-e", "smoke", "--draft-attestations"],
            cwd=trained.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        smoke_started = lambda: docker(  # noqa: E731
            "ps", "--quiet", "--filter", f"ancestor={SLEEPER}", "--filter", "name=smoke-"
        ).stdout.strip()
        code, stderr = interrupt_when(step, smoke_started, "the smoke container")
        stdout = step.stdout.read()
    finally:
        remove_images(f"{registry}/")
    assert code == 130 and "interrupted: stopped and cleaned up" in stderr, stderr
    assert "Traceback" not in stderr
    # The draft's first command: the SBOM's inspection of the image (no --format, unlike
    # the smoke step's own look-up of the image ID).
    drafted = rf"^\$ \S*docker image inspect {re.escape(image)}$"
    assert re.search(drafted, stdout, re.M), f"the SBOM draft did not start: {stdout}"
    assert containers_of(SLEEPER) == []
    # (The smoke step's in-process model load leaves a 51-byte `.ses` file in TMPDIR, with
    # or without the draft: not the draft's.)
    assert list(scratch.glob("sbom-*")) == []


@pytest.mark.docker
def test_sigterm_during_the_push_leaves_no_docker_config(trained, tmp_path):
    # The registry is the silent port: the push hangs. The throwaway Docker config directory
    # (where a login would be) is made in the step's TMPDIR, which must end up empty.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        # In this run's namespace: a killed run's images are found by its marker.
        registry = runs.image("interrupts", host=f"127.0.0.1:{silent.getsockname()[1]}")
        sha = trained.head()
        for tag in (sha, "latest"):
            docker("tag", SLEEPER, f"{registry}/celestial-bodies-classifier:{tag}")
        scratch = tmp_path / "tmp"
        scratch.mkdir()
        env = {**trained.env, "CONTAINER_REGISTRY_HOST": registry, "TMPDIR": str(scratch)}
        step = subprocess.Popen(
            [sys.executable, "-m", "invoke", "push"], cwd=trained.root, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            code, stderr = interrupt_when(
                step, lambda: any(scratch.glob("docker-config-*")), "the docker config"
            )
        finally:
            remove_images(f"{registry}/")
    assert code == 130 and "interrupted: stopped and cleaned up" in stderr
    assert list(scratch.iterdir()) == []
