"""containerize builds in the suite's process: what ``bentoml containerize`` would give
BentoML's docker backend, run as ``docker build`` with the chosen client.

The options are checked against BentoML's own command line (its click command parses the
equivalent ``bentoml containerize`` words; its build is replaced by a recorder). The build's
environment and failure are checked with a stand-in docker client (a script that records its
arguments and environment); the bento's build context is a stand-in directory
(tests/unit/test_containerize_cache.py's); the real build runs in tests/integration."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from cicd import containerize as containerize_module
from cicd import image
from cicd.ci import Revision
from cicd.containerize import BuildOptions, containerize
from cicd.context import Run
from cicd.docker import Client
from cicd.errors import CommandError, ContainerizeError
from cicd.settings import load
from cicd.shell import Runner
from tests.unit.test_containerize_cache import (
    MODEL,
    PASSWORD,
    REPOSITORY,
    SHA,
    USER,
    FakeRegistry,
    image_config,
    put_image,
    registry,  # noqa: F401  (the fixture)
    stand_in_context,
    trusted_key,  # noqa: F401  (the fixture)
)

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ID = "sha256:" + "ab" * 32
SIGNING_SECRET = "not-a-real-signing-key-7d41"

SHIM = """#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:2] == ["image", "inspect"]:  # the base image's stand-in notice: not in this engine
    sys.exit("Error: No such image")
config = Path(os.environ.get("DOCKER_CONFIG", "/nonexistent"), "config.json")
Path({record!r}).write_text(json.dumps({{
    "args": args,
    "env": dict(os.environ),
    "config": json.loads(config.read_text()) if config.exists() else None,
}}))
if "--iidfile" in args:
    Path(args[args.index("--iidfile") + 1]).write_text({image_id!r})
print("#5 [3/9] RUN uv pip install")
print({last!r})
sys.exit({code})
"""


def docker_shim(directory: Path, code: int = 0, last: str = "#9 DONE 0.1s") -> Path:
    """A `docker` that records its arguments, environment and DOCKER_CONFIG's config.json
    to ``directory/record.json``, writes ``--iidfile``, prints two lines, exits ``code``."""
    directory.mkdir(exist_ok=True)
    shim = directory / "docker"
    text = SHIM.format(
        python=sys.executable,
        record=str(directory / "record.json"),
        image_id=IMAGE_ID,
        last=last,
        code=code,
    )
    shim.write_text(text)
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return shim


def shim_run(host: str, shim: Path, key: Path | None, dry: bool = False) -> Run:
    """A real runner, the registry's credentials, ``shim`` as the chosen docker client."""
    environ = {
        "CONTAINER_REGISTRY_HOST": host,
        "CONTAINER_REGISTRY_USERNAME": USER,
        "CONTAINER_REGISTRY_PASSWORD": PASSWORD,
    }
    settings = load(ROOT, environ)
    if key is not None:
        settings = dataclasses.replace(settings, signing_public_key=key)
    run = Run(Runner(dry=dry, out=io.StringIO()), settings, environ)
    run.runner.add_secret(PASSWORD)
    run.runner.add_secret(SIGNING_SECRET)
    run.__dict__["docker"] = Client(str(shim), {"DOCKER_BUILDKIT": "1"})
    return run


def build(run: Run) -> image.Image:
    return containerize(run, image.Target(Revision(SHA), MODEL, run.settings.repository))


@pytest.fixture(autouse=True)
def no_bento_store(monkeypatch):
    monkeypatch.setattr(containerize_module, "build_context", stand_in_context)


def test_the_build_gets_what_the_command_line_gives_bentomls_docker_backend(monkeypatch):
    """The equivalent `bentoml containerize` words, parsed by BentoML 1.4's own command,
    reach `bentoml.container.build` as the options the suite gives the backend."""
    import bentoml_cli.containerize as cli
    from click.testing import CliRunner

    options = BuildOptions(
        bento_tag="celestial_bodies_classifier:" + SHA,
        image_tags=(f"127.0.0.1:5000/{REPOSITORY}:{SHA}", f"127.0.0.1:5000/{REPOSITORY}:latest"),
        labels=("org.opencontainers.image.revision=" + SHA, "model.digest=sha256:1:2=3"),
        cache_from=(f"127.0.0.1:5000/{REPOSITORY}@sha256:" + "c" * 64,),
        iidfile="/tmp/containerize-x/image-id",
    )
    calls = []

    def recorded(bento_tag, backend, image_tag, features, **kwargs):
        calls.append((bento_tag, backend, image_tag, features, kwargs))

    monkeypatch.setattr(cli.container, "build", recorded)
    monkeypatch.setattr(cli.container, "health", lambda backend: True)
    CliRunner().invoke(cli.containerize_command, options.command()[2:])
    assert len(calls) == 1, "BentoML's command did not reach its build"
    bento_tag, backend, image_tag, features, kwargs = calls[0]
    assert (bento_tag, backend, features) == (options.bento_tag, "docker", None)
    ours = options.backend_options()
    assert ours.pop("tag") == image_tag == options.image_tags  # container.build's `tag`
    assert kwargs == {**ours, "_run_as_root": False}  # run_as_root: popped by the backend
    assert list(kwargs)[:-1] == list(ours), "another order of the build's arguments"


def test_the_docker_build_gets_the_clients_environment_and_no_secret(
    registry,  # noqa: F811
    trusted_key,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """The environment reaches the `docker build` that runs in place of BentoML's command:
    the chosen client's PATH and DOCKER_BUILDKIT, the cache login's DOCKER_CONFIG (the
    registry's credentials), BENTOML_DO_NOT_TRACK and the backend's defaults; none of the
    suite's secrets; and this process's environment is as it was."""
    FakeRegistry.auth = True
    latest = put_image("latest", image_config(1, 2))
    monkeypatch.setenv("CONTAINER_REGISTRY_PASSWORD", PASSWORD)
    monkeypatch.setenv("SIGNING_KEY", SIGNING_SECRET)
    monkeypatch.delenv("DOCKER_SCAN_SUGGEST", raising=False)
    before = dict(os.environ)
    shim = docker_shim(tmp_path / "bin")
    built = build(shim_run(registry, shim, trusted_key))
    assert dict(os.environ) == before, "containerize changed this process's environment"
    assert built.id == IMAGE_ID  # read from --iidfile
    record = json.loads((tmp_path / "bin" / "record.json").read_text())
    args, env = record["args"], record["env"]
    assert args[0] == "build" and f"{registry}/{REPOSITORY}@{latest}" in args
    assert env["PATH"].split(os.pathsep)[0] == str(shim.parent)
    assert env["DOCKER_BUILDKIT"] == "1" and env["DOCKER_SCAN_SUGGEST"] == "false"
    assert env["BENTOML_DO_NOT_TRACK"] == "True"
    assert record["config"] is not None, "the build got no DOCKER_CONFIG with the login"
    assert list(record["config"]["auths"]) == [registry]
    assert not Path(env["DOCKER_CONFIG"]).exists(), "the credentials outlived the build"
    assert "CONTAINER_REGISTRY_PASSWORD" not in env and "SIGNING_KEY" not in env
    assert PASSWORD not in json.dumps(env) and SIGNING_SECRET not in json.dumps(env)


def test_a_failed_build_is_one_line_naming_the_equivalent_command(registry, tmp_path):  # noqa: F811
    shim = docker_shim(tmp_path / "bin", code=1, last="ERROR: failed to solve: step 5 failed")
    run = shim_run(registry, shim, None)
    with pytest.raises(CommandError) as failed:
        build(run)
    message = str(failed.value)
    assert len(message.splitlines()) == 1
    assert re.match(r"`\S*bentoml containerize celestial_bodies_classifier:", message), message
    assert "failed with exit code 1: ERROR: failed to solve: step 5 failed" in message
    assert message.endswith("see model-cicd's docs/troubleshooting.md")
    assert "RUN uv pip install" in failed.value.output  # the build's output, for the step
    assert PASSWORD not in message


def test_the_dry_run_shows_bentoml_containerize_and_builds_nothing(registry, tmp_path):  # noqa: F811
    shim = docker_shim(tmp_path / "bin")
    run = shim_run(registry, shim, None, dry=True)
    build(run)
    printed = run.runner.out.getvalue()
    assert "[dry-run] $ " in printed and " containerize celestial_bodies_classifier:" in printed
    assert not (tmp_path / "bin" / "record.json").exists(), "the dry run ran docker"


def test_a_bento_bentoml_cannot_read_is_one_line_saying_what_to_do(
    registry,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    import bentoml
    from bentoml.exceptions import NotFound

    def missing(tag):
        raise NotFound(f"Item '{tag}' is not found in BentoStore")

    monkeypatch.undo()  # the real build context, from a store that has no such bento
    monkeypatch.setattr(bentoml, "get", missing)
    shim = docker_shim(tmp_path / "bin")
    with pytest.raises(ContainerizeError) as failed:
        build(shim_run(registry, shim, None))
    message = str(failed.value)
    assert len(message.splitlines()) == 1 and "is not found in BentoStore" in message
    assert "invoke bento containerize" in message
    assert not (tmp_path / "bin" / "record.json").exists()
