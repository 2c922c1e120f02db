"""`invoke repro` from an environment that is not activated (`.venv/bin/invoke repro`) runs
the pipeline's stages with that environment's Python, as it runs that environment's dvc: a
stage's command (`python src/train.py`) is found on PATH, by dvc."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

from cicd import dvc
from cicd.context import Run
from cicd.settings import load
from cicd.shell import Runner, tool

ROOT = Path(__file__).parents[2]
STAGE = """\
stages:
  which:
    cmd: python -c "import sys; open('python.txt', 'w').write(sys.prefix)"
    outs: [python.txt]
"""


def test_repro_runs_the_stages_with_the_suites_python_when_path_lacks_it(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([tool("dvc"), "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(STAGE)
    # Not activated: the system's directories only (Debian has no `python` there at all).
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    run = Run(Runner(out=io.StringIO()), dataclasses.replace(load(ROOT, {}), root=tmp_path), {})

    dvc.repro(run, pull_first=False)

    assert (tmp_path / "python.txt").read_text() == sys.prefix
