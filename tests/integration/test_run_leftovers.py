"""What a test run leaves in the Docker engine is found and removed (tests/support/runs.py).

* A run that ends with an image or a container of its own still in the engine fails, naming
  each, and removes them (a teardown whose filter never matched left three images per run,
  silently).
* A killed run's containers go: its watchdog removes them when its controller dies, and the
  next run's start removes those of every dead run (the watchdog may have been killed too),
  and their images, while a container or an image of a run that still runs is kept.
* So do the images a killed run named after a registry it started (``127.0.0.1:PORT/...``,
  no marker in the name): the run recorded the registry's address.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import runs
from tests.support.project import ROOT, docker, docker_client_path, remove_images
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker]

BASE = "python:3.11-slim"  # on every engine of this project's kind (scripts/bootstrap)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}


def exists(kind: str, name: str) -> bool:
    """Whether the engine has the container or image ``name``; any other answer (no engine)
    fails the test instead of passing for "gone"."""
    done = docker(kind, "inspect", name, check=False)
    assert done.returncode == 0 or "no such" in done.stderr.lower(), done.stderr
    return done.returncode == 0


def container_exists(cid: str) -> bool:
    return exists("container", cid)


def image_exists(reference: str) -> bool:
    return exists("image", reference)


def labelled_sleeper(marker: str) -> str:
    """A container that sleeps, labelled as run ``marker``'s: its id."""
    started = docker(
        "run", "--detach", "--network", "none", "--label", f"{runs.LABEL}={marker}",
        "--entrypoint", "sleep", BASE, "600",
    )  # fmt: skip
    return started.stdout.strip()


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Ids of the containers a test made; removed whatever the test's outcome."""
    made: list[str] = []
    yield made
    if made:
        docker("rm", "--force", *made, check=False)


def test_remove_images_takes_a_repository_with_its_colon(tmp_path):
    # test_smoke_failures.py removed `NAME:` and matched nothing: a repository has no colon.
    repository = runs.image("remove-images-probe")
    for tag in ("a", "b"):
        docker("tag", BASE, f"{repository}:{tag}")
    remove_images(f"{repository}:")
    assert not image_exists(f"{repository}:a") and not image_exists(f"{repository}:b")


def test_the_images_of_a_run_are_found_by_its_marker():
    marker, other = "999999999-1", "999999999-12"  # no such runs: nothing else is named so
    ours = [
        f"model-cicd-tests-run-{marker}/smoke:crashes",
        f"registry.invalid/model-cicd-tests-run-{marker}/store-trust/classifier:latest",
    ]
    theirs = f"model-cicd-tests-run-{other}/smoke:crashes"
    for reference in (*ours, theirs):
        docker("tag", BASE, reference)
    try:
        left = runs.leftovers(docker_client_path(), marker)
        assert sorted(left.images) == sorted(ours)
        runs.remove(docker_client_path(), left)
        assert not any(image_exists(reference) for reference in ours)
        assert image_exists(theirs)
    finally:
        docker("rmi", "--force", *ours, theirs, check=False)


# A run that leaves an image and a container of its own: its session must fail, naming both.
LEAVING = f"""
import subprocess
from tests.support import runs

def test_leaves_an_image():
    subprocess.run(["{docker_client_path()}", "tag", "{BASE}", runs.image("left-behind") + ":x"],
                   check=True)

def test_leaves_a_container():
    subprocess.run(["{docker_client_path()}", "run", "--detach", "--network", "none",
                    *runs.label_args(), "--entrypoint", "sleep", "{BASE}", "600"], check=True)
"""


def test_a_run_that_leaves_an_image_or_a_container_fails_naming_them(tmp_path):
    (tmp_path / "test_leaving.py").write_text(LEAVING)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p", "tests.conftest",
         "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path / "test_leaving.py")],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "2 passed" in output, output
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    image = re.search(r"LEFT IN THE ENGINE .*: image (\S+/left-behind:x)$", output, re.M)
    container = re.search(r"LEFT IN THE ENGINE .*: container (\w+) ", output, re.M)
    assert image and container, output
    assert not image_exists(image.group(1)), "the run's image is still there"
    assert not container_exists(container.group(1)), "the run's container is still there"


# A test process: a run of its own (optionally with the reaper's watchdog), a labelled
# container, its id printed; then it waits to be killed.
TEST_RUN = """
import subprocess, sys, time
from tests.support import reaper, runs
marker = runs.begin()
if sys.argv[2] == "armed":
    reaper.arm((sys.argv[1], f"{runs.LABEL}={marker}"))
started = subprocess.run(
    [sys.argv[1], "run", "--detach", "--network", "none", *runs.label_args(),
     "--entrypoint", "sleep", "python:3.11-slim", "600"],
    capture_output=True, text=True, check=True,
)
print(started.stdout.strip(), flush=True)
time.sleep(3600)
"""


def killed_run(armed: bool) -> str:
    """A test run that started a labelled container, then was SIGKILLed: the container's id."""
    env = {key: value for key, value in ENV.items() if key != runs.VARIABLE}
    process = subprocess.Popen(
        [sys.executable, "-c", TEST_RUN, docker_client_path(), "armed" if armed else "bare"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    cid = process.stdout.readline().strip()
    assert cid and container_exists(cid), "the run started no container"
    process.send_signal(signal.SIGKILL)  # no finally, no atexit, no fixture teardown
    assert process.wait(timeout=30) == -signal.SIGKILL
    return cid


def test_the_containers_of_a_dead_run_are_removed_and_a_live_runs_kept(containers):
    dead = killed_run(armed=False)  # no watchdog: only the next run's start removes it
    containers.append(dead)
    live_process = subprocess.Popen(["sleep", "600"])  # a run that still runs
    try:
        marker = f"{live_process.pid}-{runs.process_start(live_process.pid)}"
        live = labelled_sleeper(marker)
        containers.append(live)
        assert container_exists(dead), "removed before the sweep: the test proves nothing"
        removed = runs.remove_containers_of_dead_runs(docker_client_path())
        assert any(line.startswith(dead[:12]) for line in removed), removed
        assert not container_exists(dead)
        assert container_exists(live), "a container of a live run was removed"
    finally:
        live_process.kill()
        live_process.wait()


def test_the_images_of_a_dead_run_are_removed_and_a_live_runs_kept():
    ended = subprocess.Popen(["sleep", "600"])
    live_process = subprocess.Popen(["sleep", "600"])  # a run that still runs
    markers = [f"{p.pid}-{runs.process_start(p.pid)}" for p in (ended, live_process)]
    dead, live = [f"model-cicd-tests-run-{marker}/probe:x" for marker in markers]
    ended.kill()
    ended.wait()
    try:
        for reference in (dead, live):
            docker("tag", BASE, reference)
        removed = runs.remove_images_of_dead_runs(docker_client_path())
        assert dead in removed and live not in removed, removed
        assert not image_exists(dead)
        assert image_exists(live), "an image of a live run was removed"
    finally:
        live_process.kill()
        live_process.wait()
        docker("rmi", "--force", dead, live, check=False)


def test_a_killed_runs_watchdog_removes_its_containers(containers):
    cid = killed_run(armed=True)
    containers.append(cid)
    eventually(lambda: not container_exists(cid), "the killed run's container removed")


# A test process: a run of its own, armed, that starts a test registry and tags an image
# after its address (as a publish does), prints the reference; then it waits to be killed.
REGISTRY_RUN = f"""
import subprocess, sys, tempfile, time
from pathlib import Path
from tests.support import reaper, registry_process, runs
runs.begin()
reaper.arm()  # the registry dies with this process, as a killed run's does
started = registry_process.start(Path(tempfile.mkdtemp()))
reference = f"{{started.host}}:{{started.port}}/run-leftovers-probe:x"
subprocess.run([sys.argv[1], "tag", "{BASE}", reference], check=True)
print("reference:", reference, flush=True)
time.sleep(3600)
"""


def test_the_images_named_after_a_dead_runs_registry_are_removed(tmp_path):
    env = {key: value for key, value in ENV.items() if key != runs.VARIABLE}
    process = subprocess.Popen(
        [sys.executable, "-c", REGISTRY_RUN, docker_client_path()],
        stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert process.stdout is not None
    reference = ""
    for line in process.stdout:  # after the registry's own "started" line
        if line.startswith("reference: "):
            reference = line.split()[1]
            break
    try:
        assert reference and image_exists(reference), "the run tagged no image"
        process.send_signal(signal.SIGKILL)  # no teardown: stop_registry never runs
        assert process.wait(timeout=30) == -signal.SIGKILL
        address = reference.split("/")[0]
        eventually(lambda: not runs.listening(address), "the killed run's registry stopped")
        assert image_exists(reference), "removed before the sweep: the test proves nothing"
        removed = runs.remove_images_of_dead_runs(docker_client_path())
        assert reference in removed, removed
        assert not image_exists(reference)
    finally:
        process.kill()
        process.wait()
        if reference:
            docker("rmi", "--force", reference, check=False)


def test_a_registry_address_of_a_live_run_or_answering_again_is_left_alone():
    ended = subprocess.Popen(["sleep", "600"])
    live_process = subprocess.Popen(["sleep", "600"])  # a run that still runs
    dead, live = [f"{p.pid}-{runs.process_start(p.pid)}" for p in (ended, live_process)]
    ended.kill()
    ended.wait()
    references = []
    with socket.socket() as answering, socket.socket() as silent:
        answering.bind(("127.0.0.1", 0))
        answering.listen()  # the dead run's port, given to another registry since
        silent.bind(("127.0.0.1", 0))  # the live run's registry: not answering right now
        addresses = {
            dead: f"127.0.0.1:{answering.getsockname()[1]}",
            live: f"127.0.0.1:{silent.getsockname()[1]}",
        }
        try:
            for marker, address in addresses.items():
                (runs.RECORDS / marker).mkdir(parents=True)
                (runs.RECORDS / marker / address).touch()
                references.append(f"{address}/run-leftovers-probe:x")
                docker("tag", BASE, references[-1])
            removed = runs.remove_images_of_dead_runs(docker_client_path())
            assert not set(references) & set(removed), removed
            assert all(image_exists(reference) for reference in references)
            assert not (runs.RECORDS / dead).exists(), "the dead run's record stays"
            assert (runs.RECORDS / live / addresses[live]).exists(), "a live run's record went"
        finally:
            live_process.kill()
            live_process.wait()
            for marker in addresses:
                shutil.rmtree(runs.RECORDS / marker, ignore_errors=True)
            docker("rmi", "--force", *references, check=False)


def test_a_runs_end_removes_its_registry_records_and_the_images_no_registry_serves():
    """A registry a test stopped through the suite (`invoke registry --stop`) left its record:
    the run's end removes it, and the images named after it, unless something answers there."""
    marker = f"{os.getpid()}-{runs.process_start(os.getpid())}-end"  # not this run's records
    references = []
    with socket.socket() as answering, socket.socket() as stopped:
        answering.bind(("127.0.0.1", 0))
        answering.listen()
        stopped.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers there
        addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in (answering, stopped)]
        try:
            (runs.RECORDS / marker).mkdir(parents=True)
            for address in addresses:
                (runs.RECORDS / marker / address).touch()
                references.append(f"{address}/run-leftovers-probe:end")
                docker("tag", BASE, references[-1])
            removed = runs.release_registries(docker_client_path(), marker)
            assert removed == [references[1]], removed
            assert image_exists(references[0]) and not image_exists(references[1])
            assert not (runs.RECORDS / marker).exists(), "the run's records stay"
        finally:
            shutil.rmtree(runs.RECORDS / marker, ignore_errors=True)
            docker("rmi", "--force", *references, check=False)
