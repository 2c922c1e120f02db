"""The secret scan: everything the tests made, searched for the per-run secrets (the registry
password, the signing key).

A :class:`LeakScan` is told about every project and registry as they are created (the
``leak_scan`` fixture in ``tests/conftest.py`` does this), so what it checks does not depend
on which tests ran or in which order. It searches:

* every output of every command a project ran (``Project.outputs``);
* every file under each project's clone, HOME and BentoML store;
* each registry's state directory on disk: stored blobs (gzip layers decompressed), log;
* the images each registry holds, pulled *by digest* (what was pushed, not a local tag):
  ``docker image inspect`` and ``docker history --no-trunc`` of each.
"""

from __future__ import annotations

import json
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.support.project import Project, Registry, docker, docker_client_path

CHUNK = 1 << 20
# Installed packages (nox environments), not anything the suite writes; gigabytes to read.
SKIPPED_DIRECTORIES = {".nox"}


class LeakScan:
    def __init__(self, *secrets: str):
        self.secrets = tuple(secret.encode() for secret in secrets)
        self.projects: list[Project] = []
        self.registries: list[Registry] = []
        self.texts: list[tuple[str, str]] = []  # (where it came from, text)
        self.files_checked = 0
        self.images_inspected = 0

    def add_project(self, project: Project) -> None:
        self.projects.append(project)

    def add_registry(self, registry: Registry) -> None:
        self.registries.append(registry)

    def record_pushed_images(self, registry: Registry) -> None:
        """Pull every image ``registry`` holds by digest and keep its metadata for the scan.

        Call it while the registry still runs (the ``registry`` fixture does, at its end).
        """
        client = registry.client()
        repositories = registry.repositories()
        # The scan must not be silent because the API listed nothing: compare with the disk.
        stored = registry.data / "docker" / "registry" / "v2" / "repositories"
        on_disk = sorted(path.name for path in stored.iterdir()) if stored.is_dir() else []
        assert repositories == on_disk, f"catalog {repositories} but on disk {on_disk}"
        with tempfile.TemporaryDirectory(prefix="leak-scan-docker-") as config:
            logged_in, seen = False, set()
            for repository in repositories:
                for tag in registry.tags(repository):
                    manifest = client.manifest(repository, tag)
                    if manifest is None or (repository, manifest.digest) in seen:
                        continue  # gone, or another tag of an image already inspected
                    seen.add((repository, manifest.digest))
                    if not _is_image(manifest.raw):  # an artifact (a tag's history): read it
                        body = client.blob(repository, manifest.config_digest) or b""
                        self.texts.append((f"{repository}:{tag}", body.decode(errors="replace")))
                        continue
                    if not logged_in:
                        _login(registry, config)
                        logged_in = True
                    reference = f"{registry.address}/{repository}@{manifest.digest}"
                    docker("--config", config, "pull", "--quiet", reference)
                    self.images_inspected += 1
                    for what in (
                        ("image", "inspect", reference),
                        ("history", "--no-trunc", reference),
                    ):
                        self.texts.append((f"docker {' '.join(what)}", docker(*what).stdout))
                    docker("rmi", reference, check=False)
            if logged_in:
                docker("--config", config, "logout", registry.address, check=False)

    def findings(self) -> list[str]:
        """Where a secret was found; empty when nowhere."""
        found = []
        for project in self.projects:
            for number, output in enumerate(project.outputs):
                if _has_any(output.encode(), self.secrets):
                    found.append(f"output {number} of the project at {project.root}")
        for where, text in self.texts:
            if _has_any(text.encode(), self.secrets):
                found.append(where)
        roots = [path for p in self.projects for path in (p.root, p.home, p.bentoml_home)]
        roots += [registry.state for registry in self.registries]
        for path in _files(roots):
            self.files_checked += 1
            if _file_contains(path, self.secrets):
                found.append(str(path))
        return found


def _is_image(raw: bytes) -> bool:
    """Whether a manifest's config is an image's (docker can pull it), not an artifact's."""
    kind = json.loads(raw).get("config", {}).get("mediaType", "")
    return kind in (
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.oci.image.config.v1+json",
    )


def _login(registry: Registry, config: str) -> None:
    from python_on_whales import DockerClient

    # python-on-whales passes the password through stdin (--password-stdin).
    DockerClient(client_call=[docker_client_path()], config=config).login(
        registry.address, registry.user, registry.password
    )


def _files(roots: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            if SKIPPED_DIRECTORIES.intersection(path.relative_to(root).parts):
                continue
            if path.is_symlink() or not path.is_file() or path in seen:
                continue
            seen.add(path)
            yield path


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def _gunzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The decompressed bytes of a gzip stream (registry layers), members one after another."""
    inflate = zlib.decompressobj(wbits=31)
    for chunk in chunks:
        while chunk:
            yield inflate.decompress(chunk)
            chunk = inflate.unused_data
            if chunk:  # the next gzip member
                inflate = zlib.decompressobj(wbits=31)


def _has_any(text: bytes, needles: tuple[bytes, ...]) -> bool:
    return any(needle in text for needle in needles)


def contains(chunks: Iterable[bytes], *needles: bytes) -> bool:
    """One of ``needles`` in the concatenated chunks, across chunk borders too."""
    tail, keep = b"", max(len(needle) for needle in needles) - 1
    for chunk in chunks:
        window = tail + chunk
        if _has_any(window, needles):
            return True
        tail = window[-keep:] if keep else b""
    return False


def _file_contains(path: Path, needles: tuple[bytes, ...]) -> bool:
    if contains(_chunks(path), *needles):
        return True
    with path.open("rb") as stream:
        gzipped = stream.read(2) == b"\x1f\x8b"
    if not gzipped:
        return False
    try:
        return contains(_gunzipped(_chunks(path)), *needles)
    except zlib.error:  # not gzip after all: the raw bytes were searched above
        return False
