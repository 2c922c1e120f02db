"""`copier update` takes a later suite version into a rendered repository: a clone of this
working tree tagged v0.2.0 renders a new repository (`copier copy --vcs-ref v0.2.0`, as
docs/adopt.md says); its user commits edits of their own; a later tag of the suite changes a
template file and the suite's version; `copier update --defaults` brings both and keeps the
user's edits. Seconds: git and copier only (no training, no image)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.project import CI_VARIABLES, clone_working_tree

pytest.importorskip("copier")

BIN = Path(sys.executable).parent  # copier of the tests' environment
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
# The later version's change to a template file, and the user's own edits.
NEW_LINE = 'PYTHON = "3.11"  # the sessions\' Python (changed in 0.2.1)'
USER_TASK = '''

from invoke import task  # noqa: E402

from cicd.tasks import setup  # noqa: E402


@task
def hello(c):
    """Say which image this repository publishes."""
    print(setup(c).settings.repository)


ns.add_task(hello)
'''
USER_SESSION = '''

@nox.session(python=PYTHON)
def notebook(session: nox.Session) -> None:
    """The team's own session."""
    session.run("true")
'''


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_copier_update_brings_a_later_suite_version_and_keeps_the_user_s_edits(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    suite = clone_working_tree(tmp_path / "model-cicd")
    # -f: the clone carries the repository's own tags, and a released v0.2.0 is another commit
    run(["git", "tag", "-f", "v0.2.0"], suite, env)
    repo = tmp_path / "my-model"
    copier = str(BIN / "copier")
    # docs/adopt.md's command, with --defaults for no questions (an absolute path: copier
    # records it in .copier-answers.yml for update).
    run([copier, "copy", "--defaults", "--vcs-ref", "v0.2.0", str(suite), str(repo)], tmp_path, env)
    assert "model-cicd==0.2.0\n" in (repo / "requirements.txt").read_text()
    answers = (repo / ".copier-answers.yml").read_text()
    assert "_commit: v0.2.0" in answers and "suite_version" not in answers
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run([*GIT, "add", "-A"], repo, env)
    run([*GIT, "commit", "-qm", "From the model-cicd template"], repo, env)

    # The user's own edits: a task (docs/adopt.md's example) and a session of their own.
    with (repo / "tasks.py").open("a") as f:
        f.write(USER_TASK)
    with (repo / "noxfile.py").open("a") as f:
        f.write(USER_SESSION)
    run([*GIT, "commit", "-qam", "Our own task and session"], repo, env)
    tasks_before = (repo / "tasks.py").read_text()

    # The suite's next version: a template file changed, the version bumped, a new tag.
    template = suite / "template" / "noxfile.py.jinja"
    text = template.read_text()
    assert 'PYTHON = "3.11"\n' in text
    template.write_text(text.replace('PYTHON = "3.11"\n', NEW_LINE + "\n"))
    questions = suite / "template" / "copier.yml"
    text = questions.read_text()
    assert 'default: "0.2.0"' in text
    questions.write_text(text.replace('default: "0.2.0"', 'default: "0.2.1"'))
    run([*GIT, "commit", "-qam", "0.2.1"], suite, env)
    run(["git", "tag", "-f", "v0.2.1"], suite, env)

    out = run([copier, "update", "--defaults"], repo, env)
    assert "0.2.1" in out, out
    noxfile = (repo / "noxfile.py").read_text()
    assert NEW_LINE in noxfile  # the template's change arrived
    assert "def notebook(session" in noxfile  # the user's session in that same file is kept
    assert (repo / "tasks.py").read_text() == tasks_before  # the user's task is kept
    assert "model-cicd==0.2.1\n" in (repo / "requirements.txt").read_text()  # the pin moved
    assert "_commit: v0.2.1" in (repo / ".copier-answers.yml").read_text()
    status = run(["git", "status", "--porcelain"], repo, env)
    assert ".rej" not in status and "<<<<<<<" not in noxfile, status
