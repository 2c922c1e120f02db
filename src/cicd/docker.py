"""Which docker client to use, and a python-on-whales client bound to it.

The Docker 28 CLI needs the buildx plugin for BuildKit builds; older CLIs (< 23) drive the
daemon's built-in BuildKit themselves. BentoML's containerize runs ``docker build`` from
PATH and python-on-whales runs its own client, so both must get a client that can build:
chosen here once, explicitly, instead of by PATH luck.

The client gets the environment every child of the suite gets (:meth:`Runner.child_env`: no
registry password, signing key or forge token), although python-on-whales starts it with
this process's whole environment: its client call unsets the rest (:func:`client_call`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cicd import retry
from cicd.errors import CommandError, SuiteError, display
from cicd.shell import NETWORK_ERRORS, Runner, network_hiccup

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


# python-on-whales prints the whole environment of each call, secrets included, when this
# is "1" (it reads this process's environment): a run ignores it (:func:`whales`).
WHALES_DEBUG = "PYTHON_ON_WHALES_DEBUG"


def probe_client(command: Sequence[str], env: Mapping[str, str] | None = None) -> str | None:
    """Output of a quick command, or None when it fails. ``env``: the child's environment
    (:meth:`Runner.child_env`; None: this process's)."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=20, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def choose_client(setting: str = "auto", probe: Probe = probe_client) -> Client:
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


def whales(client: Client, runner: Runner, config_dir: Path | None = None) -> DockerClient:
    """A python-on-whales client on ``client``, optionally with a private config directory.

    Its client starts with the runner's child environment (:func:`client_call`).
    Made once per run (:attr:`cicd.context.Run.whales`); only a login's throwaway config
    directory (:func:`cicd.image.logged_in`) makes another."""
    from python_on_whales import DockerClient

    if os.environ.get(WHALES_DEBUG, "0") != "0":
        # python-on-whales reads it from this process's environment, at every call.
        os.environ.pop(WHALES_DEBUG)
        runner.echo(
            f"{WHALES_DEBUG} ignored: python-on-whales would print the whole environment, "
            "secrets included; `-v` (invoke -e) shows every docker command"
        )
    return DockerClient(
        client_call=client_call(client, runner), config=str(config_dir) if config_dir else None
    )


def client_call(client: Client, runner: Runner) -> list[str]:
    """How python-on-whales starts ``client``: with the environment of every other child.

    python-on-whales gives its client this process's whole environment (it copies
    ``os.environ`` at each call and can only add to it), so the registry password and
    ``SIGNING_KEY`` would reach the CLI and its plugins. The call is ``env -u NAME ...
    <client>``: each variable :meth:`Runner.child_env` keeps from a child is unset before the
    client starts (names only on the command line, never a value)."""
    kept = runner.child_env(None)
    hidden = sorted(name for name in os.environ if name not in kept)
    if not hidden:
        return [client.path]
    unset = [word for name in hidden for word in ("-u", name)]
    return [shutil.which("env") or "/usr/bin/env", *unset, client.path]


def require_engine(client: Client, env: Mapping[str, str] | None = None) -> None:
    """Fail early, with what to do, when no Docker engine answers. ``env``: the client's
    environment (:meth:`Runner.child_env`)."""
    if probe_client([client.path, "version", "--format", "{{.Server.Version}}"], env) is None:
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

    ``retry_transient``: a failure whose output says the network hiccuped is retried
    (``docker push`` to a registry behind a flaky proxy), as ``Runner.run`` retries commands:
    same policy (:data:`cicd.retry.COMMANDS`), same loop, same printed retry.
    """
    from python_on_whales.exceptions import DockerException

    policy = retry.COMMANDS if retry_transient else retry.ONCE

    def once() -> T:
        try:
            return action()
        except DockerException as exc:
            output = runner.mask((exc.stderr or "") + (exc.stdout or ""))
            failed = CommandError(command, exc.return_code, output, hint)
            reason = network_hiccup(output)
            if reason:
                raise retry.Transient(reason, failed) from None
            raise failed from None

    def retried() -> T:
        return runner.retry(once, policy=policy, what=display([runner.mask(p) for p in command]))

    return runner.call(command, retried, note=policy.note(NETWORK_ERRORS) if runner.dry else "")
