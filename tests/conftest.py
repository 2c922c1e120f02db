"""Fixtures shared by every test directory: real registries and real projects.

* ``registry`` (module): a Distribution registry with htpasswd auth (user ``ci-bot``, the
  per-run sentinel password) on a port the OS assigns; stopped, and its images removed, at
  the end of the module. In a module that uses ``training``, it starts with the layers of
  the trained image (``registry_seed``, session: one real publish per run), no image.
* ``training`` (session): the run's one `nox -s train` (:func:`tests.support.project.train_once`),
  shared by pytest-xdist's workers through a file lock in the run's common temporary folder.
* ``new_project`` (session): ``new_project(name, registry, dvc_remote=None, env=None,
  source=ROOT, trained=None)`` makes a :class:`tests.support.project.Project`, a clone of the
  working tree (uncommitted changes included) with its own HOME, BentoML store and DVC remote;
  with ``trained``, a clone of the trained one whose remote already has every output.
* every process the tests start (registries, moto, services, runners) is killed when the
  test process ends, even by ``kill -9`` (``tests/support/reaper.py``, armed at configure).
* every image and container the tests make carries the run's marker
  (``tests/support/runs.py``): the run's start removes the containers of dead (killed) runs,
  and the run's end fails, naming them, when the run left any of its own (then removes them).
* ``leak_scan`` (session): every project and registry the two fixtures above make is
  registered with it; when the session ends it searches all of them for the sentinel
  password (see ``tests/support/leaks.py``) and fails if it is anywhere. Being a session
  finalizer, it checks whatever ran, in any order, with ``-k`` or ``-x`` too.

The helpers themselves are in ``tests/support/project.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import reaper, runs
from tests.support.leaks import LeakScan
from tests.support.project import (
    ROOT,
    SENTINEL,
    SIGNING_KEY_SECRET,
    Project,
    Registry,
    Trained,
    docker_client_path,
    make_project,
    remove_seed_image,
    seed_once,
    start_registry,
    stop_registry,
    train_once,
)

# What the session's secret scan covered, printed in pytest's summary (a silent scan shows).
LEAK_SCAN_SUMMARY: list[str] = []
# What dead runs and this run left in the Docker engine (removed), printed in the summary.
ENGINE_SUMMARY: list[str] = []


@pytest.fixture(scope="session")
def leak_scan() -> Iterator[LeakScan]:
    scan = LeakScan(SENTINEL, SIGNING_KEY_SECRET)
    yield scan
    found = scan.findings()
    assert not found, "the registry password or the signing key appears in:\n" + "\n".join(found)
    outputs = sum(len(project.outputs) for project in scan.projects)
    LEAK_SCAN_SUMMARY.append(
        f"leak scan: the registry password and the signing key are in none of {outputs} "
        "command outputs, "
        f"{scan.files_checked} files, {scan.images_inspected} pushed images (by digest)"
    )


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller's run
        reaper.arm()  # every process a test starts dies with this one (tests/support/reaper.py)
        return
    marker = runs.begin()  # before the workers start: they inherit it
    client = engine_client()
    # This run's containers go when it ends, however it ends; a killed run's watchdog may
    # have been killed too, and no teardown of it ran: what every dead run left goes now.
    reaper.arm((client, f"{runs.LABEL}={marker}") if client else None)
    if client:
        for container in runs.remove_containers_of_dead_runs(client):
            ENGINE_SUMMARY.append(f"removed the container of a dead test run: {container}")
        for image in runs.remove_images_of_dead_runs(client):
            ENGINE_SUMMARY.append(f"removed the image of a dead test run: {image}")


def engine_client() -> str | None:
    """The docker client, or None on a machine without one (the unit tests run there)."""
    return docker_client_path() if shutil.which("docker") else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first (Docker, then other slow ones), each file's order kept: pytest-xdist
    (`--dist loadfile --no-loadscope-reorder`, noxfile.py) hands files out in this order, so
    the long files start at once instead of ending the run alone on one worker."""
    items.sort(
        key=lambda item: (
            not item.get_closest_marker("docker"),
            not item.get_closest_marker("slow"),
        )
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist a worker's session fixtures end before this: its scan's line goes to
    # the controller, which prints every worker's (pytest_testnodedown below).
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["leak_scan"] = list(LEAK_SCAN_SUMMARY)
    else:  # the run's end (pytest-xdist's controller runs this after every worker ended)
        remove_seed_image()
        fail_on_leftovers(session)
        release_registries()


def release_registries() -> None:
    """The run's registry records go at its end, with images named after a registry of the
    run that nothing serves any more (runs.release_registries)."""
    client = engine_client()
    if client:
        for image in runs.release_registries(client):
            ENGINE_SUMMARY.append(f"removed an image named after this run's registry: {image}")


def fail_on_leftovers(session: pytest.Session) -> None:
    """Every test removes what it made in the engine: what this run left fails it, by name
    (a cleanup that matches nothing is silent otherwise), and is removed."""
    client = engine_client()
    left = runs.leftovers(client, runs.current()) if client else None
    if not left:
        return
    ENGINE_SUMMARY.extend(
        [f"LEFT IN THE ENGINE by this run (removed now): image {name}" for name in left.images]
        + [f"LEFT IN THE ENGINE by this run (removed now): container {c}" for c in left.containers]
    )
    runs.remove(client, left)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    LEAK_SCAN_SUMMARY.extend(getattr(node, "workeroutput", {}).get("leak_scan", []))


def pytest_terminal_summary(terminalreporter) -> None:
    for line in LEAK_SCAN_SUMMARY:
        terminalreporter.write_line(line)
    for line in ENGINE_SUMMARY:
        terminalreporter.write_line(line, red="LEFT" in line, bold="LEFT" in line)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, leak_scan, request) -> Iterator[Registry]:
    # A module that publishes the trained project gets a registry holding its image's layers
    # already (tests/support/project.py: seed_once), as a real one does after a publish.
    module_items = [item for item in request.session.items if item.module is request.module]
    trains = any("training" in getattr(item, "fixturenames", ()) for item in module_items)
    seed = request.getfixturevalue("registry_seed") if trains else None
    started = start_registry(tmp_path_factory.mktemp("registry"), seed=seed)
    leak_scan.add_registry(started)
    yield started
    leak_scan.record_pushed_images(started)  # by digest, while the registry still runs
    stop_registry(started)


@pytest.fixture(scope="session")
def training(tmp_path_factory, worker_id) -> Trained:
    # Under pytest-xdist each worker has its own basetemp; their parent is the run's own.
    base = tmp_path_factory.getbasetemp()
    return train_once(base if worker_id == "master" else base.parent)


@pytest.fixture(scope="session")
def registry_seed(tmp_path_factory, worker_id, training) -> Path:
    base = tmp_path_factory.getbasetemp()
    return seed_once(base if worker_id == "master" else base.parent, training)


@pytest.fixture(scope="session")
def new_project(tmp_path_factory, leak_scan) -> Callable[..., Project]:
    def make(
        name: str,
        registry: Registry | None,
        dvc_remote: Path | None = None,
        env: dict[str, str] | None = None,
        source: Path = ROOT,
        trained: Trained | None = None,
    ) -> Project:
        base = tmp_path_factory.mktemp(name)
        if trained is not None:
            source, dvc_remote = trained.source, trained.remote_copy(base / "dvc-remote")
        project = make_project(base, registry, dvc_remote, env, source=source)
        leak_scan.add_project(project)
        return project

    return make
