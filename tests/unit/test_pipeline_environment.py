"""The pipeline sessions' one environment (noxfile.py, rendered from template/): made once
from the lock file, reused by every later pipeline session, made again exactly when what it
is made from changed. The real thing on a small scale: real uv, a lock file of a few small
wheels the suite's own lock pins (uv's cache has them), a tiny package installed editable as
the suite is, in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nox.virtualenv
import pytest

import noxfile

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = noxfile.ENVIRONMENT


def pin(name: str) -> str:
    """The suite's lock file's line for ``name`` (``six==1.17.0``): in uv's cache already."""
    lines = (ROOT / noxfile.REQUIREMENTS).read_text().splitlines()
    return next(line for line in lines if line.startswith(f"{name}=="))


def uv(command: list[str]) -> None:
    subprocess.run([nox.virtualenv.UV, *command], check=True, capture_output=True, timeout=300)


def imports(module: str) -> bool:
    """Does the environment's Python import ``module``?"""
    python = ENVIRONMENT / "bin" / "python"
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=60)
    return done.returncode == 0


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A repository's folder as the noxfile sees it: its lock file and its own package."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / noxfile.REQUIREMENTS).write_text(f"{pin('six')}\n{pin('setuptools')}\n")
    (tmp_path / "tiny.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "tiny"\nversion = "0"\n\n[tool.setuptools]\npy-modules = ["tiny"]\n\n'
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    return tmp_path


def test_the_environment_is_made_once_then_reused(workspace):
    assert not noxfile.current(ENVIRONMENT)
    noxfile.make(ENVIRONMENT, uv)
    assert noxfile.current(ENVIRONMENT)
    assert imports("six") and imports("tiny")  # the lock file, then the package, editable
    # The code of the package is read where it is: an edit needs no new environment.
    (workspace / "tiny.py").write_text("ANSWER = 42\n")
    assert noxfile.current(ENVIRONMENT)
    assert imports("tiny; assert tiny.ANSWER == 42")


def test_an_edited_lock_file_makes_it_again(workspace):
    noxfile.make(ENVIRONMENT, uv)
    lock = workspace / noxfile.REQUIREMENTS
    lock.write_text(f"{pin('six')}\n{pin('setuptools')}\n{pin('idna')}\n")
    assert not noxfile.current(ENVIRONMENT)
    noxfile.make(ENVIRONMENT, uv)
    assert noxfile.current(ENVIRONMENT) and imports("idna")
    lock.write_text(f"{pin('setuptools')}\n{pin('idna')}\n")  # six dropped: gone, not kept
    noxfile.make(ENVIRONMENT, uv)
    assert imports("idna") and not imports("six")


def test_an_edited_pyproject_makes_it_again(workspace):
    # The package's metadata (dependencies, console scripts) is installed, not read in place.
    noxfile.make(ENVIRONMENT, uv)
    pyproject = workspace / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0"', 'version = "1"'))
    assert not noxfile.current(ENVIRONMENT)


def test_a_make_cut_short_is_made_again(workspace):
    def fails_at_the_editable_install(command: list[str]) -> None:
        if "-e" in command:
            raise RuntimeError("interrupted")
        uv(command)

    with pytest.raises(RuntimeError):
        noxfile.make(ENVIRONMENT, fails_at_the_editable_install)
    assert (ENVIRONMENT / "bin" / "python").exists() and imports("six")
    assert not noxfile.current(ENVIRONMENT)


def test_included_requirement_files_are_what_it_is_made_from(tmp_path):
    # An adopting repository's requirements-cicd.txt includes its requirements.txt.
    (tmp_path / "requirements-cicd.txt").write_text(
        "# the pipeline\n-r requirements.txt  # the model's own\nmodel-cicd==0.2.0\n"
    )
    (tmp_path / "requirements.txt").write_text("-c constraints.txt\nnumpy\n")
    (tmp_path / "constraints.txt").write_text("numpy<3\n")
    found = noxfile.requirement_files(tmp_path / "requirements-cicd.txt")
    assert [path.name for path in found] == [
        "requirements-cicd.txt",
        "requirements.txt",
        "constraints.txt",
    ]


def test_each_pipeline_session_s_folder_links_to_the_one_environment(workspace):
    noxfile.make(ENVIRONMENT, uv)
    old = ENVIRONMENT.parent / "publish"  # what nox made before the sessions shared one
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "invoke").write_text("#!/bin/sh\necho out of date\n")
    noxfile.link_sessions(ENVIRONMENT)
    noxfile.link_sessions(ENVIRONMENT)  # again: nothing to do
    for name in noxfile.PIPELINE:
        folder = ENVIRONMENT.parent / name
        assert folder.is_symlink() and folder.resolve() == ENVIRONMENT.resolve(), name
    assert not (ENVIRONMENT / "bin" / "invoke").exists()  # the old one is gone, not kept


@pytest.fixture
def repository(tmp_path) -> Path:
    """A repository with this noxfile, a lock file of invoke alone, and a tasks.py whose steps
    say where they run."""
    (tmp_path / "noxfile.py").write_text((ROOT / "noxfile.py").read_text())
    (tmp_path / noxfile.REQUIREMENTS).write_text(f"{pin('invoke')}\n{pin('setuptools')}\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "tiny"\nversion = "0"\n\n[tool.setuptools]\npy-modules = []\n\n'
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (tmp_path / "tasks.py").write_text(
        "import sys\nfrom invoke import task\n\n\n"
        "@task\ndef report(c):\n    print('report in', sys.prefix)\n\n\n"
        "@task\ndef verify(c):\n    print('verify in', sys.prefix)\n"
    )
    return tmp_path


def nox_session(repository: Path, *args: str, check: bool = True) -> list[str]:
    """The lines `nox -s ARGS` printed in ``repository``, as a user's shell runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "NOX_CURRENT_SESSION")}
    done = subprocess.run(
        [sys.executable, "-m", "nox", "--no-color", "-s", *args],
        cwd=repository, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (done.returncode == 0) is check, done.stdout + done.stderr
    return (done.stdout + done.stderr).splitlines()


MADE = (
    "nox > Creating virtual environment (uv) using python3.11 in .nox/pipeline, shared by the "
    "pipeline sessions"
)


def test_nox_makes_it_for_the_first_pipeline_session_and_the_next_one_reuses_it(repository):
    """`nox -s report`, then `nox -s verify` in the same workspace: one line says the
    environment is made, the first time only, and each session's step runs in it; after the
    lock file changed, the next session makes it again (`-v`: with uv's commands)."""
    environment = str((repository / ".nox" / "pipeline").resolve())
    first = nox_session(repository, "report")
    assert first.count(MADE) == 1
    assert "nox > invoke report" in first and f"report in {environment}" in first
    assert not any("pip install" in line for line in first), "quiet: uv's commands shown"
    second = nox_session(repository, "verify")
    assert MADE not in second
    assert "nox > invoke verify" in second and f"verify in {environment}" in second
    assert (repository / ".nox" / "verify" / "bin" / "invoke").exists()

    lock = repository / noxfile.REQUIREMENTS
    lock.write_text(f"{lock.read_text()}{pin('six')}\n")
    third = nox_session(repository, "verify", "-v")
    assert MADE in third and any(line.endswith("-r requirements-freeze.txt") for line in third)
    assert f"verify in {environment}" in third
    assert MADE not in nox_session(repository, "report")


def test_a_missing_lock_file_is_one_line_that_says_what_to_do(repository):
    (repository / noxfile.REQUIREMENTS).unlink()
    lines = nox_session(repository, "report", check=False)
    assert (
        "nox > Session report aborted: requirements-freeze.txt: no such file; the pipeline's "
        "environment is made from requirements-freeze.txt and what it includes (-r, -c): "
        "restore it, or point noxfile.py's REQUIREMENTS at your requirements file."
    ) in lines
    assert not any("Traceback" in line for line in lines)
