"""Real tests of the embedded local registry (Debian's docker-registry binary or registry:2)."""

from __future__ import annotations

import base64
import http.server
import shutil
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
