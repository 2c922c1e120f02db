"""A killed test process leaves nothing running (tests/support/reaper.py): its watchdog kills
what it started, grandchildren in their own session included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for a test process: arms the reaper, starts a server in its own session (as
# Runner.spawn starts the registry), says the server's pid, then waits to be killed.
TEST_PROCESS = """
import os, subprocess, sys, time
from tests.support import reaper
reaper.arm()
server = subprocess.Popen(["sleep", "3600"], start_new_session=True)
print(server.pid, flush=True)
if len(sys.argv) > 1:  # a shared daemon started by this test process (named like dockerd)
    daemon = subprocess.Popen([sys.argv[1], "3600"], start_new_session=True)
    print(daemon.pid, flush=True)
    print(os.environ[reaper.VARIABLE], flush=True)  # the token its children carry
time.sleep(3600)
"""


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_what_a_killed_test_process_started_is_killed_too():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CELESTIAL_TEST_REAPER", None)
    process = subprocess.Popen(
        [sys.executable, "-c", TEST_PROCESS], stdout=subprocess.PIPE, text=True, env=env
    )
    server = int(process.stdout.readline())
    assert running(server)
    process.send_signal(signal.SIGKILL)  # no finally, no atexit runs
    assert process.wait(timeout=30) == -signal.SIGKILL
    eventually(lambda: not running(server), "the killed process's server stopped")


def test_a_docker_engine_a_test_process_started_outlives_it(tmp_path):
    # The engine serves every run on the machine: a test that started it (bootstrap, the
    # engine being down) must not take it down with it. A copy of `sleep` named dockerd.
    dockerd = tmp_path / "dockerd"
    dockerd.write_bytes(Path("/bin/sleep").read_bytes())
    dockerd.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CELESTIAL_TEST_REAPER", None)
    process = subprocess.Popen(
        [sys.executable, "-c", TEST_PROCESS, str(dockerd)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    daemon = None
    try:
        server, daemon = int(process.stdout.readline()), int(process.stdout.readline())
        token = process.stdout.readline().strip()
        watchdogs = [
            found
            for found in psutil.process_iter(["cmdline"])
            if token in (found.info["cmdline"] or [])
        ]
        assert watchdogs
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        _, alive = psutil.wait_procs(watchdogs, timeout=60)  # its sweeps are over
        assert not alive
        assert not running(server)
        assert running(daemon)  # the same sweeps spared it
    finally:
        process.kill()  # (if a line above failed first) its watchdog stops the server
        process.wait(timeout=30)
        if daemon is not None and running(daemon):
            os.kill(daemon, signal.SIGKILL)


def test_the_token_is_this_process_own():
    from tests.support import reaper

    token = os.environ[reaper.VARIABLE]  # armed by conftest.py
    assert token.endswith(f"-{os.getpid()}")
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in reaper.marked(token)  # children carry it
    finally:
        child.kill()
        child.wait()
