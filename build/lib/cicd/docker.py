"""Which docker client to use, and a python-on-whales client bound to it.

The Docker 28 CLI needs the buildx plugin for BuildKit builds; older CLIs (< 23) drive the
daemon's built-in BuildKit themselves. BentoML's containerize runs ``docker build`` from
PATH and python-on-whales runs its own client, so both must get a client that can build:
chosen here once, explicitly, instead of by PATH luck.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cicd.errors import CommandError, SuiteError
from cicd.shell import COMMAND_ATTEMPTS, RETRY_NOTE, TRANSIENT, Runner

if TYPE_CHECKING:
    from python_on_whales import DockerClient

T = TypeVar("T")

# Clients before this major version build with the daemon's BuildKit without buildx.
FIRST_BUILDX_ONLY_MAJOR = 23
FALLBACK_CLIENTS = ("/usr/bin/docker",)


@dataclass(frozen=True)
class Client:
    path: str
    #: environment a build needs with this client (e.g. DOCKER_BUILDKIT=1 for old clients)
    build_env: dict[str, str]

    def env_for_tools(self) -> dict[str, str]:
        """Environment for tools that call ``docker`` from PATH (BentoML containerize)."""
        directory = str(Path(self.path).parent)
        return {**self.build_env, "PATH": directory + os.pathsep + os.environ.get("PATH", "")}


Probe = Callable[[Sequence[str]], str | None]


def _probe(command: Sequence[str]) -> str | None:
    """Output of a quick command, or None when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def choose_client(setting: str = "auto", probe: Probe = _probe) -> Client:
    """The docker client to use: the configured one, or the first that can build."""
    if setting != "auto":
        if probe([setting, "--version"]) is None:
            raise SuiteError(f"docker_client {setting!r} does not run: fix the setting")
        return Client(setting, {"DOCKER_BUILDKIT": "1"})
    candidates = [c for c in (shutil.which("docker"), *FALLBACK_CLIENTS) if c]
    for path in dict.fromkeys(candidates):
        if probe([path, "buildx", "version"]) is not None:
            return Client(path, {"DOCKER_BUILDKIT": "1"})
        major = _client_major(path, probe)
        if major is not None and major < FIRST_BUILDX_ONLY_MAJOR:
            return Client(path, {"DOCKER_BUILDKIT": "1"})
    if candidates:
        # A client without buildx still builds with the legacy builder, only slower.
        return Client(candidates[0], {"DOCKER_BUILDKIT": "0"})
    raise SuiteError("no docker client found: install Docker (or run scripts/bootstrap)")


def _client_major(path: str, probe: Probe) -> int | None:
    """Major version of a docker client, read from ``docker --version`` (no daemon needed)."""
    banner = probe([path, "--version"]) or ""  # "Docker version 20.10.24+dfsg1, build 297e128"
    match = re.search(r"version (\d+)\.", banner)
    return int(match.group(1)) if match else None


def whales(client: Client, config_dir: Path | None = None) -> DockerClient:
    """A python-on-whales client on ``client``, optionally with a private config directory."""
    from python_on_whales import DockerClient

    return DockerClient(client_call=[client.path], config=str(config_dir) if config_dir else None)


def require_engine(client: Client) -> None:
    """Fail early, with what to do, when no Docker engine answers."""
    if _probe([client.path, "version", "--format", "{{.Server.Version}}"]) is None:
        raise SuiteError(
            "no Docker engine answers (is dockerd running? is DOCKER_HOST right?): "
            "start Docker, or run scripts/bootstrap on a machine of this project's kind"
        )


def docker_call(
    runner: Runner,
    command: list[str],
    action: Callable[[], T],
    hint: str = "",
    retry_transient: bool = False,
) -> T | None:
    """Run a python-on-whales call through the runner (echo, dry-run); its failures become
    :class:`CommandError` carrying the equivalent command, exit code and output.

    ``retry_transient``: a failure whose output says the network hiccuped is retried with
    backoff (``docker push`` to a registry behind a flaky proxy), as ``Runner.run`` does.
    """
    from python_on_whales.exceptions import DockerException

    attempts = COMMAND_ATTEMPTS if retry_transient else 1
    note = RETRY_NOTE if retry_transient and runner.dry else ""
    for attempt in range(1, attempts + 1):
        try:
            return runner.call(command, action, quiet=attempt > 1, note=note)
        except DockerException as exc:
            output = runner.mask((exc.stderr or "") + (exc.stdout or ""))
            if attempt < attempts and TRANSIENT.search(output):
                runner.pause_before_retry(attempt, attempts)
                continue
            raise CommandError(command, exc.return_code, output, hint) from None
    raise AssertionError("unreachable")  # pragma: no cover
