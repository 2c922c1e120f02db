"""An existing repository's own checks pass right after it adopts the template
(docs/adopt-keras.md, friction 6): `nox -s lint` runs ruff on the files the template adds
unless the repository answers lint_own_code, and `nox -s tests` is skipped, saying why, when
there is no tests/ folder. The rendered sessions run here with nox itself, in this
environment (--no-venv --no-install: ruff, check-jsonschema and pytest are installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

copier = pytest.importorskip("copier")

ROOT = Path(__file__).resolve().parents[2]
# The adopter's code as the guide wrote it: fine Python, not in ruff's format.
THEIR_CODE = "def train(params):\n    return {'epochs':params['epochs'],'lr':params['lr']}\n"


def adopted(tmp_path: Path, **answers: object) -> Path:
    source = tmp_path / "template-copy"
    if not source.exists():
        shutil.copytree(ROOT / "template", source, symlinks=True)
    dest = tmp_path / "repository"
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "src").mkdir(parents=True)
    (dest / "src" / "train.py").write_text(THEIR_CODE)
    data = {"project_name": "theirs", "new_repository": False, **answers}
    copier.run_copy(str(source), dest, data=data, defaults=True, unsafe=True, quiet=True)
    return dest


def nox(project: Path, *sessions: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "nox", "--no-venv", "--no-install", "-s", *sessions]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def test_an_existing_repository_passes_its_checks_out_of_the_box(tmp_path):
    project = adopted(tmp_path)
    done = nox(project, "lint", "tests")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Session lint was successful" in output
    assert "Session tests skipped: no tests/ folder: nothing to test" in output
    # The template's files are linted, the repository's own are not.
    assert "--isolated" in output and "tasks.py noxfile.py" in output
    assert (project / "src" / "train.py").read_text() == THEIR_CODE


def test_lint_own_code_lints_the_repository_s_code_and_tests_run_when_there(tmp_path):
    project = adopted(tmp_path, lint_own_code=True)
    done = nox(project, "lint")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "--> src/train.py" in output and "1 file would be reformatted" in output
    (project / "tests").mkdir()
    (project / "tests" / "test_train.py").write_text(
        "import sys\n\nsys.path.insert(0, 'src')\n\nfrom train import train\n\n\n"
        "def test_train():\n    assert train({'epochs': 1, 'lr': 2}) == {'epochs': 1, 'lr': 2}\n"
    )
    done = nox(project, "tests")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout + done.stderr
