"""Arguments after `--` reach one session's first step: with several pipeline sessions in
one nox run they are refused in one line that says what to type instead."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("selection", "environ"),
    [
        (["-s", "train", "publish"], {}),
        (["-k", "train or publish"], {}),
        ([], {"NOXSESSION": "train,publish"}),
    ],
)
def test_several_pipeline_sessions_refuse_arguments(selection, environ):
    # --no-venv: the refusal comes before anything is installed or run
    nox = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--no-venv"]
    done = subprocess.run(
        [*nox, *selection, "--", "--force"],
        capture_output=True,
        text=True,
        env={**os.environ, **environ},
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert (
        "Session train aborted: `-- --force` would go to the first step of each of train, "
        "publish: give arguments to one session at a time, e.g. "
        "`nox -s train && nox -s publish -- --force`"
    ) in done.stderr


@pytest.mark.parametrize(
    ("pipeline", "posargs", "refused"),
    [
        (["publish"], ["--force"], False),
        (["train", "publish"], [], False),
        (["train", "report", "publish"], ["--no-gates"], True),
        ([], ["-k", "x"], False),  # `nox -s tests -- -k x`: no pipeline session
    ],
)
def test_arguments_are_refused_only_when_they_would_be_shared(pipeline, posargs, refused):
    import noxfile

    assert bool(noxfile.shared_arguments(pipeline, posargs)) is refused
