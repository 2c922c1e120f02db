"""Real tests of the embedded local registry (Debian's docker-registry binary or registry:2),
and of the password-protected registries the tests start (tests/support/registry_process.py)."""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cicd import local_registry
from cicd import settings as settings_module
from cicd.context import Run
from cicd.local_registry import AUTO, RegistryError
from cicd.settings import LocalRegistry
from cicd.shell import Runner
from tests.support import registry_process
from tests.support.project import ROOT, refused_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(local_registry.REGISTRY_BINARY).exists() and shutil.which("htpasswd")),
        reason="needs docker-registry and apache2-utils (run scripts/bootstrap)",
    ),
]

USER, PASSWORD = "ci", "s3cret-pw"


def embedded(
    storage: Path,
    port: int,
    host: str = "127.0.0.1",
    dry: bool = False,
    auth: bool = False,
    user: tuple[str, str] | None = None,
) -> Run:
    """The run context of a task whose embedded registry is ``host:port`` storing in
    ``storage``; ``auth``: suite.local_registry.auth; ``user``: the configured registry user."""
    environ = {}
    if user:
        environ = {"CONTAINER_REGISTRY_USERNAME": user[0], "CONTAINER_REGISTRY_PASSWORD": user[1]}
    settings = settings_module.load(ROOT, environ)
    local = LocalRegistry(host, port, storage, auth)
    runner = Runner(dry=dry)
    runner.add_secret(settings.registry_password)
    return Run(runner, dataclasses.replace(settings, local_registry=local), environ)


def _get_v2(url: str, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url + "/v2/")
    if auth:
        req.add_header(
            "Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[local_registry.RegistryProcess]:
    reg = registry_process.start(tmp_path, (USER, PASSWORD))
    try:
        yield reg
    finally:
        registry_process.stop(tmp_path, reg.port)


def test_auth_required_and_accepted(registry: local_registry.RegistryProcess) -> None:
    assert registry.kind == "binary"
    assert _get_v2(registry.url) == 401
    assert _get_v2(registry.url, (USER, PASSWORD)) == 200
    assert _get_v2(registry.url, (USER, "wrong")) == 401
    assert local_registry.answers(registry.url)


def test_password_only_in_bcrypt_file(
    registry: local_registry.RegistryProcess, tmp_path: Path
) -> None:
    for f in tmp_path.rglob("*"):
        if f.is_file() and "data" not in f.parts:
            assert PASSWORD not in f.read_text(errors="replace"), f
    line = (registry.run_dir / "htpasswd").read_text().strip()
    assert line.startswith(f"{USER}:$2y$")


def test_start_is_idempotent(registry: local_registry.RegistryProcess, tmp_path: Path) -> None:
    again = local_registry.ensure_running(embedded(tmp_path, registry.port, user=(USER, PASSWORD)))
    assert again.url == registry.url
    assert again.pid == registry.pid


def test_stop_brings_it_down(tmp_path: Path) -> None:
    reg = registry_process.start(tmp_path)
    port, run = reg.port, embedded(tmp_path, reg.port)
    assert port != 0
    assert _get_v2(reg.url) == 200  # no auth configured
    assert local_registry.is_up(run)
    assert local_registry.stop(run) is True
    assert not local_registry.is_up(run)
    assert local_registry.stop(run) is False  # nothing left


def test_port_taken_by_non_registry(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(RegistryError, match="not a registry"):
            local_registry.ensure_running(embedded(tmp_path, port))
    finally:
        server.shutdown()
        server.server_close()


def test_wait_until_up_times_out() -> None:
    with refused_port() as port, pytest.raises(RegistryError, match="did not answer"):
        local_registry.wait_until_up(f"http://127.0.0.1:{port}", timeout=0.3)


def test_dry_run_starts_nothing(tmp_path: Path, capsys) -> None:
    with refused_port() as port:
        reg = local_registry.ensure_running(embedded(tmp_path, port, dry=True))
        assert reg.kind == "dry-run"
        assert not local_registry.answers(reg.url)
        assert local_registry.stop(embedded(tmp_path, port, dry=True)) is False
    assert "[dry-run] would start" in capsys.readouterr().out
    assert not list(tmp_path.iterdir()), "a dry run wrote something"


def test_test_registries_get_a_port_from_the_os_and_stop_finds_it(tmp_path: Path) -> None:
    first = registry_process.start(tmp_path)
    second = registry_process.start(tmp_path)
    try:
        assert 0 < first.port != second.port > 0
        assert _get_v2(first.url) == _get_v2(second.url) == 200
    finally:
        assert registry_process.stop(tmp_path, first.port) is True
        assert registry_process.stop(tmp_path, second.port) is True
    assert not local_registry.answers(first.url) and not local_registry.answers(second.url)


def test_state_is_private(registry: local_registry.RegistryProcess, tmp_path: Path) -> None:
    for directory in (tmp_path, tmp_path / "data", registry.run_dir):
        assert directory.stat().st_mode & 0o077 == 0, f"{directory} is readable by others"
    for name in ("config.yml", "registry.log", "htpasswd"):
        assert (registry.run_dir / name).stat().st_mode & 0o077 == 0, name


def test_the_embedded_registrys_state_is_private_too(tmp_path: Path) -> None:
    port = AUTO  # the OS assigns one and the registry keeps it
    reg = local_registry.start(Runner(), "127.0.0.1", port, tmp_path)  # Debian's binary
    try:
        for directory in (tmp_path, tmp_path / "data", reg.run_dir):
            assert directory.stat().st_mode & 0o077 == 0, f"{directory} is readable by others"
        for name in ("config.yml", "registry.log"):
            assert (reg.run_dir / name).stat().st_mode & 0o077 == 0, name
    finally:
        assert local_registry.stop_port(Runner(), port, tmp_path) is True


def test_a_registry_that_dies_at_start_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    # Its cleanup runs under the start's lock: it must not wait for that lock itself.
    monkeypatch.setattr(local_registry, "REGISTRY_BINARY", shutil.which("false"))
    port = AUTO
    with pytest.raises(RegistryError, match="did not come up"):
        local_registry.start(Runner(), "127.0.0.1", port, tmp_path)
    assert not (tmp_path / f"run-{port}" / "pid").exists()


def test_the_embedded_registry_asks_for_the_configured_user_when_auth_is_on(tmp_path: Path):
    port = AUTO
    with pytest.raises(RegistryError, match="auth is on but no user is set"):
        local_registry.ensure_running(embedded(tmp_path, port, auth=True))
    run = embedded(tmp_path, port, auth=True, user=(USER, PASSWORD))
    reg = local_registry.ensure_running(run)
    try:
        assert reg.kind == "binary"
        assert _get_v2(reg.url) == 401
        assert _get_v2(reg.url, (USER, PASSWORD)) == 200
        assert _get_v2(reg.url, (USER, "wrong")) == 401
        htpasswd = (reg.run_dir / "htpasswd").read_text()
        assert htpasswd.startswith(f"{USER}:$2") and PASSWORD not in htpasswd  # bcrypt only
        for path in tmp_path.rglob("*"):
            if path.is_file() and path.name != "htpasswd":
                assert PASSWORD not in path.read_text(errors="replace"), path
        # Adopted again as it is; without a user it cannot be used: one line says so.
        assert local_registry.ensure_running(run).pid == reg.pid
        with pytest.raises(RegistryError, match="asks for a password: set CONTAINER_REGISTRY"):
            local_registry.ensure_running(embedded(tmp_path, port))
    finally:
        assert local_registry.stop(run) is True


def test_an_open_embedded_registry_is_refused_when_auth_is_on(tmp_path: Path):
    port = AUTO
    local_registry.ensure_running(embedded(tmp_path, port))  # started without auth
    try:
        with pytest.raises(RegistryError, match="runs without a password"):
            local_registry.ensure_running(
                embedded(tmp_path, port, auth=True, user=(USER, PASSWORD))
            )
    finally:
        assert local_registry.stop_port(Runner(), port, tmp_path) is True


def test_the_embedded_registry_listens_on_loopback_only(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.168.1.10", "127.evil.example"):
        with pytest.raises(RegistryError, match="not a loopback address"):
            local_registry.ensure_running(embedded(tmp_path, AUTO, host=host))
    assert not list(tmp_path.iterdir()), "nothing is started or written for a refused host"


def test_a_registry_the_suite_did_not_start_is_not_taken_as_ours(
    registry: local_registry.RegistryProcess, tmp_path: Path
) -> None:
    # Another registry answers on the embedded registry's port (here: one started with
    # another state directory); publishing there silently would push to a stranger.
    with pytest.raises(RegistryError, match="a registry this suite did not start answers on"):
        local_registry.ensure_running(embedded(tmp_path / "other-clone", registry.port))
    ours = embedded(tmp_path, registry.port, user=(USER, PASSWORD))  # it asks for a password
    assert local_registry.ensure_running(ours).pid == registry.pid


def test_concurrent_starts_make_one_registry_that_stop_stops(tmp_path: Path) -> None:
    port = AUTO  # the two starts race for the state directory's lock, not for a port
    program = (
        "import sys; from pathlib import Path; from cicd import local_registry as r; "
        "from cicd.shell import Runner; "
        f"print(r.start(Runner(), '127.0.0.1', {port}, Path(sys.argv[1])).pid)"
    )
    src = Path(local_registry.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-c", program, str(tmp_path)]
    starts = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in "ab"]
    pids = {int(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in starts}
    try:
        assert len(pids) == 1, f"two registries were started: {pids}"
    finally:
        assert local_registry.stop(embedded(tmp_path, port)) is True
    assert not local_registry.answers(f"http://127.0.0.1:{port}")


def test_port_0_lets_the_os_choose_and_the_settings_read_it_back(tmp_path: Path) -> None:
    """suite.local_registry.port 0: the binary binds a port the OS assigns and keeps it (no
    probe-then-release); the port is recorded where the settings' address reads it."""
    run = embedded(tmp_path, AUTO)
    assert run.settings.local_registry.address == "127.0.0.1:0"  # nothing recorded yet
    assert not local_registry.is_up(run)
    reg = local_registry.ensure_running(run)
    try:
        assert reg.kind == "binary" and reg.port > 0
        assert run.settings.local_registry.address == reg.address
        assert (tmp_path / "run-0" / "port").read_text().strip() == str(reg.port)
        assert local_registry.is_up(run) and _get_v2(reg.url) == 200
        config = json.loads((reg.run_dir / "config.yml").read_text())
        assert config["http"]["addr"] == "127.0.0.1:0"  # the OS chose, not this suite
        again = local_registry.ensure_running(run)  # adopted through the record
        assert (again.pid, again.port) == (reg.pid, reg.port)
    finally:
        assert local_registry.stop(run) is True
    assert not (tmp_path / "run-0" / "port").exists()
    assert run.settings.local_registry.address == "127.0.0.1:0"
    assert not local_registry.is_up(run) and local_registry.stop(run) is False


# Finding 11 of issue 23 (local trust): a record file alone proves nothing. Another registry
# answers on the embedded registry's port (here one with another state directory, as a
# stranger's would), and the state directory holds a record that no longer names it: a
# container that is gone, a pid without its start time (an older record, or any pid
# written there), a pid with another start time (the number reused by another process).
STALE_RECORDS = {
    "container-id": f"{'0' * 64} 2026-12-05T06:00:00.123456789Z\n",
    "pid": "{pid}\n",
    "pid ": "{pid} 1\n",
}


@pytest.mark.parametrize("name", STALE_RECORDS, ids=["container-gone", "pid-only", "pid-reused"])
def test_a_stale_record_neither_adopts_nor_stops_a_registry_the_suite_did_not_start(
    tmp_path: Path, name: str
) -> None:
    stranger = registry_process.start(tmp_path / "stranger")  # no password: usable as it is
    try:
        ours = tmp_path / "ours"
        record = ours / f"run-{stranger.port}" / name.strip()
        record.parent.mkdir(parents=True)
        record.write_text(STALE_RECORDS[name].format(pid=stranger.pid))
        run = embedded(ours, stranger.port)
        with pytest.raises(RegistryError) as refused:
            local_registry.ensure_running(run)
        said = str(refused.value)
        assert f"a registry this suite did not start answers on {stranger.address}" in said
        assert f"{record} names " in said and "which no longer runs as this suite started" in said
        assert "stop it, or set suite.local_registry.port in invoke.yaml" in said
        assert "\n" not in said
        assert not record.exists(), "the stale record was kept for stop to act on"
        assert local_registry.stop(run) is False
        assert local_registry.probe(stranger.url) == 200, "stop stopped the stranger"
    finally:
        assert registry_process.stop(tmp_path / "stranger", stranger.port) is True


def test_the_record_names_the_process_with_its_start_time(tmp_path: Path) -> None:
    # What adoption and stop compare: the pid and /proc/<pid>/stat's start time (field 22).
    reg = registry_process.start(tmp_path)
    try:
        pid, started = (reg.run_dir / "pid").read_text().split()
        stat = Path(f"/proc/{reg.pid}/stat").read_text().rpartition(")")[2].split()
        assert (int(pid), started) == (reg.pid, stat[19])
        again = local_registry.ensure_running(embedded(tmp_path, reg.port))
        assert (again.kind, again.pid) == ("binary", reg.pid)
    finally:
        assert registry_process.stop(tmp_path, reg.port) is True
