"""A run's marker names its controller process by pid and start time (tests/support/runs.py):
alive while that very process runs, dead once it has ended, and a pid given to another
process since does not revive it."""

from __future__ import annotations

import os
import subprocess

from tests.support import runs


def test_the_marker_of_this_run_is_alive():
    assert runs.alive(runs.current())
    assert runs.current() == os.environ[runs.VARIABLE]  # set by conftest.py, inherited


def test_the_marker_of_an_ended_process_is_dead():
    child = subprocess.Popen(["sleep", "30"])
    marker = f"{child.pid}-{runs.process_start(child.pid)}"
    assert runs.alive(marker)
    child.kill()
    child.wait()
    assert not runs.alive(marker)


def test_a_reused_pid_does_not_revive_a_run():
    start = runs.process_start(os.getpid())
    assert start is not None
    assert not runs.alive(f"{os.getpid()}-{int(start) - 1}")  # same pid, another process
    assert not runs.alive("not-a-marker") and not runs.alive("")


def test_images_of_a_run_are_named_in_its_namespace():
    marker = runs.current()
    assert runs.image("smoke") == f"model-cicd-tests-run-{marker}/smoke"
    assert runs.image("x", host="registry.invalid") == (
        f"registry.invalid/model-cicd-tests-run-{marker}/x"
    )
    assert runs.label_args() == ["--label", f"model-cicd-tests.run={marker}"]


def test_a_run_labels_the_containers_the_suite_starts():
    # The suite's setting (src/cicd/settings.py), inherited by every command of the run.
    assert os.environ[runs.CONTAINER_LABELS] == f"model-cicd-tests.run={runs.current()}"
