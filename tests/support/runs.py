"""Which test run made an image or a container: one marker per run, in names and labels.

A killed run runs no fixture teardown: its images stay in the engine and its containers keep
running (one was seen 44 minutes after its run was killed), and a teardown that misses (a
filter that never matches) leaves them too, silently. So everything the tests make in the
Docker engine carries its run's marker, and what a run left is found by one filter:

* an image: its repository name holds :func:`image_namespace` (:func:`image` names one);
* a container: the label ``LABEL=<marker>``. ``docker run`` gets it from :func:`label_args`,
  and an image the tests build gets it too (``docker build --label``), so that a container
  started from that image (the embedded registry's) inherits it. The containers the suite
  starts itself (smoke test, SBOM), from the real service image too, get it from the suite's
  setting ``CONTAINER_LABELS``, which :func:`begin` exports for every command of the run;
* an image named after a test registry's address (``127.0.0.1:PORT/...``, as the suite names
  what it publishes): the run records each registry it starts (:func:`record_registry`),
  so that a killed run's images are found by their registry's address.

The marker names the run's controller process: its pid and its start time (clock ticks since
boot, ``/proc/PID/stat``), so that a pid the kernel gave to another process since does not
make a dead run look alive. pytest-xdist's workers inherit it (the environment variable, set
in ``tests/conftest.py`` before they start); a pytest started inside a test makes its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

VARIABLE = "MODEL_CICD_TESTS_RUN"
LABEL = "model-cicd-tests.run"
NAMESPACE_PREFIX = "model-cicd-tests-run-"
# The suite's setting (src/cicd/settings.py): labels for every container the suite starts.
CONTAINER_LABELS = "CONTAINER_LABELS"
# The registries each run started, one empty file per address in a folder per run marker:
# <RECORDS>/<marker>/<host:port>. A registry's stop removes its file; a dead run's folder
# goes with the images it names (remove_images_of_dead_runs).
RECORDS = Path(tempfile.gettempdir()) / "model-cicd-tests-registries"


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
    # Every command the run starts (the projects copy this environment) labels the smoke
    # and SBOM containers the suite starts as this run's: a killed run's are swept too.
    os.environ[CONTAINER_LABELS] = f"{LABEL}={marker}"
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


def all_images(client: str) -> list[tuple[str, str]]:
    """Every image of the engine: (repository, reference by tag, or by digest untagged)."""
    template = "{{.Repository}} {{.Tag}} {{.Digest}}"
    listed = docker(client, "images", "--digests", "--format", template)
    found = []
    for line in listed.stdout.splitlines():
        repository, tag, digest = line.split()
        reference = f"{repository}:{tag}" if tag != "<none>" else f"{repository}@{digest}"
        found.append((repository, reference))
    return found


def images_of(client: str, marker: str) -> list[str]:
    """The engine's images in run ``marker``'s namespace (by tag, or by digest untagged);
    ``marker=""``: in any run's."""
    listed = all_images(client)
    return [reference for repository, reference in listed if in_namespace(repository, marker)]


def in_namespace(repository: str, marker: str) -> bool:
    """``repository`` is named in run ``marker``'s namespace (``""``: in any run's)."""
    namespace = NAMESPACE_PREFIX + marker + ("/" if marker else "")
    return repository.startswith(namespace) or f"/{namespace}" in repository


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


def created_labels(client: str, image: str, since: float) -> list[dict[str, str]]:
    """The labels of each container created from ``image`` since ``since`` (``time.time()``),
    from the engine's events: a container already removed (``--rm``) counts too."""
    listed = docker(
        client, "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 1:.3f}",
        "--filter", "type=container", "--filter", "event=create", "--filter", f"image={image}",
        "--format", "{{json .Actor.Attributes}}",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def leftovers(client: str, marker: str) -> Leftovers:
    containers = [f"{cid} {name}" for cid, name, _ in containers_of(client, marker)]
    return Leftovers(images_of(client, marker), containers)


def remove(client: str, left: Leftovers) -> None:
    if left.containers:
        docker(client, "rm", "--force", *(line.split()[0] for line in left.containers))
    if left.images:
        docker(client, "rmi", "--force", *left.images)


def record_registry(address: str) -> None:
    """Note that this run started a registry at ``address`` (``host:port``): the images named
    after it carry no run marker, and a killed run's stop_registry never removed them."""
    folder = RECORDS / current()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / address).touch()


def forget_registry(address: str) -> None:
    """The registry at ``address`` was stopped (its images removed): no longer this run's."""
    (RECORDS / current() / address).unlink(missing_ok=True)


def registries_of_dead_runs() -> dict[str, list[str]]:
    """The addresses of the registries each dead run started and never stopped, by marker."""
    found: dict[str, list[str]] = {}
    folders = sorted(RECORDS.iterdir()) if RECORDS.is_dir() else []
    for folder in folders:
        if not alive(folder.name):
            found[folder.name] = sorted(path.name for path in folder.iterdir())
    return found


def listening(address: str) -> bool:
    """Something accepts connections at ``host:port``: the port is someone's again."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def unserved_images(listed: list[tuple[str, str]], addresses: list[str]) -> list[str]:
    """The references in ``listed`` named after one of the registry ``addresses`` that nothing
    answers at any more. A registry answering there now is another's (a live run's, a user's:
    the port was given again), and those images may be its: they stay. (One that started
    after the listing has none of its images in it.)"""
    return [
        reference
        for address in addresses
        if not listening(address)
        for _, reference in listed
        if reference.startswith(f"{address}/")
    ]


def remove_images_of_dead_runs(client: str) -> list[str]:
    """Remove every image of a run that is dead (killed before its teardowns and its end's
    check): those in its namespace, and those named after a registry it started and never
    stopped. Their references. A live run's images are kept."""
    listed = all_images(client)  # before the records are read: see below
    dead = []
    for repository, reference in listed:
        if in_namespace(repository, ""):
            namespace = next(p for p in repository.split("/") if p.startswith(NAMESPACE_PREFIX))
            if not alive(namespace.removeprefix(NAMESPACE_PREFIX)):
                dead.append(reference)
    for marker, addresses in registries_of_dead_runs().items():
        dead += unserved_images(listed, addresses)
        shutil.rmtree(RECORDS / marker, ignore_errors=True)
    dead = sorted(set(dead))
    if dead:
        docker(client, "rmi", "--force", *dead)
    return dead


def release_registries(client: str, marker: str = "") -> list[str]:
    """At the end of the run ``marker`` (this one by default): its registry records go (a
    registry the suite's own `invoke registry --stop` stopped never forgot its record), with
    the images named after those registries that nothing answers for any more. Their
    references."""
    folder = RECORDS / (marker or current())
    addresses = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    listed = all_images(client) if addresses else []
    gone = sorted(set(unserved_images(listed, addresses)))
    shutil.rmtree(folder, ignore_errors=True)
    if gone:
        docker(client, "rmi", "--force", *gone)
    return gone


def remove_containers_of_dead_runs(client: str) -> list[str]:
    """Remove every container whose run is dead (killed, so no teardown ran): ``id name``
    of each. A container of a run that still runs (another session's) is kept."""
    dead = [(cid, name) for cid, name, marker in containers_of(client) if not alive(marker)]
    if dead:
        docker(client, "rm", "--force", *(cid for cid, _ in dead))
    return [f"{cid} {name}" for cid, name in dead]
