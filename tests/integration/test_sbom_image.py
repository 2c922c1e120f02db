"""The SBOM of a real image, made by a real engine: a tiny image ``FROM python:3.11-slim`` with
a venv at /app/.venv holding one small package (a wheel written here, unpacked offline), as
the service image has its environment. The SBOM of the published service image is checked in
test_supply_chain.py. Needs a Docker engine with the base image (scripts/bootstrap)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cicd import sbom
from cicd import settings as settings_module
from cicd.context import Run
from cicd.docker import choose_client
from cicd.labels import CONTAINER_LABEL
from cicd.shell import Runner
from tests.support import runs
from tests.support.project import ROOT, docker, docker_client_path

pytestmark = [pytest.mark.docker]

IMAGE = f"{runs.image('sbom-test-tiny')}:latest"
# In the environment running these tests, never in an image (test_supply_chain.py too).
HOST_ONLY = ("dvc", "nox", "invoke", "pytest", "cyclonedx-bom", "python-on-whales")
DOCKERFILE = """\
FROM python:3.11-slim
COPY tinypkg-0.4.2-py3-none-any.whl /tmp/
RUN python3 -m venv --without-pip /app/.venv \\
 && python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \\
    /tmp/tinypkg-0.4.2-py3-none-any.whl /app/.venv/lib/python3.11/site-packages \\
 && rm /tmp/tinypkg-0.4.2-py3-none-any.whl
"""


def write_wheel(path: Path) -> None:
    """A pure-Python wheel of ``tinypkg`` 0.4.2 with its RECORD, as a build backend makes it."""
    files = {
        "tinypkg/__init__.py": b'__version__ = "0.4.2"\n',
        "tinypkg-0.4.2.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.4.2\n"
            b"Summary: A package for the SBOM test\nLicense-Expression: MIT\n"
        ),
        "tinypkg-0.4.2.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinypkg-0.4.2.dist-info/RECORD,,")
    files["tinypkg-0.4.2.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory) -> Iterator[str]:
    context = tmp_path_factory.mktemp("sbom-image")
    (context / "Dockerfile").write_text(DOCKERFILE)
    write_wheel(context / "tinypkg-0.4.2-py3-none-any.whl")
    client = choose_client()
    # Without the run's label, as the real service image: the SBOM's container gets it from
    # the suite (CONTAINER_LABELS), which test_the_sbom_of_a_real_image checks.
    subprocess.run(
        [client.path, "build", "--quiet", "--network", "none", "--tag", IMAGE, str(context)],
        env={**os.environ, **client.build_env}, capture_output=True, text=True, check=True,
        timeout=300,
    )  # fmt: skip
    yield IMAGE
    docker("rmi", "--force", IMAGE, check=False)


def a_run(out: io.StringIO) -> Run:
    # The run's container labels, as every step of the tests gets them (tests/support/runs.py).
    environ = {runs.CONTAINER_LABELS: os.environ[runs.CONTAINER_LABELS]}
    return Run(Runner(out=out, verbose=True), settings_module.load(ROOT, environ), {})


def components(document: dict) -> dict[str, dict]:
    return {component["name"]: component for component in document["components"]}


def test_the_sbom_of_a_real_image(tiny_image, tmp_path, monkeypatch):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = io.StringIO()
    since = time.time()
    document = sbom.generate(a_run(out), tiny_image)
    assert document is not None
    # Had the step been killed, its container would have stayed: it carries the run's label
    # (the sweep of dead runs and the watchdog find it) and the suite's own.
    (labels,) = runs.created_labels(docker_client_path(), tiny_image, since)
    assert labels.get(runs.LABEL) == runs.current(), labels
    assert labels.get(CONTAINER_LABEL) == "sbom", labels

    text = json.dumps(document)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    found = components(document)
    tinypkg = found["tinypkg"]
    assert (tinypkg["version"], tinypkg["purl"]) == ("0.4.2", "pkg:pypi/tinypkg@0.4.2")
    assert tinypkg["licenses"] == [{"license": {"id": "MIT", "acknowledgement": "declared"}}]
    python = [c for c in document["components"] if c.get("purl", "").startswith("pkg:pypi/")]
    assert [c["name"] for c in python] == ["tinypkg"], "the image's venv holds only tinypkg"
    assert not set(HOST_ONLY) & set(found), "the host's packages must not be in the SBOM"
    assert found["libc6"]["purl"].startswith("pkg:deb/debian/libc6@")
    assert "?arch=" in found["libc6"]["purl"]
    assert (found["debian"]["type"], found["debian"]["version"]) == ("operating-system", "12")
    image = document["metadata"]["component"]
    assert (image["type"], image["name"], image["version"]) == ("container", *IMAGE.split(":"))
    inspected = docker("image", "inspect", "--format", "{{.Id}}", tiny_image).stdout.strip()
    assert {"name": "oci:image:id", "value": inspected} in image["properties"]

    again = sbom.generate(a_run(io.StringIO()), tiny_image)
    assert json.dumps(again) == text, "the same image must give the same document"
    assert list(scratch.iterdir()) == [], "temporary files must be removed"
    left = docker("ps", "--all", "--quiet", "--filter", f"ancestor={tiny_image}").stdout.split()
    assert left == [], "the throwaway container must be gone"
    shown = out.getvalue()
    assert "--network none --pull never --entrypoint sh " + tiny_image in shown


def test_an_image_that_is_not_local_is_one_clear_error():
    with pytest.raises(sbom.SbomError, match="no local image sbom-test-absent:1: build it"):
        sbom.generate(a_run(io.StringIO()), "sbom-test-absent:1")


def test_an_image_without_a_service_environment_is_one_clear_error():
    with pytest.raises(sbom.SbomError, match=r"has no /app/\.venv/lib/python3\*/site-packages"):
        sbom.generate(a_run(io.StringIO()), "python:3.11-slim")
