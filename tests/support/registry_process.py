"""Registries for the tests: Debian's Distribution binary, a password, a port the OS assigns.

The suite's embedded registry (:mod:`cicd.local_registry`) has no password and the port of
the settings. The tests need basic auth (the per-run sentinel password must leak nowhere) and
ports no other test run holds, so :func:`start` runs the binary with local_registry's own
pieces (private state, config, pid file; :func:`stop` is its stop) plus what only tests need:

* basic auth (local_registry's htpasswd file) on every test registry;
* port 0: the binary binds a port the OS assigns and keeps it (no probe-then-bind race) and
  logs it; ``<state>/run-PORT`` then links to its run directory, where local_registry looks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from cicd import local_registry
from cicd.local_registry import RegistryProcess
from cicd.registry import Credentials
from cicd.shell import Runner
from tests.support import runs

HOST = "127.0.0.1"
TIMEOUT = 15.0


def start(state: Path, credentials: tuple[str, str] | None = None) -> RegistryProcess:
    """A registry storing in ``state`` on a port the OS assigns; basic auth with
    ``credentials=(user, password)``."""
    runner = Runner()
    local_registry.private_dir(state)
    local_registry.private_dir(state / "data")
    run_dir = Path(tempfile.mkdtemp(prefix="run-auto-", dir=state))  # 0700, named by port below
    config = local_registry.binary_config(HOST, 0, state / "data")
    if credentials is not None:
        htpasswd = run_dir / "htpasswd"
        local_registry.write_htpasswd(runner, htpasswd, Credentials(*credentials))
        config["auth"] = {"htpasswd": {"realm": "celestial-bodies", "path": str(htpasswd)}}
    pid = local_registry.serve(runner, run_dir, config)
    log = run_dir / "registry.log"
    try:
        port = local_registry.logged_port(log, HOST, TIMEOUT, alive=lambda: _alive(pid))
        _link(state / f"run-{port}", run_dir)
        url = f"http://{HOST}:{port}"
        local_registry.wait_until_up(url, TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    # The images named after it carry no run marker: a killed run's are found by its address.
    runs.record_registry(f"{HOST}:{port}")
    runner.echo(f"test registry: started at {url}")
    return RegistryProcess(HOST, port, "binary", run_dir, pid=pid)


def _alive(pid: int) -> bool:
    return local_registry._pid_alive(pid)


def stop(state: Path, port: int) -> bool:
    """Stop the registry started on ``port`` with state directory ``state``; True if it ran."""
    stopped = local_registry.stop_port(Runner(), port, state)
    runs.forget_registry(f"{HOST}:{port}")
    return stopped


def _link(link: Path, run_dir: Path) -> None:
    """``run-PORT`` -> the run directory. One left by a registry that is gone is replaced: the
    OS does not give a port that is still held."""
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(run_dir.name)
