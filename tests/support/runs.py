"""Which test run made an image or a container: one marker per run, in names and labels.

A killed run runs no fixture teardown: its images stay in the engine and its containers keep
running (one was seen 44 minutes after its run was killed), and a teardown that misses (a
filter that never matches) leaves them too, silently. So everything the tests make in the
Docker engine carries its run's marker, and what a run left is found by one filter:

* an image: its repository name holds :func:`image_namespace` (:func:`image` names one);
* a container: the label ``LABEL=<marker>``. ``docker run`` gets it from :func:`label_args`,
  and an image the tests build gets it too (``docker build --label``), so that a container
  the suite starts from that image (smoke test, SBOM, embedded registry) inherits it.

The marker names the run's controller process: its pid and its start time (clock ticks since
boot, ``/proc/PID/stat``), so that a pid the kernel gave to another process since does not
make a dead run look alive. pytest-xdist's workers inherit it (the environment variable, set
in ``tests/conftest.py`` before they start); a pytest started inside a test makes its own.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

VARIABLE = "MODEL_CICD_TESTS_RUN"
LABEL = "model-cicd-tests.run"
NAMESPACE_PREFIX = "model-cicd-tests-run-"


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, may hold spaces and parentheses: count after its last ")".
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def begin() -> str:
    """Make this process a run of its own (a pytest controller): its marker, exported."""
    marker = f"{os.getpid()}-{process_start(os.getpid())}"
    os.environ[VARIABLE] = marker
    return marker


def current() -> str:
    """This run's marker (the controller's; a process outside any run starts one)."""
    return os.environ.get(VARIABLE) or begin()


def alive(marker: str) -> bool:
    """The run named by ``marker`` still runs (its controller, with the same start time)."""
    pid, _, start = marker.partition("-")
    return pid.isdigit() and process_start(int(pid)) == start


def image_namespace(marker: str | None = None) -> str:
    return NAMESPACE_PREFIX + (marker or current())


def image(name: str, host: str = "") -> str:
    """The repository name of a test image, in this run's namespace (``host/``: a registry
    part first, for an image the suite names after its registry host)."""
    registry = f"{host}/" if host else ""
    return f"{registry}{image_namespace()}/{name}"


def label_args() -> list[str]:
    """``docker run`` / ``docker build`` options that give this run's label."""
    return ["--label", f"{LABEL}={current()}"]


@dataclass(frozen=True)
class Leftovers:
    """What a run left in the engine: image references and containers (``id name``)."""

    images: list[str]
    containers: list[str]

    def __bool__(self) -> bool:
        return bool(self.images or self.containers)


def docker(client: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([client, *args], capture_output=True, text=True, check=False, timeout=120)


def images_of(client: str, marker: str) -> list[str]:
    """The engine's images in run ``marker``'s namespace (by tag, or by digest untagged);
    ``marker=""``: in any run's."""
    namespace = NAMESPACE_PREFIX + marker + ("/" if marker else "")
    template = "{{.Repository}} {{.Tag}} {{.Digest}}"
    listed = docker(client, "images", "--digests", "--format", template)
    found = []
    for line in listed.stdout.splitlines():
        repository, tag, digest = line.split()
        if repository.startswith(namespace) or f"/{namespace}" in repository:
            found.append(f"{repository}:{tag}" if tag != "<none>" else f"{repository}@{digest}")
    return found


def containers_of(client: str, marker: str | None = None) -> list[tuple[str, str, str]]:
    """Containers with a run label, running or not: (id, name, marker); ``marker``: that
    run's only."""
    wanted = f"{LABEL}={marker}" if marker else LABEL
    listed = docker(
        client, "ps", "--all", "--filter", f"label={wanted}",
        "--format", f'{{{{.ID}}}} {{{{.Names}}}} {{{{.Label "{LABEL}"}}}}',
    )  # fmt: skip
    found = []
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3:  # a label with an empty value has no third field: not ours
            found.append((fields[0], fields[1], fields[2]))
    return found


def leftovers(client: str, marker: str) -> Leftovers:
    containers = [f"{cid} {name}" for cid, name, _ in containers_of(client, marker)]
    return Leftovers(images_of(client, marker), containers)


def remove(client: str, left: Leftovers) -> None:
    if left.containers:
        docker(client, "rm", "--force", *(line.split()[0] for line in left.containers))
    if left.images:
        docker(client, "rmi", "--force", *left.images)


def remove_images_of_dead_runs(client: str) -> list[str]:
    """Remove every image in the namespace of a run that is dead (killed before its
    teardowns and its end's check): their references. A live run's images are kept."""
    dead = []
    for reference in images_of(client, ""):
        namespace = next(part for part in reference.split("/") if part.startswith(NAMESPACE_PREFIX))
        if not alive(namespace.removeprefix(NAMESPACE_PREFIX)):
            dead.append(reference)
    if dead:
        docker(client, "rmi", "--force", *dead)
    return dead


def remove_containers_of_dead_runs(client: str) -> list[str]:
    """Remove every container whose run is dead (killed, so no teardown ran): ``id name``
    of each. A container of a run that still runs (another session's) is kept."""
    dead = [(cid, name) for cid, name, marker in containers_of(client) if not alive(marker)]
    if dead:
        docker(client, "rm", "--force", *(cid for cid, _ in dead))
    return [f"{cid} {name}" for cid, name in dead]
