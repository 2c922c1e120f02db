"""A model repository adopts the suite: a new repository rendered from template/ (the iris
model), the suite installed from a wheel built from this working tree, then its own
`nox -s train`, `nox -s publish` (the embedded registry on a port the OS assigned) and
`invoke verify`. Minutes: it builds a wheel, two session environments and an image."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cicd import local_registry
from cicd.registry import RegistryClient
from cicd.shell import Runner
from tests.support.project import CI_VARIABLES, refused_port, remove_images

copier = pytest.importorskip("copier")

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "iris-demo"


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 1200) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_a_new_repository_trains_publishes_and_verifies_with_the_installed_suite(tmp_path):
    bin_dir = Path(sys.executable).parent  # nox, uv, invoke of the tests' environment
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["BENTOML_HOME"] = str(tmp_path / "bentoml")
    with refused_port() as port:
        pass  # released: the embedded registry takes its port as a setting
    storage = tmp_path / "registry"
    env["INVOKE_SUITE_LOCAL_REGISTRY_PORT"] = str(port)
    env["INVOKE_SUITE_LOCAL_REGISTRY_STORAGE"] = str(storage)

    run(["uv", "build", "--quiet", "--out-dir", str(tmp_path / "dist"), str(ROOT)], ROOT, env)
    (wheel,) = (tmp_path / "dist").glob("model_cicd-*.whl")
    template = tmp_path / "template"
    shutil.copytree(ROOT / "template", template)  # the working tree's, not the last tag's
    repo = tmp_path / "iris-demo"
    copier.run_copy(
        str(template), repo, defaults=True, unsafe=True, quiet=True,
        data={"project_name": IMAGE, "suite_requirement": f"model-cicd @ {wheel.as_uri()}"},
    )  # fmt: skip
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run([*git, "add", "-A"], repo, env)
    run([*git, "commit", "-qm", "From the model-cicd template"], repo, env)

    address = f"127.0.0.1:{port}"
    try:
        run([sys.executable, "-m", "nox", "-s", "train"], repo, env)
        assert (repo / "model" / f"{IMAGE.replace('-', '_')}_model.bentomodel").exists()
        metrics = json.loads((repo / "evaluation" / "metrics.json").read_text())
        assert metrics["accuracy"] >= 0.8
        run([*git, "add", "-A"], repo, env)
        run([*git, "commit", "-qm", "Trained"], repo, env)
        sha = run(["git", "rev-parse", "HEAD"], repo, env).strip()

        published = run([sys.executable, "-m", "nox", "-s", "publish"], repo, env)
        assert f"published {address}/{IMAGE}:{sha}" in published
        # The smoke step's line (quiet by default): the JSON answer, checked by the function.
        assert re.search(r"✓ smoke +answers .*, as the model does", published), published
        assert RegistryClient(address).manifest(IMAGE, sha) is not None

        verified = run(
            [str(repo / ".nox/publish/bin/invoke"), "verify", "--allow-unsigned"], repo, env
        )
        assert "ok    dvc.lock" in verified and "ok    model" in verified
    finally:
        local_registry.stop_port(Runner(), port, storage)
        remove_images(f"{address}/")
