"""The SBOM's pieces without an engine: dpkg status, purls, references, the assembled
document (valid CycloneDX 1.6, reproducible), the tar unpacking, and a dry run that only shows."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from cicd import sbom
from cicd import settings as settings_module
from cicd.context import Run
from cicd.docker import Client
from cicd.shell import Runner
from tests.support.project import ROOT

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u14
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
 .
 A continuation line: "Version: 9.9" is not a field.

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Version: 1:12.2.0-14+deb12u1

Package: old-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Conffiles:
 /etc/old-tool.conf 0123456789abcdef

Package: half
Status: install reinstreq half-installed
Architecture: all
Version: 2.0

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2025b-0+deb12u1
"""

OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION_CODENAME=bookworm
ID=debian
# a comment
HOME_URL='https://www.debian.org/'
BROKEN="unbalanced
"""

# What cyclonedx-py environment writes (--output-reproducible), cut down to one package.
PYTHON_BOM = {
    "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
    "bomFormat": "CycloneDX",
    "specVersion": "1.6",
    "version": 1,
    "metadata": {"properties": [{"name": "cdx:reproducible", "value": "true"}]},
    "components": [
        {
            "bom-ref": "tinypkg==1.2.3",
            "name": "tinypkg",
            "purl": "pkg:pypi/tinypkg@1.2.3",
            "type": "library",
            "version": "1.2.3",
        }
    ],
    "dependencies": [{"ref": "tinypkg==1.2.3"}],
}


def test_only_installed_packages_of_the_dpkg_status():
    packages = sbom.parse_dpkg_status(STATUS)
    assert packages == [
        sbom.DebianPackage("libc6", "2.36-9+deb12u14", "amd64"),
        sbom.DebianPackage("libgcc-s1", "1:12.2.0-14+deb12u1", "amd64"),
        sbom.DebianPackage("tzdata", "2025b-0+deb12u1", "all"),
    ]
    assert sbom.parse_dpkg_status("") == []


def test_debian_purls():
    libc, libgcc, tzdata = sbom.parse_dpkg_status(STATUS)
    assert libc.purl == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64"
    assert libgcc.purl == "pkg:deb/debian/libgcc-s1@1:12.2.0-14%2Bdeb12u1?arch=amd64"
    assert tzdata.purl == "pkg:deb/debian/tzdata@2025b-0%2Bdeb12u1?arch=all"


def test_os_release():
    assert sbom.parse_os_release(OS_RELEASE) == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
        "NAME": "Debian GNU/Linux",
        "VERSION_ID": "12",
        "VERSION_CODENAME": "bookworm",
        "ID": "debian",
        "HOME_URL": "https://www.debian.org/",
    }


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("127.0.0.1:5050/celestial:latest", ("127.0.0.1:5050/celestial", "latest")),
        ("127.0.0.1:5050/celestial", ("127.0.0.1:5050/celestial", None)),
        ("ghcr.io/org/app@sha256:abc", ("ghcr.io/org/app", "sha256:abc")),
        ("app:1.0", ("app", "1.0")),
    ],
)
def test_image_references(reference, expected):
    assert sbom.split_reference(reference) == expected


def assembled() -> dict:
    return sbom.assemble(
        PYTHON_BOM,
        sbom.parse_dpkg_status(STATUS),
        "127.0.0.1:5050/celestial:latest",
        "sha256:" + "1" * 64,
        {"org.opencontainers.image.revision": "abc123"},
        sbom.parse_os_release(OS_RELEASE),
    )


def test_the_document_is_valid_cyclonedx_and_reproducible():
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    document = assembled()
    text = json.dumps(document)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert json.dumps(assembled()) == text, "the same input must give the same document"
    assert "serialNumber" not in document and "timestamp" not in document["metadata"]
    assert document["specVersion"] == "1.6"


def test_the_document_holds_both_kinds_of_packages_and_describes_the_image():
    document = assembled()
    purls = {c["name"]: c.get("purl") for c in document["components"]}
    assert purls == {
        "tinypkg": "pkg:pypi/tinypkg@1.2.3",
        "libc6": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64",
        "libgcc-s1": "pkg:deb/debian/libgcc-s1@1:12.2.0-14%2Bdeb12u1?arch=amd64",
        "tzdata": "pkg:deb/debian/tzdata@2025b-0%2Bdeb12u1?arch=all",
        "debian": None,
    }
    (system,) = [c for c in document["components"] if c["type"] == "operating-system"]
    assert (system["name"], system["version"]) == ("debian", "12")
    image = document["metadata"]["component"]
    assert image["type"] == "container"
    assert (image["name"], image["version"]) == ("127.0.0.1:5050/celestial", "latest")
    properties = {p["name"]: p["value"] for p in image["properties"]}
    assert properties == {
        "oci:image:id": "sha256:" + "1" * 64,
        "oci:image:label:org.opencontainers.image.revision": "abc123",
    }
    edges = {d["ref"]: d.get("dependsOn", []) for d in document["dependencies"]}
    assert len(edges[image["bom-ref"]]) == 5, "the image depends on each of its components"


def image_tar(path: Path, members: dict[str, bytes | None], links: dict[str, str]) -> Path:
    """A tar like the one the container streams: files (bytes) and folders (None)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def test_only_dist_info_folders_are_unpacked(tmp_path):
    site = "app/.venv/lib/python3.11/site-packages"
    archive = image_tar(
        tmp_path / "image.tar",
        {
            "var/lib/dpkg/status": STATUS.encode(),
            "usr/lib/os-release": OS_RELEASE.encode(),
            f"{site}/tinypkg-1.2.3.dist-info": None,
            f"{site}/tinypkg-1.2.3.dist-info/METADATA": b"Name: tinypkg\nVersion: 1.2.3\n",
            f"{site}/tinypkg.pth": b"import os; os.system('echo owned')\n",
            f"{site}/tinypkg/__init__.py": b"",
            f"{site}/x.dist-info/../../escape": b"",
            "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
        },
        {
            f"{site}/tinypkg-1.2.3.dist-info/RECORD": "/etc/shadow",
            "etc/os-release": "../usr/lib/os-release",  # as in Debian: the file is the other
        },
    )
    target = tmp_path / "site-packages"
    target.mkdir()
    assert sbom._unpack(archive, target) == (STATUS, OS_RELEASE)
    unpacked = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    assert unpacked == ["tinypkg-1.2.3.dist-info", "tinypkg-1.2.3.dist-info/METADATA"]


def test_an_image_without_dpkg_status_is_one_clear_error(tmp_path):
    archive = image_tar(tmp_path / "image.tar", {"app/x": b""}, {})
    with pytest.raises(sbom.SbomError, match="not a Debian-based image"):
        sbom._unpack(archive, tmp_path)


def a_run(dry: bool, out: io.StringIO, environ: dict[str, str] | None = None) -> Run:
    settings = settings_module.load(ROOT, environ or {})
    run = Run(Runner(dry=dry, out=out, verbose=True), settings, {})
    run.__dict__["docker"] = Client("/usr/bin/docker", {"DOCKER_BUILDKIT": "1"})  # no probe
    return run


def test_a_dry_run_shows_the_commands_and_runs_nothing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a dry run ran {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    out = io.StringIO()
    assert sbom.generate(a_run(True, out), "registry.example/app:1") is None
    shown = out.getvalue().splitlines()
    assert [line.split()[2:4] for line in shown] == [
        ["/usr/bin/docker", "image"],
        ["/usr/bin/docker", "run"],
        [shown[2].split()[2], "-m"],  # the suite's own Python: python -m venv
        [shown[3].split()[2], "environment"],  # cyclonedx-py environment
    ]
    assert all(line.startswith("[dry-run] $ ") for line in shown)
    assert "--network none --pull never --entrypoint sh registry.example/app:1" in shown[1]
    assert "venv --without-pip" in shown[2] and "cyclonedx-py" in shown[3]
    assert "--output-reproducible" in shown[3]


def test_a_failing_container_is_one_line_that_names_what_is_missing(tmp_path):
    out = io.StringIO()
    fails = [
        "sh",
        "-c",
        "echo 'tar: app/.venv/lib/python3*/site-packages/*.dist-info: Cannot stat: "
        "No such file or directory' >&2; exit 2",
    ]
    with pytest.raises(sbom.SbomError, match=r"has no /app/\.venv/lib/python3\*") as raised:
        sbom._stream(a_run(False, out), fails, tmp_path / "image.tar")
    assert "\n" not in str(raised.value)
    assert out.getvalue().startswith("$ sh -c"), "the command is shown before it runs"


def test_an_interrupted_extraction_removes_its_container(monkeypatch, tmp_path):
    removed, started = [], []

    inspected = SimpleNamespace(id="sha256:1", config=SimpleNamespace(labels={}))
    fake_docker = SimpleNamespace(  # python-on-whales' calls that generate makes
        image=SimpleNamespace(inspect=lambda reference: inspected),
        container=SimpleNamespace(remove=lambda name, force: removed.append(name)),
    )

    def interrupted(run, command, archive):
        started.append(command[command.index("--name") + 1])
        raise KeyboardInterrupt

    monkeypatch.setattr(sbom, "_stream", interrupted)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run = a_run(False, io.StringIO())
    run.__dict__["whales"] = fake_docker  # the run's one python-on-whales client
    with pytest.raises(KeyboardInterrupt):
        sbom.generate(run, "registry.example/app:1")
    assert removed == started and len(started) == 1
    assert list(tmp_path.iterdir()) == [], "the scratch directory must be removed"


# -- limits: the image is data, and hostile data must not exhaust the host ------------------

SITE = "app/.venv/lib/python3.11/site-packages"


def test_a_sparse_member_is_refused_before_anything_is_written(tmp_path):
    source = tmp_path / "src"
    holes = source / SITE / "evil-1.0.dist-info" / "RECORD"
    holes.parent.mkdir(parents=True)
    subprocess.run(["truncate", "-s", "1G", holes], check=True)  # no block on disk
    (source / "var/lib/dpkg").mkdir(parents=True)
    (source / "var/lib/dpkg/status").write_text(STATUS)
    archive = tmp_path / "image.tar"
    subprocess.run(["tar", "--sparse", "-cf", archive, "-C", source, "var", "app"], check=True)
    assert archive.stat().st_size < 64 * 1024, "a sparse member: a few KiB for 1 GiB"
    target = tmp_path / "site-packages"
    target.mkdir()
    with pytest.raises(sbom.SbomError, match="sparse file") as raised:
        sbom._unpack(archive, target)
    assert "\n" not in str(raised.value)
    assert sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) == 0


@pytest.mark.parametrize("mode", ["w:gz", "w:xz", "w:bz2"])
def test_a_compressed_archive_is_refused_not_inflated(tmp_path, mode):
    plain = image_tar(tmp_path / "plain.tar", {"var/lib/dpkg/status": STATUS.encode()}, {})
    archive = tmp_path / "image.tar"
    with tarfile.open(plain) as source, tarfile.open(archive, mode) as packed:
        for member in source:
            packed.addfile(member, source.extractfile(member))
    with pytest.raises(sbom.SbomError, match="not an uncompressed tar"):
        sbom._unpack(archive, tmp_path)


def test_an_oversized_dpkg_status_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(sbom, "MAX_STATUS", 4096, raising=False)
    archive = image_tar(tmp_path / "image.tar", {"var/lib/dpkg/status": b"x" * 8192}, {})
    with pytest.raises(sbom.SbomError, match=r"var/lib/dpkg/status of the image is 8192 bytes"):
        sbom._unpack(archive, tmp_path)


def test_an_oversized_dist_info_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sbom, "MAX_MEMBER", 4096, raising=False)
    archive = image_tar(
        tmp_path / "image.tar",
        {"var/lib/dpkg/status": STATUS.encode(), f"{SITE}/a-1.dist-info/RECORD": b"x" * 8192},
        {},
    )
    target = tmp_path / "site-packages"
    target.mkdir()
    with pytest.raises(sbom.SbomError, match="MAX_MEMBER"):
        sbom._unpack(archive, target)
    assert list(target.rglob("RECORD")) == []


def test_the_containers_output_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(sbom, "MAX_ARCHIVE", 1024 * 1024)
    archive = tmp_path / "image.tar"
    floods = ["sh", "-c", "head -c 8388608 /dev/zero"]  # 8 MiB where 1 MiB is allowed
    with pytest.raises(sbom.SbomError, match="MAX_ARCHIVE") as raised:
        sbom._stream(a_run(False, io.StringIO()), floods, archive)
    assert "\n" not in str(raised.value)
    assert archive.stat().st_size <= 1024 * 1024


def test_the_container_runs_with_a_pid_and_a_memory_limit(monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", None)
    out = io.StringIO()
    sbom.generate(a_run(True, out), "registry.example/app:1")
    assert "--pids-limit 64 --memory 512m --network none" in out.getvalue().splitlines()[1]


def test_the_container_carries_the_suites_label_and_the_settings(monkeypatch):
    # So that a killed step's container is found: `docker ps --filter label=...`.
    monkeypatch.setattr(subprocess, "Popen", None)
    out = io.StringIO()
    sbom.generate(a_run(True, out, {"CONTAINER_LABELS": "ci.job=7"}), "registry.example/app:1")
    shown = out.getvalue().splitlines()[1]
    assert "--label ci.job=7 --label io.model-cicd.container=sbom " in shown, shown
