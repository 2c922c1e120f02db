"""The pipeline's sessions: `nox -l` lists them, CI calls them (`nox -s publish`).

Each pipeline session is a list of invoke steps (tasks.py), run in that order in one
process, in the pipeline sessions' one shared environment (.nox/pipeline), made by uv from
requirements-freeze.txt and reused until that changes. A failing step ends the
session: that step is the one to run alone to debug it (`invoke smoke`). Arguments after
`--` go to the first step (`nox -s train -- --no-pull`, `nox -s publish -- --force`,
`nox -s promote -- --to production`), so they are refused when the run selects several
pipeline sessions: each would give them to its own first step.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nox
import nox.virtualenv

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
    request and tool output too (suite.verbose), and the environment's uv commands."""
    refused = shared_arguments(selected(session), session.posargs)
    if refused:
        session.error(refused)
    environment = pipeline_environment(session)
    env = {"PATH": f"{environment / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["VIRTUAL_ENV"] = str(environment)
    if verbose(sys.argv):
        env["INVOKE_SUITE_VERBOSE"] = "1"
    arguments = invoke_arguments(names, session.posargs)
    # Logged as nox logs a command (`nox > invoke repro ...`), run from the environment.
    session.log(shlex.join(["invoke", *arguments]))
    session.run(str(environment / "bin" / "invoke"), *arguments, env=env, log=False)


# The pipeline sessions share one environment, made by uv the first time and again only when
# what it is made from changed: nox would make one per session, seconds each (`nox -s publish`
# after `nox -s train` made a second). .nox/train, .nox/publish, ... link to it, so that a
# session's `bin/invoke` is where it always was. To make it anew: rm -r .nox/pipeline.
ENVIRONMENT = Path(".nox", "pipeline")  # nox runs in this file's folder
MADE_FROM = ".made-from"  # in the environment: the hash of what it was made from, written last


def pipeline_environment(session: nox.Session) -> Path:
    """The pipeline's environment, made if it is missing or out of date (one line says so;
    `-v` shows uv's commands); its absolute path."""
    loud = verbose(sys.argv)

    def run(command: list[str]) -> None:
        session.run_install(nox.virtualenv.UV, *command, silent=not loud, log=loud)

    with locked(ENVIRONMENT):
        if not up_to_date(session):
            if not nox.virtualenv.HAS_UV:
                session.error(
                    "uv not found: the pipeline's environment is made with uv; install it "
                    "(pip install uv, or scripts/bootstrap)"
                )
            session.log(
                f"Creating virtual environment (uv) using python{PYTHON} in {ENVIRONMENT}, "
                f"shared by the pipeline sessions"
            )
            make(ENVIRONMENT, run)
    link_sessions(ENVIRONMENT)
    return ENVIRONMENT.resolve()


def up_to_date(session: nox.Session) -> bool:
    """current(ENVIRONMENT), or one line saying which file it is made from is missing."""
    try:
        return current(ENVIRONMENT)
    except FileNotFoundError as missing:
        session.error(
            f"{missing.filename}: no such file; the pipeline's environment is made from "
            f"{REQUIREMENTS} and what it includes (-r, -c): restore it, or point noxfile.py's "
            f"REQUIREMENTS at your requirements file"
        )


@contextmanager
def locked(location: Path) -> Iterator[None]:
    """Hold ``location``'s lock: two pipeline sessions at once in one workspace (two shells,
    two CI jobs in one checkout) must not make it over each other; the second waits, then
    finds it current."""
    location.parent.mkdir(parents=True, exist_ok=True)
    with open(location.parent / f"{location.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def current(location: Path) -> bool:
    """Was the environment at ``location`` made, to the end, from what it would be made from
    now (and does its Python still exist)?"""
    wanted = made_from(location)  # first: a file it is made from that is missing fails here
    stamp = location / MADE_FROM
    return (
        stamp.is_file()
        and stamp.read_text() == wanted
        and (location / "bin" / "python").exists()  # a link to an interpreter that may be gone
    )


def make(location: Path, run: Callable[[list[str]], object]) -> None:
    """Make the environment at ``location`` anew with uv (``run`` runs uv with the arguments
    it is given), then record what it was made from: a make cut short is made again."""
    wanted = made_from(location)
    shutil.rmtree(location, ignore_errors=True)
    for command in uv_commands(location):
        run(command)
    (location / MADE_FROM).write_text(wanted)


def uv_commands(location: Path) -> list[list[str]]:
    """uv's arguments, in order, that make the environment at ``location``."""
    into = ["--python", str(location)]
    return [
        ["venv", "--python", PYTHON, str(location)],
        ["pip", "install", *into, "-r", REQUIREMENTS],
        # The suite from this repository, editable: an edit to src/cicd needs no re-make. Built
        # with the lock's setuptools (requirements.txt), not in an isolated build environment
        # of its own: 0.8 s less of a make (median of 5, busy machine).
        ["pip", "install", *into, "--no-deps", "--no-build-isolation", "-e", "."],
    ]


def made_from(location: Path) -> str:
    """One hash of what the environment at ``location`` is made from: uv's commands and the
    files they read. Any edit to one of them makes it again."""
    digest = hashlib.sha256()
    for command in uv_commands(location):
        digest.update(shlex.join(command).encode() + b"\n")
    for path in inputs():
        digest.update(f"{path}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def inputs() -> list[Path]:
    """The files the environment is made from."""
    # pyproject.toml: the suite's own package (its dependencies, its console scripts).
    return [*requirement_files(Path(REQUIREMENTS)), Path("pyproject.toml")]


def requirement_files(path: Path) -> list[Path]:
    """``path`` and the requirement files it includes (`-r FILE`, `-c FILE`), as uv reads them."""
    found = [path]
    for line in path.read_text().splitlines():
        words = line.split(" #")[0].split()
        if len(words) == 2 and words[0] in ("-r", "--requirement", "-c", "--constraint"):
            found += requirement_files(path.parent / words[1])
    return found


def link_sessions(location: Path) -> None:
    """.nox/NAME for each pipeline session: a link to the environment at ``location``. An
    environment nox made there before the sessions shared one is removed (its disk, and a
    `bin/invoke` that would run out-of-date code)."""
    for name in PIPELINE:
        link = location.parent / name
        if link.is_symlink() and os.readlink(link) == location.name:
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            shutil.rmtree(link)
        link.symlink_to(location.name)


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


@nox.session(venv_backend="none")
def train(session: nox.Session) -> None:
    """Reproduce the pipeline, check it gave the committed bits; share them from main in CI."""
    steps(session, TRAIN)


@nox.session(venv_backend="none")
def report(session: nox.Session) -> None:
    """Compare params, metrics and plots with the base branch; post them on the PR in CI."""
    steps(session, REPORT)


@nox.session(venv_backend="none")
def publish(session: nox.Session) -> None:
    """Build, smoke-test and push this commit's image (skipped if already published)."""
    steps(session, PUBLISH)


@nox.session(venv_backend="none")
def verify(session: nox.Session) -> None:
    """Check an image's signed SBOM and provenance: -- [--image REF] [--key FILE] [--json]."""
    steps(session, VERIFY)


@nox.session(venv_backend="none")
def promote(session: nox.Session) -> None:
    """Point an environment tag at a published image: -- --to production --digest sha256:..."""
    steps(session, PROMOTE)


@nox.session(venv_backend="none")
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
