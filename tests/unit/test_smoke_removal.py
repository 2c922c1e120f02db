"""A passed smoke test's container is removed in the background: the step does not wait for
`docker rm --force` (0.2-1 s here), the process does, before it exits.

A shell command stands for `docker rm`: what is tested is the removal's life (started, not
waited for, in its own session, waited for at the end, a failure said in one line), not
Docker; tests/integration/test_publish.py checks that a passed `invoke smoke` leaves no
container behind, and tests/integration/test_smoke_failures.py the failures' removal.
"""

from __future__ import annotations

import os
import time

import pytest

from cicd import smoke
from cicd.shell import Runner


@pytest.fixture(autouse=True)
def nothing_pending():
    smoke.wait_removed()  # none left over from another test
    yield
    smoke.wait_removed()


def test_the_removal_is_started_and_not_waited_for_until_the_end(tmp_path):
    done = tmp_path / "removed"
    started = time.monotonic()
    smoke._remove_in_background(Runner(), ["sh", "-c", f"sleep 0.5; touch {done}"])
    assert time.monotonic() - started < 0.4, "the step waited for the removal"
    assert not done.exists()
    smoke.wait_removed()
    assert done.exists(), "the process went on without waiting for the removal"


def test_the_removal_has_its_own_session_so_a_ctrl_c_of_the_next_step_spares_it():
    smoke._remove_in_background(Runner(), ["sleep", "0.3"])
    (_, process), *_ = smoke._REMOVING
    assert os.getsid(process.pid) != os.getsid(0)


def test_a_removal_that_fails_is_one_line_with_the_command_to_run(capsys):
    command = ["sh", "-c", "echo 'Error response from daemon: engine stopped' >&2; exit 1"]
    smoke._remove_in_background(Runner(), command)
    smoke.wait_removed()
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "engine stopped" in said
    assert "the smoke container was not removed" in said and "run `sh -c" in said


def test_a_container_already_gone_is_not_a_warning(capsys):
    gone = "echo 'Error: No such container: smoke-0123456789ab' >&2; exit 1"
    smoke._remove_in_background(Runner(), ["sh", "-c", gone])
    smoke.wait_removed()
    assert capsys.readouterr().err == ""


def test_the_removal_gets_no_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("CONTAINER_REGISTRY_PASSWORD", "hunter2-registry")
    seen = tmp_path / "env"
    smoke._remove_in_background(Runner(), ["sh", "-c", f"env > {seen}"])
    smoke.wait_removed()
    assert "hunter2-registry" not in seen.read_text()
