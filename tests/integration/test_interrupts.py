"""A step that hangs is stopped at its deadline; a cancelled step (SIGTERM) leaves nothing running.

The DVC remote is a TCP port that accepts connections and never answers, so `invoke pull`
hangs in `dvc pull`, as it would behind a dead proxy.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.support.project import Project

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


def survivors(project: Project) -> list[str]:
    """Processes still running in the project's directory (dvc and its workers)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status", "cwd"]):
        if process.info["cwd"] == str(project.root) and process.info["status"] != "zombie":
            found.append(" ".join(process.info["cmdline"] or []))
    return found


def test_a_hanging_command_is_stopped_at_its_deadline(project):
    started = time.monotonic()
    done = project.invoke("pull", check=False, env={"INVOKE_SUITE_COMMAND_TIMEOUT": "5"})
    assert done.returncode != 0
    assert "did not finish within 5 s and was stopped (suite.command_timeout" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 60
    assert not survivors(project)
    assert "$ " in done.stdout and "dvc pull" in done.stdout  # it did start


def test_sigterm_stops_the_step_and_what_it_started(project):
    step = subprocess.Popen(
        [sys.executable, "-m", "invoke", "pull"], cwd=project.root, env=project.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert "dvc pull" in step.stdout.readline()
    deadline = time.monotonic() + 60
    while not survivors(project) and time.monotonic() < deadline:
        time.sleep(0.2)  # dvc is running and hanging on the remote
    assert survivors(project), "dvc pull never started"
    step.send_signal(signal.SIGTERM)
    assert step.wait(timeout=60) == 130
    assert "error: interrupted: stopped and cleaned up" in step.stderr.read()
    time.sleep(0.5)
    assert not survivors(project)
