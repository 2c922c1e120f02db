"""The pipeline's sessions: `nox -l` lists them, CI calls them (`nox -s publish`).

Each pipeline session is a list of invoke steps (tasks.py), run in that order in one
process, in an environment made by uv from requirements-freeze.txt. A failing step ends the
session: that step is the one to run alone to debug it (`invoke smoke`). Arguments after
`--` go to the first step (`nox -s train -- --no-pull`, `nox -s publish -- --force`,
`nox -s promote -- --to production`), so they are refused when the run selects several
pipeline sessions: each would give them to its own first step.
"""

from __future__ import annotations

import os
import sys

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"
REQUIREMENTS = "requirements-freeze.txt"

TRAIN = ["repro", "check-reproduced", "push-data --when-base-branch"]
REPORT = ["report"]
# check-published ends the run, successfully, when the registry has this commit's image
# with this model; push is reached only after smoke passed; push logs in and out around it;
# attest attaches the image's signed SBOM and provenance, drafted while smoke and push ran
# (nothing is signed or attached before the push succeeded).
PUBLISH = [
    "check-published",
    "import-model",
    "bento",
    "containerize",
    "smoke --draft-attestations",
    "push",
    "attest",
]
# `nox -s verify [-- --image REF --key FILE]`: the signed chain from dvc.lock to the image.
VERIFY = ["verify"]
# Environment tags move by digest, no build: `nox -s promote -- --to production --digest D`.
PROMOTE = ["promote"]
ROLLBACK = ["rollback"]
PIPELINE = ("train", "report", "publish", "verify", "promote", "rollback")


def install(session: nox.Session) -> None:
    """The pinned dependencies, then the suite (model-cicd) editable from this repository."""
    session.install("-r", REQUIREMENTS)
    session.install("--no-deps", "-e", ".")


def steps(session: nox.Session, names: list[str]) -> None:
    """Run invoke steps in order, in one process; the session's arguments go to the first.

    Quiet unless nox is verbose (`nox -s publish -v`): then the steps show every command,
    request and tool output too (suite.verbose)."""
    refused = shared_arguments(selected(session), session.posargs)
    if refused:
        session.error(refused)
    install(session)
    env = {"INVOKE_SUITE_VERBOSE": "1"} if verbose(sys.argv) else {}
    session.run("invoke", *invoke_arguments(names, session.posargs), env=env)


def verbose(argv: list[str]) -> bool:
    """Was nox run with -v/--verbose? nox gives a session no documented way to ask, so its
    command line says (up to `--`: what follows is the session's)."""
    own = argv[: argv.index("--")] if "--" in argv else argv
    return any(word in ("-v", "--verbose") for word in own)


def selected(session: nox.Session) -> list[str]:
    """The pipeline sessions this nox run selected (by -s, -k, -t or NOXSESSION). nox has no
    documented way to ask; its manifest (what ``session.notify`` uses) knows every selected
    session, run or to come. tests/unit/test_nox_arguments.py runs nox to keep this true."""
    manifest = session._runner.manifest
    return [name for name in PIPELINE if name in manifest]


def shared_arguments(pipeline: list[str], posargs: list[str]) -> str:
    """Why arguments after `--` are refused ("" when they are not): with several pipeline
    sessions each would give them to its own first step (`repro --force` for train)."""
    if len(pipeline) < 2 or not posargs:
        return ""
    given = " ".join(posargs)
    *others, last = pipeline
    return (
        f"`-- {given}` would go to the first step of each of {', '.join(pipeline)}: give "
        f"arguments to one session at a time, e.g. "
        f"`{' && '.join(f'nox -s {name}' for name in others)} && nox -s {last} -- {given}`"
    )


def invoke_arguments(names: list[str], posargs: list[str]) -> list[str]:
    """`invoke` arguments for ``names`` with ``posargs`` after the first (tests use it too)."""
    first, *rest = names
    return [*first.split(), *posargs, *(word for name in rest for word in name.split())]


@nox.session(python=PYTHON)
def train(session: nox.Session) -> None:
    """Reproduce the pipeline, check it gave the committed bits; share them from main in CI."""
    steps(session, TRAIN)


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """Compare params, metrics and plots with the base branch; post them on the PR in CI."""
    steps(session, REPORT)


@nox.session(python=PYTHON)
def publish(session: nox.Session) -> None:
    """Build, smoke-test and push this commit's image (skipped if already published)."""
    steps(session, PUBLISH)


@nox.session(python=PYTHON)
def verify(session: nox.Session) -> None:
    """Check an image's signed SBOM and provenance: -- [--image REF] [--key FILE] [--json]."""
    steps(session, VERIFY)


@nox.session(python=PYTHON)
def promote(session: nox.Session) -> None:
    """Point an environment tag at a published image: -- --to production --digest sha256:..."""
    steps(session, PROMOTE)


@nox.session(python=PYTHON)
def rollback(session: nox.Session) -> None:
    """Move an environment tag back to its previous promotion: -- --tag production [--to REV]."""
    steps(session, ROLLBACK)


# Without arguments: every test, one file per pytest-xdist worker (a file's fixtures chain up;
# tests/conftest.py shares the one training between workers and hands out the long files
# first), three workers on two cores (the tests mostly wait on Docker, registries, runners).
# `-n auto` takes the count from pytest-xdist's own PYTEST_XDIST_AUTO_NUM_WORKERS: three unless
# the environment says otherwise; 0 runs the tests in pytest's own process, no worker (the
# CI-file tests' nested checks jobs, which run one small file: tests/support/ci_runners.py).
TEST_EVERYTHING = ["-n", "auto", "--dist", "loadfile", "--no-loadscope-reorder"]
TEST_WORKERS = "3"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and integration tests (needs a Docker engine: scripts/bootstrap); -- ARGS: pytest's."""
    install(session)
    # The tests start hundreds of Python processes (steps, dvc, bentoml, nested CI runs):
    # where the machine sets PYTHONDONTWRITEBYTECODE, each compiled bentoml, dvc and sklearn
    # again (about 3 s of CPU each); their bytecode is cached in the venvs instead.
    workers = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", TEST_WORKERS)
    env = {"PYTHONDONTWRITEBYTECODE": None, "PYTEST_XDIST_AUTO_NUM_WORKERS": workers}
    session.run("pytest", *(session.posargs or TEST_EVERYTHING), env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, mypy (the suite, tasks.py, noxfile.py: pyproject.toml's [tool.mypy]), and the CI
    files against their official JSON schemas."""
    session.install("-r", REQUIREMENTS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    # check-jsonschema on each CI file, all in one process (it costs seconds to start).
    session.run("python", "ci/check_schemas.py")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the docs site (mkdocs.yml, docs/) strictly: a broken link or missing page fails."""
    session.install("-r", "docs/requirements.txt")
    session.run("mkdocs", "build", "--strict", "--site-dir", ".nox/site")
