"""The committed dvc.lock records the code its stages ran: a change to a stage's code (the
example's, or the suite's `cicd.bentomodel` that `evaluate` imports) without `nox -s train`
and a commit of dvc.lock fails here in a second, not after a 14-minute fresh-clone run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCK = yaml.safe_load((ROOT / "dvc.lock").read_text())
CODE = sorted(
    {
        dep["path"]
        for stage in LOCK["stages"].values()
        for dep in stage.get("deps", [])
        if (ROOT / dep["path"]).is_file() and dep["path"].endswith(".py")
    }
)
RECORDED = {
    dep["path"]: dep["md5"]
    for stage in LOCK["stages"].values()
    for dep in stage.get("deps", [])
    if dep["path"] in CODE
}


def test_the_lock_records_code():
    assert "src/train.py" in CODE and "src/cicd/bentomodel.py" in CODE


@pytest.mark.parametrize("path", CODE)
def test_the_lock_records_the_code_as_it_is(path):
    actual = hashlib.md5((ROOT / path).read_bytes()).hexdigest()
    assert actual == RECORDED[path], (
        f"{path} changed since dvc.lock was written: run `nox -s train` and commit dvc.lock"
    )
