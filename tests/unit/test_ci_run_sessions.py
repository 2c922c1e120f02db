""".ci/run's CI_RUN_SESSIONS, in this repository's file and in a new repository's rendering.

Each run is a copy of the file beside stand-ins: scripts/bootstrap and nox only record that
they ran (and with what), so that a refusal that let the run go on shows as "bootstrap ran"
instead of provisioning this machine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORDER = '#!/usr/bin/env bash\necho "$(basename "$0")${*:+ $*}" >>"$CALLS"\n'


def rendered_ci_run(tmp_path: Path) -> Path:
    """The .ci/run a new repository (not the suite's) gets from template/."""
    copier = pytest.importorskip("copier")
    source = tmp_path / "template-copy"  # a plain copy: copier would take a git tag's files
    shutil.copytree(ROOT / "template", source, symlinks=True)
    dest = tmp_path / "new"
    answers = {"project_name": "iris-demo"}
    copier.run_copy(str(source), dest, data=answers, defaults=True, unsafe=True, quiet=True)
    return dest / ".ci" / "run"


def run(tmp_path: Path, ci_run: Path, sessions: str | None) -> tuple[int, str, list[str]]:
    """``ci_run`` in a scratch repository with recording stand-ins: (exit code, stderr, the
    stand-ins' calls)."""
    repo = tmp_path / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(ci_run, repo / ".ci" / "run")
    stand_ins = repo / "stand-ins"
    for path in (repo / "scripts" / "bootstrap", stand_ins / "nox"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RECORDER)
        path.chmod(0o755)
    calls = repo / "calls"
    env = {
        "PATH": f"{stand_ins}:/usr/bin:/bin",  # no pyenv, no nox but the stand-in
        "HOME": str(repo),  # .ci/run puts ~/.local/bin first on PATH
        "CALLS": str(calls),
    }
    if sessions is not None:
        env["CI_RUN_SESSIONS"] = sessions
    done = subprocess.run(
        ["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return done.returncode, done.stderr, recorded


@pytest.fixture(scope="module")
def new_repository_ci_run(tmp_path_factory) -> Path:
    return rendered_ci_run(tmp_path_factory.mktemp("render"))


SUITE = ROOT / ".ci" / "run"


@pytest.mark.parametrize(
    ("sessions", "nox"),
    [
        (None, "nox -s lint docs tests"),
        ("docs", "nox -s docs"),
        ("  lint   tests ", "nox -s lint tests"),
    ],
)
def test_the_suite_runs_the_sessions_it_is_given(tmp_path, sessions, nox):
    code, stderr, calls = run(tmp_path, SUITE, sessions)
    assert code == 0, stderr
    assert calls == ["bootstrap --tests", nox]


@pytest.mark.parametrize(
    ("sessions", "nox"), [(None, "nox -s lint tests"), ("tests", "nox -s tests")]
)
def test_a_new_repository_runs_the_sessions_it_is_given(
    tmp_path, new_repository_ci_run, sessions, nox
):
    code, stderr, calls = run(tmp_path, new_repository_ci_run, sessions)
    assert code == 0, stderr
    assert calls == ["bootstrap", nox]


@pytest.mark.parametrize("which", ["suite", "new repository"])
def test_none_provisions_and_runs_no_session(tmp_path, new_repository_ci_run, which):
    ci_run = SUITE if which == "suite" else new_repository_ci_run
    code, stderr, calls = run(tmp_path, ci_run, "none")
    assert code == 0, stderr
    assert [call.split()[0] for call in calls] == ["bootstrap"]


@pytest.mark.parametrize(
    ("which", "sessions", "allowed"),
    [
        ("suite", "lint publish", "lint docs tests"),
        ("suite", "  ", "lint docs tests"),  # blank (empty is unset: the default)
        ("suite", "none tests", "lint docs tests"),
        ("new repository", "docs", "lint tests"),  # it has no docs session
        ("new repository", "lint docs", "lint tests"),
    ],
)
def test_other_sessions_are_refused_before_anything_runs(
    tmp_path, new_repository_ci_run, which, sessions, allowed
):
    ci_run = SUITE if which == "suite" else new_repository_ci_run
    code, stderr, calls = run(tmp_path, ci_run, sessions)
    assert code == 2 and calls == [], (code, calls)
    assert stderr == (
        f".ci/run: ERROR: CI_RUN_SESSIONS='{sessions}': give some of {allowed}, or none\n"
    )
