"""The run context: what one step runs with, built once per task.

A :class:`Run` holds the runner (dry run, secrets to mask, deadlines), the settings and the
environment, and gives what is derived from them, each made once and cached: the Docker
client (and the one python-on-whales ``DockerClient`` on it), the revision being built, the
registry credentials and the registry client. Modules take a ``Run`` instead of the loose
``(runner, settings, client, environ)`` they need, as python-on-whales builds one
``DockerClient`` from one ``ClientConfig``.

The modules it uses (:mod:`cicd.ci`, :mod:`cicd.docker`, :mod:`cicd.registry`, ...) never
import it back: they take plain values, and what needs the run is a property here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cicd import ci
from cicd import settings as settings_module
from cicd.docker import Client, choose_client, probe_client, require_engine, whales
from cicd.registry import Credentials, RegistryClient, credentials
from cicd.settings import Settings
from cicd.shell import Runner

if TYPE_CHECKING:
    from python_on_whales import DockerClient


# A session runs its steps in one process (`nox -s publish`: seven), each with its own Run.
# Choosing the client and asking the engine cost several docker CLI starts (about 0.1 s
# each, more on a busy runner): done once per process, for the client setting and PATH
# that chose it. An engine that stops later fails the next docker command, with docker's
# own message.
_CLIENTS: dict[tuple[str, str], Client] = {}
_ENGINE_ANSWERED: set[tuple[str, str]] = set()  # (client path, DOCKER_HOST)


@dataclass
class Run:
    """The runner, the settings and the environment of one step, and what derives from them."""

    runner: Runner
    settings: Settings
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)

    @classmethod
    def create(
        cls,
        root: Path,
        config: Mapping[str, Any],
        environ: Mapping[str, str],
        *,
        dry: bool = False,
        verbose: bool = False,
        command_timeout: float | None = None,
    ) -> Run:
        """From the ``suite`` section of invoke's config (``config``) and the environment.

        ``verbose`` (invoke's ``--echo``) and ``command_timeout`` (its ``--command-timeout``)
        override the settings' for this run."""
        settings = settings_module.from_config(root, config, environ)
        runner = Runner(
            dry=dry,
            command_timeout=command_timeout or settings.command_timeout,
            verbose=verbose or settings.verbose,
        )
        runner.add_secret(settings.registry_password)
        runner.add_secret(settings.signing_key)
        return cls(runner, settings, environ)

    @classmethod
    def load(cls, root: Path, environ: Mapping[str, str], *, dry: bool = False) -> Run:
        """From the repository's invoke.yaml: for code that does not run under invoke (bench)."""
        return cls.create(root, settings_module.read_config(root), environ, dry=dry)

    @property
    def dry(self) -> bool:
        return self.runner.dry

    @property
    def in_ci(self) -> bool:
        return ci.in_ci(self.environ)

    @cached_property
    def docker(self) -> Client:
        """The docker client that can build; the engine must answer (not checked in a dry run)."""
        env = self.runner.child_env(None)  # the client's plugins see no secret either
        key = (self.settings.docker_client, os.environ.get("PATH", ""))
        client = _CLIENTS.get(key)
        if client is None:
            client = choose_client(self.settings.docker_client, partial(probe_client, env=env))
            _CLIENTS[key] = client
        engine = (client.path, os.environ.get("DOCKER_HOST", ""))
        if not self.dry and engine not in _ENGINE_ANSWERED:
            require_engine(client, env)
            _ENGINE_ANSWERED.add(engine)
        return client

    def require_docker(self) -> Client:
        """:attr:`docker`, now: a step that needs the engine says it is missing first thing."""
        return self.docker

    @cached_property
    def whales(self) -> DockerClient:
        """The python-on-whales client on :attr:`docker`, made once for the run (a login's
        throwaway config directory gets its own: :func:`cicd.image.logged_in`)."""
        return whales(self.docker, self.runner)

    @cached_property
    def revision(self) -> ci.Revision:
        """The commit being built (a dirty tree is refused in CI)."""
        return ci.revision(self.runner, self.settings.root, self.environ)

    @cached_property
    def builds_base_branch(self) -> bool:
        """True when CI builds the base branch itself (not a pull request): outputs get pushed."""
        return ci.builds_base_branch(
            self.runner, self.settings.root, self.environ, self.settings.base_branch
        )

    @cached_property
    def credentials(self) -> Credentials | None:
        return credentials(self.settings)

    @cached_property
    def registry(self) -> RegistryClient:
        """The client of the target registry, its requests shown through the runner."""
        return RegistryClient(
            self.settings.registry_host,
            self.credentials,
            runner=self.runner,
            timeout=self.settings.network_timeout,
        )
