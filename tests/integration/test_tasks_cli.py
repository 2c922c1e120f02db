"""The invoke steps as a user runs them: listed, documented, and dry-runnable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.project import SENTINEL

ROOT = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]
STEPS = [
    "pull", "repro", "push-data", "check-reproduced", "import-model", "bento", "containerize",
    "build", "smoke", "login", "push", "check-published", "registry", "serve", "report",
    "releases", "promote", "rollback", "check-gates",
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
    done = invoke(
        "--dry", "check-published", env={"CONTAINER_REGISTRY_HOST": "Not Valid"}, check=False
    )
    assert done.returncode != 0
    assert done.stderr.strip().startswith("error: registry 'Not Valid' is not a valid")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_dry_run_publish_shows_every_command_and_runs_none(new_project, registry):
    """In a fresh clone (no model, no data): the whole publish path is shown, nothing runs."""
    project = new_project("dry-run", registry)
    before = registry.requests()
    done = project.session("publish", dry=True)
    address = registry.address
    shown = [line for line in done.stdout.splitlines() if line.startswith("[dry-run] $ ")]
    expected = [
        "dvc pull model/celestial_bodies_classifier_model.bentomodel",
        f"GET http://{address}/v2/",
        "bentoml models import",
        "bentoml build --bentofile bentofile.yaml --version",
        "bentoml containerize celestial_bodies_classifier:",
        "--opt label=org.opencontainers.image.revision=",
        "run --detach --name smoke-",
        "--publish 127.0.0.1::3000 ",  # the host port: Docker assigns it
        "rm --force smoke-",  # the smoke container is always removed
        "POST 'http://127.0.0.1:<port>/predict'",
        f"login {address} --username ci-bot --password-stdin",
        f"push {address}/celestial-bodies-classifier:",
        # latest moves by a manifest PUT of the pushed SHA tag, after attest (no second push).
        f"PUT http://{address}/v2/celestial-bodies-classifier/manifests/latest",
        f"logout {address}",
        # attest: the SBOM read from the image, then both documents stored next to it.
        "run --rm --name sbom-",
        "cyclonedx-py environment",
        "/v2/celestial-bodies-classifier/manifests/sha256-<pushed digest>.sbom'",
        "/v2/celestial-bodies-classifier/manifests/sha256-<pushed digest>.att'",
    ]
    for fragment in expected:
        assert any(fragment in line for line in shown), f"{fragment!r} not shown:\n{done.stdout}"
    assert SENTINEL not in done.stdout + done.stderr
    assert registry.requests() == before, "a dry run talked to the registry"
    assert not (project.root / "model").exists(), "a dry run pulled the model"
    assert not list(project.bentoml_home.glob("bentos/*")), "a dry run built a bento"


@pytest.mark.parametrize(("option", "instead"), [("--pty", "invoke -e"), ("--warn-only", "one")])
def test_an_invoke_option_the_suite_does_not_use_is_refused_in_one_line(option, instead):
    done = invoke(option, "check-gates", check=False)
    assert done.returncode == 1
    error = done.stderr.strip()
    assert error.startswith(f"error: invoke's {option} is not used by the suite: ")
    assert instead in error and len(error.splitlines()) == 1


def test_quiet_by_default_everything_with_echo_nothing_with_hide():
    quiet = invoke("check-gates", env={"INVOKE_SUITE_VERBOSE": "0"}).stdout
    assert quiet.startswith("✓ check-gates ") and len(quiet.splitlines()) == 1, quiet
    echoed = invoke("-e", "check-gates", env={"INVOKE_SUITE_VERBOSE": "0"}).stdout
    assert "gate pass: val_acc" in echoed and "✓ check-gates " in echoed
    assert "gate pass: val_acc" in invoke("check-gates", env={"INVOKE_SUITE_VERBOSE": "1"}).stdout
    hidden = invoke("--hide", "both", "check-gates", env={"INVOKE_SUITE_VERBOSE": "0"})
    assert hidden.stdout == ""


def test_the_command_timeout_option_is_the_deadline_of_the_run(tmp_path):
    """invoke's --command-timeout (-T) stands for suite.command_timeout in that run."""
    slow = tmp_path / "uv"  # what `invoke freeze` runs, made slow
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    path = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"
    done = invoke("--command-timeout", "1", "freeze", env={"PATH": path}, check=False)
    assert done.returncode == 1
    assert "did not finish within 1 s and was stopped" in done.stderr, done.stderr
