"""The secret scan finds the password wherever it is planted (so its silence means something)."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from tests.support.leaks import LeakScan, contains
from tests.support.project import Project, Registry

SECRET = "sentinel-planted-0123456789"


@pytest.fixture
def scan(tmp_path):
    project = Project(
        tmp_path / "clone",
        {"HOME": str(tmp_path / "home"), "BENTOML_HOME": str(tmp_path / "bentoml")},
        registry=None,
        outputs=["$ invoke publish", "published"],
    )
    for path in (project.root, project.home, project.bentoml_home, tmp_path / "registry"):
        path.mkdir()
        (path / "clean.txt").write_text("nothing to see")
    scan = LeakScan(SECRET)
    scan.add_project(project)
    scan.add_registry(Registry("127.0.0.1:1", tmp_path / "registry", password=SECRET))
    assert scan.findings() == []
    assert scan.files_checked == 4
    return scan, project, tmp_path


def test_a_secret_in_an_output_is_found(scan):
    scan, project, _ = scan
    project.outputs.append(f"login ok with {SECRET}")
    assert scan.findings() == [f"output 2 of the project at {project.root}"]


@pytest.mark.parametrize("where", ["clone", "home", "bentoml"])
def test_a_secret_in_a_project_file_is_found(scan, where):
    scan, _, base = scan
    planted = base / where / "deep" / "config.json"
    planted.parent.mkdir()
    planted.write_bytes(b"x" * 5_000_000 + SECRET.encode())  # beyond the first chunk
    assert scan.findings() == [str(planted)]


def test_a_secret_inside_a_gzipped_layer_in_the_registry_is_found(scan):
    scan, _, base = scan
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        body = f"PASSWORD={SECRET}\n".encode()
        info = tarfile.TarInfo("etc/app.env")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    blob = base / "registry" / "data" / "blobs" / "sha256" / "ab" / "abcdef" / "data"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(gzip.compress(layer.getvalue()))
    assert SECRET.encode() not in blob.read_bytes()
    assert scan.findings() == [str(blob)]


def test_an_image_inspection_is_searched(scan):
    scan, _, _ = scan
    scan.texts.append(("docker image inspect r@sha256:1", f'"Env": ["P={SECRET}"]'))
    assert scan.findings() == ["docker image inspect r@sha256:1"]


def test_the_search_sees_across_chunk_borders():
    needle = b"abcdef"
    assert contains([b"xxab", b"cd", b"efyy"], needle)
    assert not contains([b"xxab", b"cd", b"eXfyy"], needle)


def test_each_of_several_secrets_is_found(tmp_path):
    """The session's scan looks for the registry password and the signing key at once."""
    project = Project(
        tmp_path / "clone",
        {"HOME": str(tmp_path / "home"), "BENTOML_HOME": str(tmp_path / "bentoml")},
        registry=None,
        outputs=["clean"],
    )
    for path in (project.root, project.home, project.bentoml_home):
        path.mkdir()
    scan = LeakScan(SECRET, "second-secret-9876543210")
    scan.add_project(project)
    assert scan.findings() == []
    (project.home / "key.pem").write_text("-----BEGIN-----\nsecond-secret-9876543210\n")
    assert scan.findings() == [str(project.home / "key.pem")]
    assert contains([b"xxsecond-sec", b"ret-9876543210"], SECRET.encode(), b"second-secret-98")
