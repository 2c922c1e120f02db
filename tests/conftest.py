"""Fixtures shared by every test directory: real registries and real projects.

* ``registry`` (module): a Distribution registry with htpasswd auth (user ``ci-bot``, the
  per-run sentinel password) on a port the OS assigns; stopped, and its images removed, at
  the end of the module.
* ``new_project`` (session): ``new_project(name, registry, dvc_remote=None, env=None)``
  makes a :class:`tests.support.project.Project`, a clone of the working tree (uncommitted
  changes included) with its own HOME, BentoML store and DVC remote.

The helpers themselves are in ``tests/support/project.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.project import Project, Registry, make_project, start_registry, stop_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[Registry]:
    started = start_registry(tmp_path_factory.mktemp("registry"))
    yield started
    stop_registry(started)


@pytest.fixture(scope="session")
def new_project(tmp_path_factory) -> Callable[..., Project]:
    def make(
        name: str,
        registry: Registry | None,
        dvc_remote: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Project:
        return make_project(tmp_path_factory.mktemp(name), registry, dvc_remote, env)

    return make
