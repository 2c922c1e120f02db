"""The suite's steps as a model repository uses them: its tasks.py imports the collection,
adds its own task, and its invoke.yaml overrides a setting (docs/adopt.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

import cicd

ROOT = Path(__file__).resolve().parents[2]

USER_TASKS = '''
from invoke import task

from cicd.tasks import namespace, project_root, setup


@task
def where(c):
    """The project root and the image name, as the suite's steps see them."""
    print(project_root(c), setup(c).settings.image_name)


ns = namespace()
ns.add_task(where)
'''


def _invoke(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IMAGE_NAME"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "my-model"
    (project / "sub" / "dir").mkdir(parents=True)
    (project / "tasks.py").write_text(USER_TASKS)
    config = yaml.safe_load((ROOT / "invoke.yaml").read_text())
    config["suite"]["image_name"] = "my-model-image"
    (project / "invoke.yaml").write_text(yaml.safe_dump(config))
    return project


def test_the_project_is_the_directory_of_its_tasks_py_even_from_a_subdirectory(tmp_path):
    project = _project(tmp_path)
    done = _invoke(project / "sub" / "dir", "where")
    assert done.returncode == 0, done.stderr
    # The root is the user's tasks.py's directory (not the installed package's), and the
    # settings are that project's invoke.yaml, with its override.
    assert done.stdout.split() == [str(project.resolve()), "my-model-image"]


def test_the_suite_s_steps_and_the_project_s_own_are_listed_and_documented(tmp_path):
    project = _project(tmp_path)
    listed = _invoke(project, "--list").stdout
    for name in ("repro", "push", "smoke", "verify", "where"):
        assert f"  {name} " in listed or f"  {name}\n" in listed, name
    helped = _invoke(project, "smoke", "--help")
    assert helped.returncode == 0 and "Docstring:" in helped.stdout


def test_the_repository_s_tasks_py_is_the_suite_s_collection():
    import tasks
    from cicd.tasks import namespace

    assert set(tasks.ns.task_names) == set(namespace().task_names)
    assert "repro" in tasks.ns.task_names and "check-published" in tasks.ns.task_names


def test_the_version_is_single_sourced():
    import importlib.metadata
    import tomllib

    written = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cicd.__version__ == importlib.metadata.version("model-cicd") == written


def test_the_provenance_records_the_suite_s_version():
    from cicd import provenance

    assert provenance.versions("<docker>")["suite"] == cicd.__version__


def test_the_changelog_has_a_section_for_the_version():
    assert f"\n## [{cicd.__version__}] - " in (ROOT / "CHANGELOG.md").read_text()
