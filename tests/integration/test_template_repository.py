"""A model repository adopts the suite: a new repository rendered from template/ (the iris
model), the suite installed from a wheel built from this working tree, then its own
`nox -s train`, `invoke keygen` (the rendered README's first-run step), a signed
`nox -s publish` (the embedded registry on a port the OS assigned) and `nox -s verify`, which
checks the signatures against the committed public key. Minutes: it builds a wheel, three
session environments and an image."""

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


def test_a_new_repository_trains_publishes_signed_and_verifies_with_the_installed_suite(
    tmp_path,
):
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

        # The rendered README's first run with signatures: a key pair (the private key
        # outside the repository), the public key committed, SIGNING_KEY set for publish.
        readme = (repo / "README.md").read_text()
        assert "invoke keygen --private-key" in readme and "SIGNING_KEY=" in readme
        private = tmp_path / "keys" / "signing.pem"
        made = run([str(repo / ".nox/train/bin/invoke"), "keygen", "--private-key",
                    str(private)], repo, env)  # fmt: skip
        keyid = re.search(r"key id ([0-9a-f]{16})…", made)
        assert keyid and (repo / "signing" / "publish.pub").exists(), made
        assert private.stat().st_mode & 0o077 == 0
        run([*git, "add", "signing/publish.pub"], repo, env)
        run([*git, "commit", "-qm", "The image signing key"], repo, env)
        sha = run(["git", "rev-parse", "HEAD"], repo, env).strip()

        signed_env = {**env, "SIGNING_KEY": private.read_text()}
        published = run([sys.executable, "-m", "nox", "-s", "publish"], repo, signed_env)
        assert f"published {address}/{IMAGE}:{sha}" in published
        assert "UNSIGNED" not in published and "SIGNING_KEY is not set" not in published
        # The smoke step's line (quiet by default): the JSON answer, checked by the function.
        assert re.search(r"✓ smoke +answers .*, as the model does", published), published
        assert RegistryClient(address).manifest(IMAGE, sha) is not None

        # verify as CI runs it: no key in the environment, no --allow-unsigned.
        verified = run([sys.executable, "-m", "nox", "-s", "verify"], repo, env)
        assert f"ok    signature  signed by key {keyid[1]}… (publish.pub)" in verified, verified
        assert "ok    dvc.lock" in verified and "ok    model" in verified
        # Its own archive (the settings' path), bound to its train stage's output (issue 23, 3).
        archive = "ok    archive    model/iris_demo_model.bentomodel read from the DVC cache: md5 "
        assert archive in verified and "is train:model's in the dvc.lock of " in verified, verified
    finally:
        local_registry.stop_port(Runner(), port, storage)
        remove_images(f"{address}/")
