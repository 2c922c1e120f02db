"""The pipeline's sessions: `nox -l` lists them, CI calls them (`nox -s publish`).

Each session runs invoke steps (tasks.py) in its own environment, made by uv from
requirements-freeze.txt; arguments after `--` go to the step (`nox -s train -- --push`).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"
REQUIREMENTS = "requirements-freeze.txt"


def install(session: nox.Session) -> None:
    """The pinned dependencies, then the project itself (its `celestial` and `cicd` packages)."""
    session.install("-r", REQUIREMENTS)
    session.install("--no-deps", "-e", ".")


def invoke(session: nox.Session, *step: str) -> None:
    """Install the environment and run one invoke step in it."""
    install(session)
    session.run("invoke", *step, *session.posargs)


@nox.session(python=PYTHON)
def train(session: nox.Session) -> None:
    """Reproduce the pipeline, pulling unchanged outputs; push them from main in CI."""
    invoke(session, "train")


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """Compare params, metrics and plots with the base branch; post them on the PR in CI."""
    invoke(session, "report")


@nox.session(python=PYTHON)
def publish(session: nox.Session) -> None:
    """Build, smoke-test and push this commit's image (skipped if already published)."""
    invoke(session, "publish")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and integration tests (needs a Docker engine: scripts/bootstrap)."""
    install(session)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, and the CI files against their official JSON schemas."""
    session.install("-r", REQUIREMENTS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run(
        "check-jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
        ".github/workflows/mlops.yaml",
    )
    session.run("check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", ".gitlab-ci.yml")
