"""Issue 24, goals 2 and 3: `invoke bento` builds the bento in the suite's process
(cicd.bento_build), not through `bentoml build`, whose start alone costs 1-3 s here (2.2-2.7 s
without compiled bytecode).

In a trained clone with its own BentoML store: the step starts no `bentoml` process (every
process it starts is recorded), and the bento it stores is the one `bentoml build` makes from
the same bentofile, version and ``--arg`` (every file the same, bento.yaml but for its build
time). A service that names itself otherwise than the suite expects stops the step with one
line saying what to add to the bentofile, not a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cicd.bentomodel import read_tag
from tests.support.project import Project

pytestmark = [pytest.mark.slow]

ARCHIVE = Path("model/celestial_bodies_classifier_model.bentomodel")
BENTO = "celestial_bodies_classifier"
# `invoke ARGS` with every process it starts recorded: subprocess.Popen is how the suite's
# runner, BentoML's lock (uv) and git start one. The record is written however it ends.
RECORDING_INVOKE = """
import json, subprocess, sys

started = []
popen_init = subprocess.Popen.__init__

def recording(self, args, *rest, **kwargs):
    started.append([str(part) for part in args] if isinstance(args, (list, tuple)) else [args])
    popen_init(self, args, *rest, **kwargs)

subprocess.Popen.__init__ = recording
from invoke.main import program

try:
    program.run(["invoke", *sys.argv[2:]])
finally:
    with open(sys.argv[1], "w") as out:
        json.dump(started, out)
"""


@pytest.fixture(scope="module")
def clone(new_project, training) -> Iterator[Project]:
    project = new_project("inproc-bento", None, trained=training)
    project.run("dvc", "pull", str(ARCHIVE))
    yield project


def stored_bentos(home: Path) -> list[Path]:
    return sorted(p for p in (home / "bentos" / BENTO).iterdir() if p.is_dir())


def is_bentoml(argv: list[str]) -> bool:
    """A `bentoml` command line, however started (its script, or `python -m bentoml`)."""
    return Path(argv[0]).name == "bentoml" or argv[1:3] == ["-m", "bentoml"]


def test_the_bento_step_starts_no_bentoml_process(clone, tmp_path):
    script, record = tmp_path / "recording_invoke.py", tmp_path / "started.json"
    script.write_text(RECORDING_INVOKE)

    clone.run(sys.executable, str(script), str(record), "bento")

    started = json.loads(record.read_text())
    assert not [argv for argv in started if is_bentoml(argv)], started
    # The recorder saw the step's processes: the commit's (git) and BentoML's lock (uv).
    assert any(Path(argv[0]).name == "git" for argv in started), started
    assert any(Path(argv[0]).name == "uv" and "compile" in argv for argv in started), started
    (bento,) = stored_bentos(clone.bentoml_home)
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["args"] == {"model_tag": read_tag(clone.path(ARCHIVE))}


def files(bento: Path) -> dict[str, object]:
    """Every file of a stored bento by path; bento.yaml parsed, without its build time."""
    found: dict[str, object] = {}
    for path in sorted(p for p in bento.rglob("*") if p.is_file()):
        name = path.relative_to(bento).as_posix()
        found[name] = path.read_bytes()
    info = yaml.safe_load(found.pop("bento.yaml"))  # type: ignore[arg-type]
    info.pop("creation_time")
    found["bento.yaml"] = info
    return found


def test_the_bento_is_the_one_bentoml_build_makes(clone, tmp_path):
    clone.invoke("bento")
    (ours,) = stored_bentos(clone.bentoml_home)
    model = read_tag(clone.path(ARCHIVE))
    # The command line's bento, in a store of its own: same bentofile, version, --arg.
    cli = {"BENTOML_HOME": str(tmp_path / "cli-store"), "BENTOML_DO_NOT_TRACK": "True"}
    clone.run("bentoml", "models", "import", str(clone.path(ARCHIVE)), env=cli)
    clone.run(
        "bentoml", "build", "--bentofile", "bentofile.yaml", "--version", ours.name,
        "--output=tag", "--arg", f"model_tag={model}", "src", env=cli,
    )  # fmt: skip
    (theirs,) = stored_bentos(tmp_path / "cli-store")

    assert theirs.name == ours.name
    assert files(ours) == files(theirs)


def test_a_service_that_names_itself_is_one_line_saying_what_to_add(clone):
    names = clone.path("src/celestial/__init__.py")
    original = names.read_text()
    names.write_text(original.replace(f'SERVICE_NAME = "{BENTO}"', 'SERVICE_NAME = "its_own"'))
    try:
        done = clone.invoke("bento", check=False)
    finally:
        names.write_text(original)

    assert done.returncode == 1
    said = done.stdout + done.stderr
    assert "bentoml build named the bento its_own, not celestial_bodies_classifier: " in said
    assert "add `name: its_own` to bentofile.yaml" in said
    assert "Traceback" not in said
