"""Background processes die with the test process that started them, even when it is killed.

Fixtures stop their registries, moto servers and services in ``finally`` blocks, but a killed
test process (``kill -9``, an xdist worker crash, the CI job's timeout) runs no ``finally``:
``docker-registry serve /tmp/pytest-...`` and ``moto_server`` lived on, holding ports and files.

:func:`arm` (conftest.py, once per test process) marks the process's environment with a token
that every process it starts inherits (``subprocess``, the Runner's children, nox, invoke and
their servers: they all copy ``os.environ``), and starts a watchdog in its own session that
holds the read end of a pipe whose only write end this process holds. When this process ends,
however it ends, the kernel closes that end: the watchdog's read returns (an event, not a
poll) and it kills every process whose environment carries the token.

Docker containers are the engine's children, not this process's: they carry their run's label
instead (``tests/support/runs.py``; the suite's smoke and SBOM containers through its
``CONTAINER_LABELS`` setting). The run's controller arms its watchdog with that label
(``containers_of``): when the controller ends, the watchdog also removes the run's
containers. Should the watchdog itself be killed (a whole process group, the machine), the
next run's start removes the containers of every dead run
(``tests/support/runs.py``: ``remove_containers_of_dead_runs``, from ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

VARIABLE = "CELESTIAL_TEST_REAPER"

_WATCHDOG = r"""
import os, signal, sys
token = (sys.argv[1] + "=" + sys.argv[2]).encode()
sys.stdin.buffer.read()  # returns at EOF: the test process is gone (or ended normally)
me = os.getpid()
# A Docker engine a test's `scripts/bootstrap` started (the engine was down) carries the token
# too, but every run on the machine uses it: killing it failed other runs' builds and pushes.
SHARED = {b"dockerd", b"containerd"}
for _ in range(3):  # a child may fork while its parent is killed: sweep again
    found = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                marked = token in environ.read().split(b"\0")
            with open(f"/proc/{entry}/comm", "rb") as comm:
                marked = marked and comm.read().strip() not in SHARED
        except OSError:
            continue
        if marked:
            found += 1
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    if not found:
        break
if len(sys.argv) > 3:  # the run's controller: its containers go too (the run's label)
    import subprocess
    client, label = sys.argv[3], sys.argv[4]
    listed = subprocess.run(
        [client, "ps", "--all", "--quiet", "--filter", "label=" + label],
        capture_output=True, text=True, timeout=120,
    )
    if listed.stdout.split():
        subprocess.run(
            [client, "rm", "--force", *listed.stdout.split()], capture_output=True, timeout=120
        )
"""


def arm(containers_of: tuple[str, str] | None = None) -> str:
    """Mark this process's children and start the watchdog; the token (idempotent).

    ``containers_of``: (docker client, ``label=value``): the watchdog also removes the
    containers carrying that label when this process ends."""
    if os.environ.get(VARIABLE, "").endswith(f"-{os.getpid()}"):
        return os.environ[VARIABLE]
    token = f"{uuid.uuid4().hex}-{os.getpid()}"
    read_end, write_end = os.pipe()
    environ = {k: v for k, v in os.environ.items() if k != VARIABLE}  # not marked itself
    subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, VARIABLE, token, *(containers_of or ())],
        stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=environ, start_new_session=True, close_fds=True,
    )  # fmt: skip
    os.close(read_end)
    # The write end stays open in this process only (os.pipe's ends are not inherited by
    # children, PEP 446: none of them keeps the pipe open after this process died).
    _KEEP.append(write_end)
    os.environ[VARIABLE] = token
    return token


_KEEP: list[int] = []


def marked(token: str) -> list[int]:
    """Pids of the processes carrying ``token`` (for the tests of this module)."""
    needle = f"{VARIABLE}={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
