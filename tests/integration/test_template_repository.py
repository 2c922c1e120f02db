"""A model repository adopts the suite: a new repository rendered from template/ (the iris
model), the suite installed from a wheel built from this working tree, then its own
`nox -s train`, `invoke keygen` (the rendered README's first-run step), a signed
`nox -s publish` (the embedded registry on a port the OS assigned) and `nox -s verify`, which
checks the signatures against the committed public key. Minutes: it builds an image.

The render, the wheel and the train are the run's shared ones (``rendered_template``,
tests/support/template.py; test_template_ci_github.py starts from the same trained commit):
this test checks what the train left, then carries on in that working copy as the laptop's
next steps."""

from __future__ import annotations

import json
import re
import sys

import pytest

from cicd import local_registry
from cicd.registry import RegistryClient
from cicd.shell import Runner
from tests.support.project import refused_port, remove_images
from tests.support.template import IDENTITY, IMAGE, RenderedTemplate, run

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def test_a_new_repository_trains_publishes_signed_and_verifies_with_the_installed_suite(
    tmp_path, rendered_template: RenderedTemplate
):
    repo, env = rendered_template.root, rendered_template.env
    with refused_port() as port:
        pass  # released: the embedded registry takes its port as a setting
    storage = tmp_path / "registry"
    env["INVOKE_SUITE_LOCAL_REGISTRY_PORT"] = str(port)
    env["INVOKE_SUITE_LOCAL_REGISTRY_STORAGE"] = str(storage)
    git = ["git", *IDENTITY]

    address = f"127.0.0.1:{port}"
    try:
        # What the shared `nox -s train` left, its outputs and dvc.lock committed.
        assert "Session train was successful" in rendered_template.train_output
        assert (repo / "model" / f"{IMAGE.replace('-', '_')}_model.bentomodel").exists()
        metrics = json.loads((repo / "evaluation" / "metrics.json").read_text())
        assert metrics["accuracy"] >= 0.8
        assert run(["git", "status", "--porcelain"], repo, env) == ""
        assert rendered_template.trained == run(["git", "rev-parse", "HEAD"], repo, env).strip()

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
