"""Real tests of the embedded local registry (Debian's docker-registry binary or registry:2)."""

from __future__ import annotations

import base64
import http.server
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
from cicd.local_registry import RegistryError
from tests.support.project import refused_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(local_registry.REGISTRY_BINARY).exists() and shutil.which("htpasswd")),
        reason="needs docker-registry and apache2-utils (run scripts/bootstrap)",
    ),
]

USER, PASSWORD = "ci", "s3cret-pw"


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
    reg = local_registry.start(port=0, storage=tmp_path, htpasswd=(USER, PASSWORD), use_image=False)
    try:
        yield reg
    finally:
        local_registry.stop(port=reg.port, state_dir=tmp_path)


def test_auth_required_and_accepted(registry: local_registry.RegistryProcess) -> None:
    assert registry.kind == "binary"
    assert _get_v2(registry.url) == 401
    assert _get_v2(registry.url, (USER, PASSWORD)) == 200
    assert _get_v2(registry.url, (USER, "wrong")) == 401
    assert local_registry.is_up(registry.url)


def test_password_only_in_bcrypt_file(
    registry: local_registry.RegistryProcess, tmp_path: Path
) -> None:
    for f in tmp_path.rglob("*"):
        if f.is_file() and "data" not in f.parts:
            assert PASSWORD not in f.read_text(errors="replace"), f
    line = (registry.run_dir / "htpasswd").read_text().strip()
    assert line.startswith(f"{USER}:$2y$")


def test_start_is_idempotent(registry: local_registry.RegistryProcess, tmp_path: Path) -> None:
    again = local_registry.start(port=registry.port, storage=tmp_path, htpasswd=(USER, PASSWORD))
    assert again.url == registry.url
    assert again.pid == registry.pid


def test_stop_brings_it_down(tmp_path: Path) -> None:
    reg = local_registry.start(port=0, storage=tmp_path, use_image=False)
    port = reg.port
    assert port != 0
    assert _get_v2(reg.url) == 200  # no auth configured
    assert local_registry.stop(port=port, state_dir=tmp_path) is True
    assert not local_registry.is_up(reg.url)
    assert local_registry.stop(port=port, state_dir=tmp_path) is False  # nothing left


def test_port_taken_by_non_registry(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(RegistryError, match="not a registry"):
            local_registry.start(port=port, storage=tmp_path, use_image=False)
    finally:
        server.shutdown()
        server.server_close()


def test_wait_until_up_times_out() -> None:
    with refused_port() as port, pytest.raises(RegistryError, match="did not answer"):
        local_registry.wait_until_up(f"http://127.0.0.1:{port}", timeout=0.3)


def test_dry_run_starts_nothing(tmp_path: Path) -> None:
    with refused_port() as port:
        reg = local_registry.start(port=port, storage=tmp_path, dry_run=True, use_image=False)
        assert reg.kind == "dry-run"
        assert not local_registry.is_up(reg.url)
    assert not (tmp_path / f"run-{port}" / "pid").exists()


def test_port_zero_gets_a_port_from_the_os_and_stop_finds_it(tmp_path: Path) -> None:
    first = local_registry.start(port=0, storage=tmp_path, use_image=False)
    second = local_registry.start(port=0, storage=tmp_path, use_image=False)
    try:
        assert 0 < first.port != second.port > 0
        assert _get_v2(first.url) == _get_v2(second.url) == 200
    finally:
        assert local_registry.stop(port=first.port, state_dir=tmp_path) is True
        assert local_registry.stop(port=second.port, state_dir=tmp_path) is True
    assert not local_registry.is_up(first.url) and not local_registry.is_up(second.url)


def test_state_is_private(registry: local_registry.RegistryProcess, tmp_path: Path) -> None:
    for directory in (tmp_path, tmp_path / "data", registry.run_dir):
        assert directory.stat().st_mode & 0o077 == 0, f"{directory} is readable by others"
    for name in ("config.yml", "registry.log", "htpasswd"):
        assert (registry.run_dir / name).stat().st_mode & 0o077 == 0, name


def test_the_embedded_registry_listens_on_loopback_only(tmp_path: Path) -> None:
    from cicd.settings import LocalRegistry
    from cicd.shell import Runner

    for host in ("0.0.0.0", "192.168.1.10", "127.evil.example"):
        with pytest.raises(RegistryError, match="not a loopback address"):
            local_registry.ensure_running(Runner(), LocalRegistry(host, 5999, tmp_path))
    assert not list(tmp_path.iterdir()), "nothing is started or written for a refused host"


def test_a_registry_the_suite_did_not_start_is_not_taken_as_ours(
    registry: local_registry.RegistryProcess, tmp_path: Path
) -> None:
    # Another registry answers on the embedded registry's port (here: one started with
    # another state directory); publishing there silently would push to a stranger.
    from cicd.settings import LocalRegistry
    from cicd.shell import Runner

    other_state = tmp_path / "other-clone"
    embedded = LocalRegistry(registry.host, registry.port, other_state)
    with pytest.raises(RegistryError, match="a registry this suite did not start answers on"):
        local_registry.ensure_running(Runner(), embedded)
    mine = LocalRegistry(registry.host, registry.port, tmp_path)
    assert local_registry.ensure_running(Runner(), mine).pid == registry.pid


def test_concurrent_starts_make_one_registry_that_stop_stops(tmp_path: Path) -> None:
    with refused_port() as port:
        pass  # a port nobody listens on (released: the two starts race for it below)
    program = (
        "import sys; from pathlib import Path; from cicd import local_registry as r; "
        f"print(r.start(port={port}, storage=Path(sys.argv[1]), use_image=False).pid)"
    )
    src = Path(local_registry.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-c", program, str(tmp_path)]
    starts = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in "ab"]
    pids = {int(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in starts}
    try:
        assert len(pids) == 1, f"two registries were started: {pids}"
    finally:
        assert local_registry.stop(port=port, state_dir=tmp_path) is True
    assert not local_registry.is_up(f"http://127.0.0.1:{port}")
