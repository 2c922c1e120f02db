"""The CycloneDX SBOM of a built service image: its Python packages and its Debian packages.

Nothing is added to the image and nothing of the host leaks in:

1. ``docker image inspect``: the image is local (never pulled), its ID and labels;
2. a throwaway container (``--rm --network none --pull never``) streams a tar of only the
   ``*.dist-info`` folders of the service's site-packages, ``/var/lib/dpkg/status`` and the
   os-release file;
3. the dist-infos go into the empty site-packages of a scratch ``python -m venv
   --without-pip`` on the host, and ``cyclonedx-py environment`` (the maintained generator)
   describes that venv: exactly the image's distributions, none of the host's;
4. cyclonedx-python-lib reads that document back, adds one component per installed Debian
   package (``pkg:deb/debian/<name>@<version>?arch=<arch>``), the distribution (type
   ``operating-system``, e.g. ``debian`` ``12``: scanners match Debian advisories with it) and
   the image as ``metadata.component`` (type ``container``, its ID and labels as properties),
   and serializes it as CycloneDX 1.6 JSON.

The document is reproducible: no serial number, no timestamp (unless ``SOURCE_DATE_EPOCH``
is set, which cyclonedx-py honours), components sorted by the library; the same image
gives the same bytes. Hashes: only what cyclonedx-py finds (an archive's hash recorded in
``direct_url.json``); none is made up. The scratch directory is removed in every case.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from cicd.docker import docker_call
from cicd.errors import CommandError, SbomError, display
from cicd.labels import container_labels, label_options
from cicd.shell import tool

if TYPE_CHECKING:
    from cyclonedx.model.component import Component

    from cicd.context import Run

SPEC_VERSION = "1.6"
# Where BentoML 1.4's image keeps the service's environment, and dpkg its database.
SITE_PACKAGES = "app/.venv/lib/python3*/site-packages"
DPKG_STATUS = "var/lib/dpkg/status"
# The distribution's name and version: /etc/os-release, else /usr/lib/os-release (os-release(5);
# Debian's /etc/os-release is a link to the other). Optional: the image may have neither.
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
# The one command run in the throwaway container: a tar of the metadata, on stdout.
EXTRACT_SCRIPT = (
    f"cd / && exec tar -c {DPKG_STATUS} $(ls -d {' '.join(OS_RELEASE)} 2>/dev/null) "
    f"{SITE_PACKAGES}/*.dist-info"
)
DIST_INFO = re.compile(r"^app/\.venv/lib/python3[^/]*/site-packages/([^/]+\.dist-info(?:/.*)?)$")
INSTALLED = "install ok installed"
IMAGE_ID_PROPERTY = "oci:image:id"
LABEL_PROPERTY_PREFIX = "oci:image:label:"
BUILD_HINT = "build it first (`invoke build`), or give the reference of a local image"
# Limits on what the image (data, never trusted) can make the host hold. A large BentoML
# image's metadata tar is a few MB: dist-infos, a 1-3 MB dpkg status.
MAX_ARCHIVE = 256 * 1024 * 1024  # the container's stdout: the tar of the metadata
MAX_STATUS = 32 * 1024 * 1024  # /var/lib/dpkg/status, read whole into memory
MAX_MEMBER = 64 * 1024 * 1024  # one file of a dist-info (a RECORD, a LICENSE)
MAX_UNPACKED = 512 * 1024 * 1024  # all the files written into the scratch site-packages
MAX_MEMBERS = 200_000  # entries of the tar
# The throwaway container: a shell and tar, nothing that needs more (a fork bomb or a
# runaway process of the image stops at these).
CONTAINER_LIMITS = ("--pids-limit", "64", "--memory", "512m")


@dataclass(frozen=True, order=True)
class DebianPackage:
    """One installed package of the image's dpkg database."""

    name: str
    version: str
    architecture: str

    @property
    def purl(self) -> str:
        from packageurl import PackageURL

        return PackageURL(
            type="deb",
            namespace="debian",
            name=self.name,
            version=self.version,
            qualifiers={"arch": self.architecture},
        ).to_string()


def generate(run: Run, image_ref: str) -> dict[str, Any] | None:
    """The CycloneDX JSON (1.6 or 1.5) SBOM of local image `image_ref`: the Python packages of the
    service's environment and the image's Debian packages. In a dry run (run.dry), show the
    commands and return None."""
    client, docker = run.require_docker(), run.whales
    try:
        inspected = docker_call(
            run.runner,
            [client.path, "image", "inspect", image_ref],
            lambda: docker.image.inspect(image_ref),
        )
    except CommandError as error:
        if "no such image" not in error.output.lower():
            raise
        raise SbomError(f"there is no local image {image_ref}: {BUILD_HINT}") from None
    with _scratch(run) as scratch:
        archive, venv, document = scratch / "image.tar", scratch / "venv", scratch / "python.json"
        # A name of our own: the container can be removed when the step is stopped (deadline,
        # Ctrl-C) while it runs; otherwise --rm removes it.
        name = f"sbom-{uuid.uuid4().hex[:12]}"
        try:
            _stream(
                run,
                [
                    client.path, "run", "--rm", "--name", name,
                    *label_options(container_labels("sbom", run.settings.container_labels)),
                    *CONTAINER_LIMITS,
                    "--network", "none", "--pull", "never", "--entrypoint", "sh", image_ref,
                    "-c", EXTRACT_SCRIPT,
                ],
                archive,
            )  # fmt: skip
        except BaseException:
            _remove_container(run, docker, [client.path, "rm", "--force", name], name)
            raise
        _run_shown(
            run,
            [sys.executable, "-m", "venv", "--without-pip", venv],
            "the host's Python cannot make a venv (Debian: apt-get install python3-venv)",
        )
        status, os_release = _unpack(archive, site_packages(venv)) if not run.dry else ("", "")
        _run_shown(
            run,
            [
                tool("cyclonedx-py"), "environment", venv, "--spec-version", SPEC_VERSION,
                "--output-format", "JSON", "--output-reproducible", "--no-validate",
                "--output-file", document,
            ],
            "reinstall the suite's environment (uv pip install -r requirements-freeze.txt)",
        )  # fmt: skip
        if run.dry:
            return None
        python_bom = json.loads(document.read_text(encoding="utf-8"))
    image_id = inspected.id if inspected is not None else ""
    labels = (inspected.config.labels or {}) if inspected is not None else {}
    return assemble(
        python_bom,
        parse_dpkg_status(status),
        image_ref,
        image_id,
        labels,
        parse_os_release(os_release),
    )


def assemble(
    python_bom: Mapping[str, Any],
    debian: list[DebianPackage],
    image_ref: str,
    image_id: str = "",
    labels: Mapping[str, str] | None = None,
    os_release: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """cyclonedx-py's document of the Python packages, plus the Debian packages, the operating
    system (from ``os_release``, when known) and the image as the component described,
    serialized by cyclonedx-python-lib."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    bom = Bom.from_json(python_bom)  # type: ignore[attr-defined]
    bom.serial_number = None  # reproducible, as cyclonedx-py's
    if "timestamp" not in python_bom.get("metadata", {}):
        bom.metadata.timestamp = None
    bom.components.update(debian_component(package) for package in debian)
    if os_release and os_release.get("ID"):
        bom.components.add(os_component(os_release))
    name, version = split_reference(image_ref)
    properties = [Property(name=IMAGE_ID_PROPERTY, value=image_id)] if image_id else []
    properties += [
        Property(name=f"{LABEL_PROPERTY_PREFIX}{key}", value=value)
        for key, value in sorted((labels or {}).items())
    ]
    image = Component(
        type=ComponentType.CONTAINER,
        name=name,
        version=version,
        bom_ref=image_ref,
        properties=properties,
    )
    bom.metadata.component = image
    # The image depends on every package it holds (the Python ones keep their own graph).
    bom.register_dependency(image, list(bom.components))
    return json.loads(JsonV1Dot6(bom).output_as_string())


def debian_component(package: DebianPackage) -> Component:
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    purl = package.purl
    return Component(
        type=ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        purl=PackageURL.from_string(purl),
        bom_ref=purl,
    )


def os_component(os_release: Mapping[str, str]) -> Component:
    """The distribution as an ``operating-system`` component (``debian`` ``12``): what SBOM
    scanners (Trivy, Grype) read to match the Debian packages with the distribution's
    advisories."""
    from cyclonedx.model.component import Component, ComponentType

    name, version = os_release["ID"], os_release.get("VERSION_ID")
    return Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=name,
        version=version,
        description=os_release.get("PRETTY_NAME"),
        bom_ref=f"os:{name}@{version}" if version else f"os:{name}",
    )


def parse_os_release(text: str) -> dict[str, str]:
    """The ``KEY=value`` lines of an os-release file, values unquoted (os-release(5))."""
    fields = {}
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if not equals or key.startswith("#"):
            continue
        try:
            words = shlex.split(value)
        except ValueError:  # an unbalanced quote: the line is ignored, as systemd does
            continue
        fields[key] = words[0] if words else ""
    return fields


def parse_dpkg_status(text: str) -> list[DebianPackage]:
    """The installed packages (``Status: install ok installed``) of a dpkg status file,
    sorted; removed packages that left config files, half-installed ones etc. are not."""
    packages = set()
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if not line or line[0] in " \t" or ":" not in line:
                continue  # a continuation line (Description, Conffiles): not needed
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("status") != INSTALLED:
            continue
        if not (fields.get("package") and fields.get("version")):
            continue
        packages.add(
            DebianPackage(fields["package"], fields["version"], fields.get("architecture", ""))
        )
    return sorted(packages)


def split_reference(image_ref: str) -> tuple[str, str | None]:
    """``registry/name:tag`` (or ``@digest``) as (``registry/name``, tag or digest)."""
    if "@" in image_ref:
        name, _, digest = image_ref.partition("@")
        return name, digest
    name, colon, tag = image_ref.rpartition(":")
    if not colon or "/" in tag:  # no tag, or the colon was a registry's port
        return image_ref, None
    return name, tag


def site_packages(venv: Path) -> Path:
    """The site-packages folder of a venv made by this interpreter."""
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def _run_shown(run: Run, command: list[Any], hint: str) -> None:
    """Run ``command``, shown; its output (cyclonedx-py's "validation skipped" warning: the
    library validates what it serializes) only in the error of a failure."""
    if not run.dry:
        run.runner.show(command)
    run.runner.run(command, quiet=True, hint=hint)


@contextmanager
def _scratch(run: Run) -> Iterator[Path]:
    """A temporary directory, removed afterwards; in a dry run, a placeholder path."""
    if run.dry:
        yield Path(tempfile.gettempdir()) / "sbom-<scratch>"
        return
    with tempfile.TemporaryDirectory(prefix="sbom-") as scratch:
        yield Path(scratch)


def _stream(run: Run, command: list[str], archive: Path) -> None:
    """Run ``command`` with its (binary) standard output into ``archive``, at most ``limit``
    bytes: shown through the runner, run with its deadline; a failure is one line with
    docker's own reason."""
    timeout, limit = run.runner.command_timeout, MAX_ARCHIVE

    def write() -> None:
        with archive.open("wb") as out:
            process = subprocess.Popen(
                [str(part) for part in command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=run.runner.child_env(None),
            )
            expired = threading.Event()

            def stop() -> None:
                expired.set()
                process.kill()

            timer = threading.Timer(timeout, stop) if timeout else None
            errors: list[bytes] = []
            drain = threading.Thread(  # stderr, alongside, so that neither pipe fills up
                target=lambda: errors.append(_read_capped(process.stderr)), daemon=True
            )
            try:
                if timer:
                    timer.start()
                drain.start()
                assert process.stdout is not None
                written = 0
                while chunk := process.stdout.read(1024 * 1024):
                    written += len(chunk)
                    if written > limit:
                        raise SbomError(
                            f"the image's package metadata is over {limit // 2**20} MiB "
                            f"(sbom.MAX_ARCHIVE): refused, it is not a service image's metadata"
                        )
                    out.write(chunk)
                process.wait()
                drain.join()
            finally:
                if timer:
                    timer.cancel()
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if expired.is_set():
            raise SbomError(
                f"`{display(command)}` did not finish within {timeout:.0f} s and was "
                "stopped (suite.command_timeout in invoke.yaml)"
            )
        if process.returncode != 0:
            reason = run.runner.mask(b"".join(errors).decode(errors="replace"))
            missing = re.findall(r"tar: (\S+): Cannot stat", reason)
            if missing:
                raise SbomError(
                    f"the image has no /{', /'.join(missing)}: it is not a BentoML service image "
                    f"(a Python environment in /app/.venv, Debian's dpkg); {BUILD_HINT}"
                )
            raise CommandError(command, process.returncode, reason, BUILD_HINT)

    run.runner.call(
        command, write, note=f"stdout: a tar of the image's package metadata > {archive}"
    )


def _read_capped(stream: IO[bytes] | None, cap: int = 64 * 1024) -> bytes:
    """The first ``cap`` bytes of ``stream``, the rest read and dropped (docker's errors)."""
    kept = stream.read(cap) if stream else b""
    while stream and stream.read(cap):
        pass
    return kept


def _remove_container(run: Run, docker: Any, command: list[str], name: str) -> None:
    """Remove the throwaway container if it is still there; never hides the step's error."""
    from python_on_whales.exceptions import DockerException

    def remove() -> None:
        with contextlib.suppress(DockerException):  # already gone (--rm), or never created
            docker.container.remove(name, force=True)

    run.runner.call(command, remove, quiet=True)


def _unpack(archive: Path, site: Path) -> tuple[str, str]:
    """Extract the dist-info folders of ``archive`` into ``site``; return the dpkg status and
    the os-release file ("" when the image has none).

    The image is data here, never code: only regular files and folders under a
    ``*.dist-info`` name are written (tarfile's ``data`` filter refuses links out, absolute
    paths, devices), no ``.pth`` or module of the image comes along. The tar is read as
    what ``tar -c`` writes, uncompressed (a compressed stream is refused, never inflated);
    sparse members (a few bytes that expand to any size) are refused, and sizes are capped
    (:data:`MAX_STATUS`, :data:`MAX_MEMBER`, :data:`MAX_UNPACKED`, :data:`MAX_MEMBERS`).
    """
    texts: dict[str, str] = {}
    unpacked = 0
    try:
        # Uncompressed only ("r:"): no xz/gz/bz2 bomb is inflated. Closed by `with tar` below.
        tar = tarfile.open(archive, "r:")  # noqa: SIM115
    except tarfile.ReadError as error:
        raise SbomError(
            f"the image's package metadata is not an uncompressed tar ({error}): refused"
        ) from None
    with tar:
        for count, member in enumerate(tar, start=1):
            if count > MAX_MEMBERS:
                raise SbomError(
                    f"the image's package metadata has over {MAX_MEMBERS} entries "
                    "(sbom.MAX_MEMBERS): refused"
                )
            path = PurePosixPath(member.name).as_posix()
            if member.issparse() or member.type in (tarfile.GNUTYPE_SPARSE, b"S"):
                raise SbomError(
                    f"/{path} of the image is a sparse file in its tar (a few bytes that "
                    "expand to any size): refused"
                )
            if path in (DPKG_STATUS, *OS_RELEASE):
                if member.isfile() and member.size > MAX_STATUS:
                    raise SbomError(
                        f"/{path} of the image is {member.size} bytes, over "
                        f"{MAX_STATUS // 2**20} MiB (sbom.MAX_STATUS): refused"
                    )
                extracted = tar.extractfile(member) if member.isfile() else None  # not a link
                if extracted is not None:
                    texts[path] = extracted.read(MAX_STATUS).decode("utf-8", errors="replace")
                continue
            match = DIST_INFO.match(path)
            if not match or not (member.isfile() or member.isdir()) or ".." in path.split("/"):
                continue
            if member.size > MAX_MEMBER:
                raise SbomError(
                    f"/{path} of the image is {member.size} bytes, over "
                    f"{MAX_MEMBER // 2**20} MiB (sbom.MAX_MEMBER): not package metadata; refused"
                )
            unpacked += member.size
            if unpacked > MAX_UNPACKED:
                raise SbomError(
                    f"the image's dist-info folders are over {MAX_UNPACKED // 2**20} MiB "
                    "(sbom.MAX_UNPACKED): refused"
                )
            member.name = match.group(1)
            tar.extract(member, site, filter="data")
    if DPKG_STATUS not in texts:
        raise SbomError(f"the image has no /{DPKG_STATUS}: it is not a Debian-based image")
    os_release = next((texts[path] for path in OS_RELEASE if path in texts), "")
    return texts[DPKG_STATUS], os_release
