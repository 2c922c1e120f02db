"""`invoke freeze` compiles the requirements files that list the pipeline (suite.freeze_inputs):
in an existing repository that adopted the template, requirements-cicd.txt, which holds the
suite and includes the repository's own requirements.txt (docs/adopt-keras.md, friction 3)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cicd import settings
from cicd.errors import SuiteError

copier = pytest.importorskip("copier")

ROOT = Path(__file__).resolve().parents[2]


def render(tmp_path: Path, data: dict) -> Path:
    source = tmp_path / "template-copy"
    shutil.copytree(ROOT / "template", source, symlinks=True)
    dest = tmp_path / "out"
    copier.run_copy(str(source), dest, data=data, defaults=True, unsafe=True, quiet=True)
    return dest


def dry_freeze(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--dry", "freeze"],
        cwd=project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_existing_repository_freezes_the_file_that_holds_the_suite(tmp_path):
    project = render(tmp_path, {"project_name": "theirs", "new_repository": False})
    (project / "requirements.txt").write_text("tensorflow==2.21.0\n")
    done = dry_freeze(project)
    assert done.returncode == 0, done.stdout + done.stderr
    compiled = next(line for line in done.stdout.splitlines() if "uv pip compile" in line)
    assert compiled.endswith(" requirements-cicd.txt -o requirements-freeze.txt"), compiled
    assert "model-cicd==" in (project / "requirements-cicd.txt").read_text()


def test_a_new_repository_and_the_guide_s_layout_freeze_requirements_txt(tmp_path):
    project = render(tmp_path, {"project_name": "fresh"})
    assert settings.load(project, {}).freeze_inputs == (Path("requirements.txt"),)
    # Without the setting (an invoke.yaml older than it): the guide's requirements.txt.
    config = settings.read_config(project)
    del config["suite"]["freeze_inputs"]
    assert settings.from_config(project, config, {}).freeze_inputs == (Path("requirements.txt"),)


def test_a_missing_input_is_one_line_that_names_the_setting(tmp_path):
    project = render(tmp_path, {"project_name": "theirs", "new_repository": False})
    (project / "requirements-cicd.txt").unlink()
    done = dry_freeze(project)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: no requirements-cicd.txt to freeze: set suite.freeze_inputs in invoke.yaml to "
        "the requirements files your nox sessions install (the suite among them)"
    )


@pytest.mark.parametrize("value", ["requirements.txt", [], [""], [3]])
def test_freeze_inputs_is_a_list_of_files(value):
    config = yaml.safe_load((ROOT / "invoke.yaml").read_text())
    config["suite"]["freeze_inputs"] = value
    with pytest.raises(SuiteError, match=r"^setting freeze_inputs is .*: give a list of files"):
        settings.from_config(ROOT, config, {})
