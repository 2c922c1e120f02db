"""One source: this repository's tasks.py, noxfile.py, invoke.yaml, CI files, .ci/run and
scripts are what its template (template/, copier) renders with its answers
(.copier-answers.yml); a new repository rendered from it is a valid model repository."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

copier = pytest.importorskip("copier")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template"
ANSWERS = yaml.safe_load((ROOT / ".copier-answers.yml").read_text())
# The files this repository shares with every adopting repository: rendered, then compared.
SHARED = {
    ".ci/run",
    ".github/dependabot.yml",
    ".github/workflows/mlops.yaml",
    ".gitlab-ci.yml",
    "ci/check_schemas.py",
    "ci/requirements.txt",
    "invoke.yaml",
    "noxfile.py",
    "scripts/bootstrap",
    "scripts/build-base-image",
    "tasks.py",
}
NEW_MODEL = {
    ".copier-answers.yml", ".dvc/.gitignore", ".dvc/config", ".gitignore", "README.md",
    "bentofile.yaml", "dvc.yaml", "gates.yaml", "params.yaml", "requirements.txt", "ruff.toml",
    "src/classifier.py", "src/evaluate.py", "src/prepare.py", "src/serve.py", "src/train.py",
    "tests/test_classifier.py",
}  # fmt: skip


def render(tmp_path: Path, data: dict, name: str = "out") -> Path:
    """The template rendered from a plain copy of the working tree's template/ (copier would
    take a git repository's last tag, not what is being developed)."""
    source = tmp_path / "template-copy"
    if not source.exists():
        shutil.copytree(TEMPLATE, source, symlinks=True)
    dest = tmp_path / name
    copier.run_copy(str(source), dest, data=data, defaults=True, unsafe=True, quiet=True)
    return dest


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_this_repository_s_shared_files_are_the_template_rendered_with_its_answers(tmp_path):
    out = render(tmp_path, ANSWERS)
    assert files(out) == SHARED
    differ = [
        name for name in sorted(SHARED) if (out / name).read_bytes() != (ROOT / name).read_bytes()
    ]
    assert not differ, (
        f"{differ} differ from what template/ renders with .copier-answers.yml: edit the "
        "template (template/*.jinja), then copy its rendering over the repository's file"
    )
    for name in SHARED:
        executable = bool((ROOT / name).stat().st_mode & stat.S_IXUSR)
        assert bool((out / name).stat().st_mode & stat.S_IXUSR) == executable, name


@pytest.fixture(scope="module")
def new_repository(tmp_path_factory) -> Path:
    return render(tmp_path_factory.mktemp("new"), {"project_name": "iris-demo"})


def test_a_new_repository_has_the_shared_files_and_a_tabular_model(new_repository):
    assert files(new_repository) == SHARED | NEW_MODEL
    answers = yaml.safe_load((new_repository / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "iris-demo" and "suite_repository" not in answers
    requirements = (new_repository / "requirements.txt").read_text().splitlines()
    assert "model-cicd==0.2.0" in requirements
    # Its CI runs its own checks and tests, never the suite's.
    noxfile = (new_repository / "noxfile.py").read_text()
    assert "TEST_EVERYTHING" not in noxfile and '"-e", "."' not in noxfile
    assert "def docs" not in noxfile
    assert "--tests" not in (new_repository / ".ci/run").read_text()


def test_a_new_repository_s_settings_are_valid_for_the_suite(new_repository):
    from cicd import settings

    loaded = settings.load(new_repository, {})
    assert loaded.image_name == "iris-demo" and loaded.model.name == "iris_demo_model"
    assert loaded.smoke.request.kind == "json"
    assert loaded.smoke.request.body == {"features": [[5.1, 3.5, 1.4, 0.2]]}
    assert loaded.smoke.expect.function == "classifier:reference_answer"
    assert loaded.bento_name == "iris_demo"
    assert str(loaded.local_registry.storage).endswith(".cache/iris-demo/registry")
    stages = yaml.safe_load((new_repository / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["prepare", "train", "evaluate"]
    assert "model" in stages["train"]["outs"]


def test_a_new_repository_passes_its_own_lint_and_tests(new_repository, tmp_path):
    # A copy: ruff's and pytest's caches must not land in the module's repository, which
    # the other tests list file by file (in random order this one ran before them).
    work = tmp_path / "repository"
    shutil.copytree(new_repository, work, symlinks=True)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for command in (
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["check-jsonschema", "--builtin-schema", "vendor.github-workflows",
         ".github/workflows/mlops.yaml"],
        ["check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", ".gitlab-ci.yml"],
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
    ):  # fmt: skip
        done = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"


def test_an_existing_repository_gets_the_pipeline_and_keeps_its_model(tmp_path):
    out = render(tmp_path, {"project_name": "theirs", "new_repository": False})
    assert files(out) == SHARED | {".copier-answers.yml", "requirements-cicd.txt"}
    requirements = (out / "requirements-cicd.txt").read_text()
    assert "-r requirements.txt" in requirements and "model-cicd==0.2.0" in requirements
    assert 'REQUIREMENTS = "requirements-cicd.txt"' in (out / "noxfile.py").read_text()


def test_the_new_model_s_pins_are_this_repository_s_frozen_versions(new_repository):
    frozen = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements-freeze.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    bentofile = yaml.safe_load((new_repository / "bentofile.yaml").read_text())
    pins = [
        *bentofile["python"]["packages"],
        *(new_repository / "requirements.txt").read_text().splitlines(),
    ]
    for pin in (p.split("#")[0].strip() for p in pins):
        if "==" in pin and not pin.startswith("model-cicd"):
            name, version = pin.split("==")
            assert frozen[name] == version, f"{pin}: requirements-freeze.txt has {frozen[name]}"


def test_an_existing_repository_s_bentofile_is_where_it_says(tmp_path):
    # The MLOps guide keeps its bentofile in src/: the answer goes into invoke.yaml (and the
    # recorded answers, for `copier update`), not into a hand edit that updates must merge.
    answers = {"project_name": "guide", "new_repository": False}
    out = render(tmp_path, {**answers, "bentofile": "src/bentofile.yaml"})
    from cicd import settings

    assert settings.load(out, {}).bentofile == Path("src/bentofile.yaml")
    recorded = yaml.safe_load((out / ".copier-answers.yml").read_text())
    assert recorded["bentofile"] == "src/bentofile.yaml"
    # Not asked of a new repository: its bentofile.yaml is rendered at the root.
    new = render(tmp_path, {"project_name": "fresh"}, name="new")
    assert settings.load(new, {}).bentofile == Path("bentofile.yaml")
    assert (new / "bentofile.yaml").is_file()
