"""The invoke steps as a user runs them: listed, documented, and dry-runnable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]
STEPS = [
    "pull", "repro", "push-data", "train", "import-model", "bento", "containerize", "build",
    "smoke", "login", "push", "publish", "registry", "serve", "report",
]  # fmt: skip


def invoke(*args, cwd=ROOT, env=None, check=True):
    done = subprocess.run(
        [*INVOKE, *args], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_every_step_is_listed():
    listed = invoke("--list").stdout
    for step in STEPS:
        assert f"  {step} " in listed or f"  {step}\n" in listed, step


@pytest.mark.parametrize("step", STEPS)
def test_every_step_has_help(step):
    text = invoke(step, "--help").stdout
    assert "Docstring:" in text and "none" not in text.split("Docstring:")[1].splitlines()[1]


def test_bad_setting_is_one_line_and_non_zero():
    done = invoke("--dry", "publish", env={"CONTAINER_REGISTRY_HOST": "Not Valid"}, check=False)
    assert done.returncode != 0
    assert done.stderr.strip().startswith("error: registry 'Not Valid' is not a valid")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
