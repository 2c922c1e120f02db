"""The rendered requirements file pins the suite at the template's own version, which is the
suite's: `copier update` to a later tag moves the pin (the version is not a recorded answer),
unless the user's requirement line pins it already (a git ref, a wheel)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import cicd

copier = pytest.importorskip("copier")

ROOT = Path(__file__).resolve().parents[2]


def test_the_template_s_suite_version_is_the_suite_s_and_is_not_asked():
    questions = yaml.safe_load((ROOT / "template" / "copier.yml").read_text())
    assert questions["suite_version"]["default"] == cicd.__version__
    assert questions["suite_version"]["when"] is False  # not asked, so not recorded


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        ("model-cicd", f"model-cicd=={cicd.__version__}"),
        (
            "model-cicd @ git+ssh://git@example.com/team/model-cicd.git",
            f"model-cicd @ git+ssh://git@example.com/team/model-cicd.git@v{cicd.__version__}",
        ),
        (
            "model-cicd @ git+https://example.com/team/model-cicd@v0.1.9",
            "model-cicd @ git+https://example.com/team/model-cicd@v0.1.9",
        ),
        (
            "model-cicd @ file:///wheels/model_cicd-0.2.0-py3-none-any.whl",
            "model-cicd @ file:///wheels/model_cicd-0.2.0-py3-none-any.whl",
        ),
    ],
)
def test_the_suite_s_requirement_line(tmp_path, answer, line):
    source = tmp_path / "template"
    shutil.copytree(ROOT / "template", source)
    out = tmp_path / "out"
    copier.run_copy(str(source), out, data={"suite_requirement": answer}, defaults=True, quiet=True)
    lines = (out / "requirements.txt").read_text().splitlines()
    assert [x for x in lines if x.startswith("model-cicd")] == [line]
    assert "suite_version" not in (out / ".copier-answers.yml").read_text()
