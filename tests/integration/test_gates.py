"""Metric gates as a user meets them: `invoke report` fails after writing the report, and the
publish session stops at its first step, before anything is pulled or built.

The report runs in a copy of the toy DVC project of test_report (`main` ran with lr 0.1:
val_acc 0.2, val_loss 0.9; `feature` with lr 0.3: val_acc 0.6, val_loss 0.7), given this
repository's tasks.py and invoke.yaml so that `invoke report` is the real step.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_report import Project as ToyProject
from tests.integration.test_report import _env, project  # noqa: F401 (a fixture)
from tests.support.project import ROOT, Project

pytestmark = pytest.mark.slow

FAILING = """\
gates:
  val_acc: {min: 0.7, max_drop_pct: 10}
  val_loss: {max: 0.8, max_rise: 0.05}
"""


def invoke(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**_env(), "PYTHONPATH": str(ROOT / "src")}  # this checkout's suite
    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def toy(project: ToyProject, tmp_path: Path) -> Path:  # noqa: F811
    work = tmp_path / "work"
    shutil.copytree(project.work, work, symlinks=True)
    for name in ("tasks.py", "invoke.yaml"):
        shutil.copy(ROOT / name, work / name)
    return work


def test_a_failing_gate_fails_report_after_writing_it(toy: Path):
    (toy / "gates.yaml").write_text(FAILING)
    done = invoke(toy, "report", "--no-publish")
    assert done.returncode == 1, done.stdout + done.stderr
    error = done.stderr.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert error.startswith("error: metric gate failed: val_acc = 0.6, must be >= 0.7 (min")
    text = (toy / "report.md").read_text()  # written before failing
    assert "## Metric gates (`gates.yaml`)" in text and "**1 of 4 failed.**" in text
    assert "| ❌ fail | val_acc | min | 0.6 | &gt;= 0.7 |" in text
    # The relative bounds use main's values (val_acc 0.2, val_loss 0.9), not the workspace's.
    assert "| ✅ pass | val_acc | max_drop_pct | 0.6 | &gt;= 0.18 \\(main 0.2 − 10%\\) |" in text
    assert "| ✅ pass | val_loss | max_rise | 0.7 | &lt;= 0.95 \\(main 0.9 + 0.05\\) |" in text
    assert "gate fail: val_acc = 0.6" in done.stdout

    done = invoke(toy, "report", "--no-publish", "--no-gates")
    assert done.returncode == 0, done.stderr
    assert "WARNING: --no-gates: the metric gates of gates.yaml are NOT checked" in done.stdout
    assert "**Not checked: `--no-gates` was used.**" in (toy / "report.md").read_text()

    (toy / "gates.yaml").write_text("gates:\n  val_acc: {min: 0.5, max_drop: 0.01}\n")
    done = invoke(toy, "report", "--no-publish")
    assert done.returncode == 0, done.stderr
    assert "All pass." in (toy / "report.md").read_text()


def test_a_failing_gate_stops_the_publish_session_before_anything_runs(new_project, registry):
    clone: Project = new_project("gates-publish", registry)
    clone.env["PYTHONPATH"] = str(clone.root / "src")
    (clone.root / "gates.yaml").write_text("gates:\n  val_acc: {min: 0.995}\n")
    before = registry.requests()
    done = clone.session("publish", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: metric gate failed: val_acc = 0.99, must")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "bentoml" not in done.stdout and "dvc pull" not in done.stdout
    assert registry.requests() == before, "the registry was asked"
    assert not (clone.root / "model").exists()

    # --no-gates (given to the session, so to its first step): loud, and the run goes on
    # (here to the model, which this fresh clone lacks).
    done = clone.session("publish", "--no-gates", check=False)
    assert "WARNING: --no-gates" in done.stdout.splitlines()[0]
    assert "dvc pull model/" in done.stdout
