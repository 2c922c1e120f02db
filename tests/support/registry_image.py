"""A local image that serves as ``registry:2`` does, for the embedded registry's container path.

Docker Hub cannot be reached here, so ``registry:2`` cannot be pulled. The same program is on
this machine: Debian's ``docker-registry`` (CNCF Distribution 2.8, dynamically linked to glibc),
so the image is ``python:3.11-slim`` (Debian, present locally) with that binary and a config
like ``registry:2``'s: API on port 5000, data in ``/var/lib/registry``. Built with Debian's
docker client (BuildKit without buildx), no network in the build; tagged per test run and
untagged at the end (the layers stay cached for the next run).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cicd.local_registry import REGISTRY_BINARY
from tests.support import runs

BASE = "python:3.11-slim"
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client: builds with the daemon's BuildKit
CONFIG = {
    "version": 0.1,
    "log": {"level": "info"},
    "storage": {
        "filesystem": {"rootdirectory": "/var/lib/registry"},
        "delete": {"enabled": True},
    },
    "http": {"addr": ":5000", "headers": {"X-Content-Type-Options": ["nosniff"]}},
}
DOCKERFILE = f"""\
FROM {BASE}
COPY docker-registry /bin/registry
COPY config.yml /etc/docker/registry/config.yml
EXPOSE 5000
VOLUME /var/lib/registry
ENTRYPOINT ["/bin/registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
"""


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, check=check, timeout=300,
        env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def available() -> str | None:
    """Why the image cannot be built here, or None when it can."""
    if not Path(REGISTRY_BINARY).exists():
        return f"{REGISTRY_BINARY} missing (apt-get install docker-registry)"
    if not Path(DOCKER).exists() or docker("version", check=False).returncode != 0:
        return "no Docker engine answers Debian's client /usr/bin/docker"
    if docker("image", "inspect", BASE, check=False).returncode != 0:
        return f"the engine has no {BASE} image"
    return None


@contextmanager
def built() -> Iterator[str]:
    """The image's per-run tag, untagged at the end."""
    tag = f"{runs.image('registry')}:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="registry-image-") as context:
        root = Path(context)
        shutil.copy2(REGISTRY_BINARY, root / "docker-registry")
        (root / "config.yml").write_text(json.dumps(CONFIG, indent=2) + "\n")
        (root / "Dockerfile").write_text(DOCKERFILE)
        # Labelled: the registry containers started from it carry the run's label.
        docker("build", "--quiet", *runs.label_args(), "--tag", tag, str(root))
    try:
        yield tag
    finally:
        docker("rmi", tag, check=False)


@contextmanager
def held_port() -> Iterator[int]:
    """A port of 127.0.0.1 the OS assigns, kept bound (never listening) while the block runs.

    With SO_REUSEADDR on both sides, Docker's proxy can still bind and listen on it (Go sets
    SO_REUSEADDR), while no other port-0 bind on this machine is given it meanwhile: the
    port the suite's fixed-port start is told cannot be taken by anyone else in between.
    """
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def outward_address() -> str | None:
    """This machine's address on its default route (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent by a UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address
