"""The containerize step says when it builds on scripts/build-base-image's local stand-in
for the base image (which takes the official name on the engine), and only then."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import uuid

import pytest

from cicd import image
from cicd import settings as settings_module
from cicd.context import Run
from cicd.labels import STAND_IN_LABEL
from cicd.shell import Runner
from tests.support.project import ROOT, docker, docker_client_path

pytestmark = [pytest.mark.docker]


@pytest.fixture
def empty_image():
    """Make empty images (`docker import` of an empty tar) with the given labels; removed after."""
    made = []

    def make(*labels: str) -> str:
        name = f"model-cicd-test/base-{uuid.uuid4().hex[:8]}:1"
        changes = [arg for label in labels for arg in ("--change", f"LABEL {label}")]
        empty_tar = b"\0" * 1024  # an empty tar archive: two zero blocks
        subprocess.run(
            [docker_client_path(), "import", *changes, "-", name],
            input=empty_tar, capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        made.append(name)
        return name

    yield make
    for name in made:
        docker("rmi", name, check=False)


def notice(base_image: str) -> str:
    settings = dataclasses.replace(settings_module.load(ROOT, {}), base_image=base_image)
    return image.stand_in_notice(Run(Runner(out=io.StringIO()), settings, {}))


def test_the_stand_in_is_named_and_any_other_base_image_is_not(empty_image):
    marked = empty_image(f"{STAND_IN_LABEL}=python:3.11-slim")
    assert notice(marked) == (
        f"WARNING: base image {marked} is this engine's local stand-in (Debian python3.11 + uv, "
        "made by scripts/build-base-image), not the registry's image: see docs/machines.md"
    )
    older = empty_image(  # a stand-in of the earlier script: only its description says so
        'org.opencontainers.image.description="local stand-in for python:3.11-slim, made by '
        'scripts/build-base-image"'
    )
    assert notice(older).startswith(f"WARNING: base image {older} is this engine's local")
    assert notice(empty_image("org.opencontainers.image.description=official")) == ""
    assert notice("model-cicd-test/absent:1") == ""  # not on the engine: nothing to say
