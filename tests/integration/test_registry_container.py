"""The embedded registry's container path, for real: the image of ``suite.local_registry.image``
run by the engine (tests/support/registry_image.py builds one from Debian's Distribution
binary, since ``registry:2`` cannot be pulled here), and no implicit pull when the engine lacks
the image."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cicd import local_registry
from cicd import settings as settings_module
from cicd.context import Run
from cicd.local_registry import RegistryError
from cicd.registry import RegistryClient
from cicd.settings import LocalRegistry
from cicd.shell import Runner
from tests.support import registry_image
from tests.support.project import ROOT

WHY_NOT = registry_image.available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.docker,
    pytest.mark.skipif(WHY_NOT is not None, reason=f"{WHY_NOT} (run scripts/bootstrap)"),
]


@dataclasses.dataclass
class RecordingRunner(Runner):
    """A Runner that keeps every command it was asked to run (copies share the list)."""

    commands: list[list[str]] = dataclasses.field(default_factory=list)

    def run(self, command, *args, **kwargs):  # type: ignore[override]
        self.commands.append([str(word) for word in command])
        return super().run(command, *args, **kwargs)


def embedded(storage: Path, port: int, image: str, runner: Runner) -> Run:
    settings = settings_module.load(ROOT, {})
    local = LocalRegistry("127.0.0.1", port, storage, False, image=image)
    return Run(runner, dataclasses.replace(settings, local_registry=local), {})


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    with registry_image.built() as tag:
        yield tag


def container_ids(image: str) -> list[str]:
    listed = registry_image.docker("ps", "-aq", "--no-trunc", "--filter", f"ancestor={image}")
    return listed.stdout.split()


def test_the_image_of_the_setting_serves_keeps_its_data_and_stops(image: str, tmp_path: Path):
    runner = RecordingRunner()
    # Port 0: the engine assigns the port (`-p 127.0.0.1::5000`) and keeps it.
    run = embedded(tmp_path, local_registry.AUTO, image, runner)
    first = local_registry.ensure_running(run)
    try:
        assert first.kind == "container" and first.container_id and first.port > 0
        assert run.settings.local_registry.address == first.address  # recorded, read back
        assert container_ids(image) == [first.container_id]
        assert local_registry.probe(first.url) == 200  # /v2/ of the registry API
        # Published on 127.0.0.1 only, on a port the engine chose: its own record of it.
        inspected = json.loads(registry_image.docker("inspect", first.container_id).stdout)
        bindings = inspected[0]["HostConfig"]["PortBindings"]["5000/tcp"]
        assert bindings == [{"HostIp": "127.0.0.1", "HostPort": ""}]
        published = inspected[0]["NetworkSettings"]["Ports"]["5000/tcp"]
        assert published == [{"HostIp": "127.0.0.1", "HostPort": str(first.port)}]
        client = RegistryClient(first.address)
        digest = client.upload_blob("kept/across-restarts", b"a record that must survive\n")
        # Adopted, not started twice.
        assert local_registry.ensure_running(run).container_id == first.container_id
    finally:
        assert local_registry.stop(run) is True
    assert container_ids(image) == []  # removed, not only stopped
    assert local_registry.probe(first.url) is None
    assert local_registry.stop(run) is False  # nothing left to stop

    second = local_registry.ensure_running(run)
    try:
        assert second.kind == "container" and second.container_id != first.container_id
        again = RegistryClient(second.address)
        assert again.blob("kept/across-restarts", digest) == b"a record that must survive\n"
    finally:
        assert local_registry.stop(run) is True
    assert not any("pull" in command for command in runner.commands), runner.commands
    assert (tmp_path / "data" / "docker" / "registry" / "v2" / "blobs").is_dir()


def test_the_container_does_not_answer_on_other_addresses(image: str, tmp_path: Path):
    outward = registry_image.outward_address()
    if outward is None:
        pytest.skip("this machine has no address besides loopback to try")
    with registry_image.held_port() as port:
        run = embedded(tmp_path, port, image, Runner(out=io.StringIO()))
        found = local_registry.ensure_running(run)
        try:
            assert found.kind == "container"
            with socket.socket() as outside:
                outside.settimeout(5)
                refused = (errno.ECONNREFUSED, errno.EHOSTUNREACH)
                assert outside.connect_ex((outward, port)) in refused
            assert local_registry.answers(found.url)
        finally:
            assert local_registry.stop(run) is True


def test_without_the_image_the_binary_serves_and_nothing_is_pulled(tmp_path: Path, capsys):
    absent = "celestial-test-registry:never-built"
    assert registry_image.docker("image", "inspect", absent, check=False).returncode != 0
    runner = RecordingRunner()
    with registry_image.held_port() as port:
        run = embedded(tmp_path, port, absent, runner)
        found = local_registry.ensure_running(run)
        try:
            assert found.kind == "binary"
            assert local_registry.probe(found.url) == 200
        finally:
            assert local_registry.stop(run) is True
    docker_commands = [c for c in runner.commands if "docker" in Path(c[0]).name]
    assert docker_commands, "the engine was not asked whether it has the image"
    assert all(c[1:3] == ["image", "inspect"] for c in docker_commands), docker_commands
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if f"has no {absent} image" in line]
    assert len(said) == 1 and "never pulled" in said[0], out


@pytest.mark.parametrize(
    "started", ["", " 2026-01-01T00:00:00.000000000Z"], ids=["id-only", "restarted"]
)
def test_a_record_naming_a_running_container_without_its_start_time_is_not_ours(
    image: str, tmp_path: Path, started: str
):
    # Finding 11 of issue 23: a container id in a state directory proves nothing by itself
    # (an older record, a copied one, a container started again). A registry container of
    # another state directory answers on the port; this one's record names that container
    # without the start time the engine reports: not adopted, and stop does not remove it.
    stranger_run = embedded(tmp_path / "stranger", local_registry.AUTO, image, Runner())
    stranger = local_registry.ensure_running(stranger_run)
    try:
        assert stranger.kind == "container" and stranger.container_id
        ours = tmp_path / "ours"
        record = ours / f"run-{stranger.port}" / "container-id"
        record.parent.mkdir(parents=True)
        record.write_text(f"{stranger.container_id}{started}\n")
        run = embedded(ours, stranger.port, image, Runner())
        with pytest.raises(RegistryError, match="a registry this suite did not start answers on"):
            local_registry.ensure_running(run)
        assert local_registry.stop(run) is False
        assert container_ids(image) == [stranger.container_id], "stop removed the stranger"
        assert local_registry.probe(stranger.url) == 200
    finally:
        assert local_registry.stop(stranger_run) is True
