"""The test run's one repository rendered from template/ and trained, shared by the tests of
an adopting repository (test_template_repository.py, test_template_ci_github.py).

Rendering is cheap; what is not is what comes with it: a wheel of the suite built from this
working tree, the rendered repository's `nox -s train` (a session environment with the suite
installed from that wheel, then DVC's stages). :func:`render_and_train_once` does it once per
test run, under a file lock like :func:`tests.support.project.train_once`, so that pytest-xdist's
workers wait for the first one instead of doing it again beside it.

What it makes is a user's laptop after the rendered README's first steps: the repository with
two commits ("From the model-cicd template", then "Trained" with dvc.lock and the model), its
outputs, `.nox/train` and its BentoML store. test_template_repository.py carries on there (the
laptop's next steps: keygen, publish, verify); test_template_ci_github.py clones the trained
commit alone, as a runner checks it out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.project import CI_VARIABLES, ROOT, TEMPLATE_IMAGE

IMAGE = TEMPLATE_IMAGE
IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@example.com")


@dataclass(frozen=True)
class RenderedTemplate:
    root: Path  # the rendered, trained repository (the laptop's working copy)
    trained: str  # the commit "Trained": dvc.lock and the model's pointer committed
    wheel: Path  # the suite's wheel that its requirements.txt names
    train_output: str  # what `nox -s train` printed

    @property
    def env(self) -> dict[str, str]:
        """The laptop's environment the training ran in (rebuilt, not kept in the record:
        the machine's variables are no business of a file)."""
        return laptop_env(self.root.parent / "bentoml")


def laptop_env(bentoml_home: Path) -> dict[str, str]:
    """A user's shell: no CI variables, this test run's nox/uv/invoke first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["BENTOML_HOME"] = str(bentoml_home)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 1200) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def _render_and_train(base: Path) -> RenderedTemplate:
    import copier

    env = laptop_env(base / "bentoml")
    dist = base / "dist"
    run(["uv", "build", "--quiet", "--wheel", "--out-dir", str(dist), str(ROOT)], ROOT, env)
    (wheel,) = dist.glob("model_cicd-*.whl")
    template = base / "template"
    shutil.copytree(ROOT / "template", template)  # the working tree's, not the last tag's
    repo = base / IMAGE
    copier.run_copy(
        str(template), repo, defaults=True, unsafe=True, quiet=True,
        data={"project_name": IMAGE, "suite_requirement": f"model-cicd @ {wheel.as_uri()}"},
    )  # fmt: skip
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", *IDENTITY, "add", "-A"], repo, env)
    run(["git", *IDENTITY, "commit", "-qm", "From the model-cicd template"], repo, env)
    # The rendered README's next step: train on the laptop, commit dvc.lock (CI builds a
    # commit and checks that its retrain reproduces it).
    output = run([sys.executable, "-m", "nox", "-s", "train"], repo, env)
    run(["git", *IDENTITY, "add", "-A"], repo, env)
    run(["git", *IDENTITY, "commit", "-qm", "Trained"], repo, env)
    trained = run(["git", "rev-parse", "HEAD"], repo, env).strip()
    return RenderedTemplate(repo, trained, wheel, output)


def render_and_train_once(shared: Path) -> RenderedTemplate:
    """The first caller in the test run renders and trains (under a lock: pytest-xdist's other
    workers wait for it); every caller gets the same :class:`RenderedTemplate`."""
    from filelock import FileLock

    base = shared / "template-rendered"
    record = shared / "template-rendered.json"
    with FileLock(str(shared / "template-rendered.lock")):
        if not record.exists():
            if base.exists():  # a first attempt that failed half-way: start over
                shutil.rmtree(base)
            base.mkdir()
            made = _render_and_train(base)
            fields = {
                "root": str(made.root), "trained": made.trained, "wheel": str(made.wheel),
                "train_output": made.train_output,
            }  # fmt: skip
            record.write_text(json.dumps(fields))
    fields = json.loads(record.read_text())
    return RenderedTemplate(
        Path(fields["root"]), fields["trained"], Path(fields["wheel"]), fields["train_output"],
    )  # fmt: skip
