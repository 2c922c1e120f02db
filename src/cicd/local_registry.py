"""Start and stop the project's embedded local image registry (CNCF Distribution, API v2).

Two ways to run it, chosen by :func:`start`:

* the ``registry:2`` image, when the Docker engine has it locally (or can pull it), run as a
  container that publishes ``host:port`` (used on machines with Docker Hub);
* otherwise Debian's ``docker-registry`` binary (package ``docker-registry``, Distribution
  2.8) as a background process with a config file generated in the state directory.

Either way the data lives outside git's view (default ``~/.cache/celestial-bodies/registry``):
``<state_dir>/data`` holds the blobs, ``<state_dir>/run-<port>/`` the config, log, pid file and
the bcrypt ``htpasswd`` file. :func:`stop` stops only what :func:`start` started (it reads the
pid file or the container id file there). Passwords never appear on a command line or in any
file but the bcrypt htpasswd file (``htpasswd -niB USER`` reads the password from stdin).

Plain stdlib (subprocess, urllib). Errors the user can fix raise :class:`RegistryError` with
a one-line message that says what to do.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cicd.errors import SuiteError

if TYPE_CHECKING:
    from cicd.settings import LocalRegistry
    from cicd.shell import Runner

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_STATE_DIR",
    "RegistryError",
    "RegistryProcess",
    "is_up",
    "probe",
    "start",
    "stop",
    "wait_until_up",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5050
DEFAULT_STATE_DIR = Path.home() / ".cache" / "celestial-bodies" / "registry"
REGISTRY_BINARY = "/usr/bin/docker-registry"
REGISTRY_IMAGE = "registry:2"
INSTALL_HINT = "install docker-registry (apt-get install docker-registry) or run scripts/bootstrap"


class RegistryError(SuiteError):
    """A local-registry problem the user can fix; the message says what to do."""


@dataclass(frozen=True)
class RegistryProcess:
    """What :func:`start` found or started.

    ``kind`` is ``"binary"`` (Debian's docker-registry process), ``"container"`` (registry:2),
    ``"existing"`` (something already answered; not ours, :func:`stop` leaves it alone) or
    ``"dry-run"``. ``pid`` is set for ``binary``, ``container_id`` for ``container``.
    """

    url: str
    host: str
    port: int
    kind: str
    run_dir: Path
    pid: int | None = None
    container_id: str | None = None
    auth: bool = False
    log_file: Path | None = None

    @property
    def address(self) -> str:
        """``host:port``, the registry part of an image reference."""
        return f"{self.host}:{self.port}"


def _url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def probe(url: str, auth: tuple[str, str] | None = None, timeout: float = 2.0) -> int | None:
    """HTTP status of ``GET {url}/v2/`` (optionally with basic auth), or None if nothing answers.

    Anything that answers but is not a registry (no ``Docker-Distribution-Api-Version`` header
    on a 200/401) returns the status negated, e.g. ``-404``, so callers can tell them apart.
    """
    req = urllib.request.Request(url.rstrip("/") + "/v2/")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers = resp.status, resp.headers
    except urllib.error.HTTPError as err:
        status, headers = err.code, err.headers
    except (urllib.error.URLError, OSError, ValueError):
        return None
    is_registry = status in (200, 401) and headers.get("Docker-Distribution-Api-Version")
    return status if is_registry else -status


def is_up(url: str) -> bool:
    """True when a registry answers ``GET {url}/v2/`` with 200 (open) or 401 (auth needed)."""
    return probe(url) in (200, 401)


def wait_until_up(url: str, timeout: float = 15.0) -> None:
    """Poll ``{url}/v2/`` until a registry answers; raise RegistryError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_up(url):
            return
        time.sleep(0.1)
    raise RegistryError(f"registry at {url} did not answer /v2/ within {timeout:.0f} s")


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _run_dir(state_dir: Path, port: int) -> Path:
    return state_dir / f"run-{port}"


def _make_htpasswd(path: Path, user: str, password: str) -> None:
    """Write a bcrypt htpasswd file; the password goes through stdin only."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        raise RegistryError(
            "htpasswd missing: install apache2-utils (apt-get install apache2-utils) "
            "or run scripts/bootstrap"
        )
    if ":" in user or not user:
        raise RegistryError("registry user name must be non-empty and contain no ':'")
    # -n: print to stdout, -i: read the password from stdin, -B: bcrypt.
    proc = subprocess.run(
        [htpasswd, "-niB", user],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RegistryError(f"htpasswd failed: {proc.stderr.strip() or proc.returncode}")
    path.write_text(proc.stdout.strip() + "\n")
    path.chmod(0o600)


def _config_yaml(host: str, port: int, data_dir: Path, htpasswd_file: Path | None) -> str:
    # JSON strings are valid YAML scalars: safe quoting for any path.
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {json.dumps(str(data_dir))}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: {json.dumps(f'{host}:{port}')}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if htpasswd_file is not None:
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: celestial-bodies",
            f"    path: {json.dumps(str(htpasswd_file))}",
        ]
    return "\n".join(lines) + "\n"


def _docker_client() -> str | None:
    """A docker client that talks to the engine (Debian's 20.10 one first), or None."""
    for cand in ("/usr/bin/docker", shutil.which("docker")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _engine_has_image(docker: str, image: str, pull: bool) -> bool:
    def run(*args: str, timeout: float) -> bool:
        try:
            return (
                subprocess.run(
                    [docker, *args], capture_output=True, timeout=timeout, check=False
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    if run("image", "inspect", image, timeout=10):
        return True
    return pull and run("pull", "-q", image, timeout=30)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still "exists": reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


@contextlib.contextmanager
def _locked(storage: Path) -> Iterator[None]:
    """One start or stop at a time per state directory: two concurrent starts would both
    spawn a registry, and the pid file would keep only one of them."""
    _private_dir(storage)
    with (storage / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _private_dir(path: Path) -> None:
    """The registry's state (blobs, config, log, htpasswd) is readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def start(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    storage: Path = DEFAULT_STATE_DIR,
    htpasswd: tuple[str, str] | None = None,
    dry_run: bool = False,
    *,
    use_image: bool | None = None,
    timeout: float = 15.0,
) -> RegistryProcess:
    """Start a local registry on ``host:port`` and wait until ``/v2/`` answers.

    Idempotent: if a registry already answers there, say so and return it (kind
    ``"existing"``, or the recorded kind if this module started it). ``storage`` is the state
    directory (blobs in ``storage/data``; config, log, pid and htpasswd files in
    ``storage/run-PORT``). ``htpasswd=(user, password)`` turns on basic auth (bcrypt).
    ``use_image``: True = only the ``registry:2`` container, False = only Debian's binary,
    None = the image if the engine has it (or can pull it), else the binary.
    ``dry_run`` prints what would run and starts nothing. ``port=0``: the OS assigns a free
    port and the registry keeps it (no probe-then-bind race); Debian's binary only, which
    logs the port it listens on; the returned :class:`RegistryProcess` has the real port and
    ``storage/run-PORT`` points to its run directory, so :func:`stop` finds it by that port.

    Raises RegistryError: binary/image missing, port used by something that is not a
    registry, or the registry not answering within ``timeout`` seconds.
    """
    storage = Path(storage).expanduser()
    if dry_run:
        return _start(host, port, storage, htpasswd, dry_run, use_image, timeout)
    with _locked(storage):
        return _start(host, port, storage, htpasswd, dry_run, use_image, timeout)


def _start(
    host: str,
    port: int,
    storage: Path,
    htpasswd: tuple[str, str] | None,
    dry_run: bool,
    use_image: bool | None,
    timeout: float,
) -> RegistryProcess:
    url = _url(host, port)
    run_dir = _run_dir(storage, port)
    auto_port = port == 0

    if auto_port:
        if use_image:
            raise RegistryError("port 0 (the OS assigns one) needs Debian's binary: give a port")
        use_image = False
    else:
        status = probe(url)
        if status in (200, 401):
            print(f"local registry: already up at {url} (/v2/ -> {status})")
            return _recorded(url, host, port, run_dir, auth=status == 401)
        if status is not None or _port_taken(host, port):
            raise RegistryError(
                f"port {port} on {host} is used by something that is not a registry "
                f"(/v2/ -> {abs(status) if status else 'no HTTP answer'}): pick another port"
            )

    docker = _docker_client()
    if use_image is None:
        use_image = docker is not None and _engine_has_image(
            docker, REGISTRY_IMAGE, pull=not dry_run
        )
    elif use_image and (
        docker is None or not _engine_has_image(docker, REGISTRY_IMAGE, pull=not dry_run)
    ):
        raise RegistryError(
            f"image {REGISTRY_IMAGE} not available (no Docker Hub?): use Debian's binary "
            f"instead ({INSTALL_HINT})"
        )
    if not use_image and not os.access(REGISTRY_BINARY, os.X_OK):
        raise RegistryError(f"{REGISTRY_BINARY} missing: {INSTALL_HINT}")

    if dry_run:
        what = f"{REGISTRY_IMAGE} container" if use_image else REGISTRY_BINARY
        print(f"[dry-run] would start {what} on {url} (data: {storage / 'data'})")
        return RegistryProcess(url, host, port, "dry-run", run_dir, auth=htpasswd is not None)

    data_dir = storage / "data"
    _private_dir(data_dir)
    if auto_port:  # named once the port is known (see _adopt_port)
        run_dir = Path(tempfile.mkdtemp(prefix="run-auto-", dir=storage))
    _private_dir(run_dir)
    htpasswd_file = run_dir / "htpasswd" if htpasswd else None
    if htpasswd_file is not None and htpasswd is not None:
        _make_htpasswd(htpasswd_file, *htpasswd)
    elif (run_dir / "htpasswd").exists():
        (run_dir / "htpasswd").unlink()
    log_file = run_dir / "registry.log"
    for stale in ("pid", "container-id"):
        (run_dir / stale).unlink(missing_ok=True)

    if use_image:
        assert docker is not None
        reg = _start_container(docker, host, port, data_dir, htpasswd_file, run_dir)
    else:
        config = run_dir / "config.yml"
        config.write_text(_config_yaml(host, port, data_dir, htpasswd_file))
        config.chmod(0o600)
        log_file.touch(mode=0o600)
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (run_dir / "pid").write_text(f"{proc.pid}\n")
        reg = RegistryProcess(
            url,
            host,
            port,
            "binary",
            run_dir,
            pid=proc.pid,
            auth=htpasswd is not None,
            log_file=log_file,
        )

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reg.port == 0:
            reg = _adopt_port(reg, storage)
        if reg.port and is_up(reg.url):
            print(f"local registry: started ({reg.kind}) at {reg.url}")
            return reg
        if reg.pid is not None and not _pid_alive(reg.pid):
            break
        time.sleep(0.1)
    tail = _tail(log_file)
    if reg.port == 0 and reg.pid is not None:  # not yet linked as run-PORT: stop it by pid
        _terminate(reg.pid, timeout=10.0)
    else:
        stop(port=reg.port, state_dir=storage)
    raise RegistryError(
        f"registry on {reg.url} did not come up within {timeout:.0f} s; see {log_file}"
        + (f": {tail}" if tail else "")
    )


def _adopt_port(reg: RegistryProcess, storage: Path) -> RegistryProcess:
    """The port the OS gave a registry started on port 0, read from its log
    (``listening on HOST:PORT``); ``storage/run-PORT`` then points to its run directory."""
    if reg.log_file is None:
        return reg
    found = re.search(rf"listening on {re.escape(reg.host)}:(\d+)", _tail(reg.log_file, 50))
    if found is None:
        return reg
    port = int(found.group(1))
    link = _run_dir(storage, port)
    # A run-PORT left by a registry that is gone: the OS would not reuse a port still held.
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(reg.run_dir.name)
    return dataclasses.replace(reg, url=_url(reg.host, port), port=port)


def _start_container(
    docker: str, host: str, port: int, data_dir: Path, htpasswd_file: Path | None, run_dir: Path
) -> RegistryProcess:
    args = [
        docker,
        "run",
        "-d",
        "--rm",
        "--name",
        f"celestial-registry-{port}",
        "-p",
        f"{host}:{port}:5000",
        "-v",
        f"{data_dir}:/var/lib/registry",
    ]
    if htpasswd_file is not None:
        args += [
            "-v",
            f"{htpasswd_file}:/auth/htpasswd:ro",
            "-e",
            "REGISTRY_AUTH=htpasswd",
            "-e",
            "REGISTRY_AUTH_HTPASSWD_REALM=celestial-bodies",
            "-e",
            "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd",
        ]
    proc = subprocess.run([*args, REGISTRY_IMAGE], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RegistryError(f"docker run {REGISTRY_IMAGE} failed: {proc.stderr.strip()}")
    cid = proc.stdout.strip()
    (run_dir / "container-id").write_text(cid + "\n")
    return RegistryProcess(
        _url(host, port),
        host,
        port,
        "container",
        run_dir,
        container_id=cid,
        auth=htpasswd_file is not None,
    )


def _recorded(url: str, host: str, port: int, run_dir: Path, auth: bool) -> RegistryProcess:
    pid_file, cid_file = run_dir / "pid", run_dir / "container-id"
    if pid_file.exists():
        pid = int(pid_file.read_text().strip())
        if _pid_alive(pid):
            return RegistryProcess(
                url,
                host,
                port,
                "binary",
                run_dir,
                pid=pid,
                auth=auth,
                log_file=run_dir / "registry.log",
            )
    if cid_file.exists():
        return RegistryProcess(
            url,
            host,
            port,
            "container",
            run_dir,
            container_id=cid_file.read_text().strip(),
            auth=auth,
        )
    return RegistryProcess(url, host, port, "existing", run_dir, auth=auth)


def _tail(path: Path, n: int = 1) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def stop(
    port: int = DEFAULT_PORT,
    state_dir: Path = DEFAULT_STATE_DIR,
    dry_run: bool = False,
    timeout: float = 10.0,
) -> bool:
    """Stop the registry that :func:`start` started on ``port`` (found via its pid/container
    file in ``state_dir/run-PORT``). Leaves anything else alone. Returns True if it stopped
    something, False if there was nothing of ours to stop. Data are kept.
    """
    state_dir = Path(state_dir).expanduser()
    if dry_run or not state_dir.is_dir():
        return _stop(port, state_dir, dry_run, timeout)
    with _locked(state_dir):
        return _stop(port, state_dir, dry_run, timeout)


def _stop(port: int, state_dir: Path, dry_run: bool, timeout: float) -> bool:
    run_dir = _run_dir(state_dir, port)
    pid_file, cid_file = run_dir / "pid", run_dir / "container-id"
    stopped = False
    if pid_file.exists():
        pid = int(pid_file.read_text().strip() or 0)
        if pid > 0 and _pid_alive(pid) and _is_registry_process(pid):
            if dry_run:
                print(f"[dry-run] would stop local registry pid {pid}")
                return True
            _terminate(pid, timeout)
            stopped = True
        pid_file.unlink(missing_ok=True)
    if cid_file.exists():
        cid = cid_file.read_text().strip()
        docker = _docker_client()
        if cid and docker:
            if dry_run:
                print(f"[dry-run] would remove registry container {cid[:12]}")
                return True
            subprocess.run([docker, "rm", "-f", cid], capture_output=True, check=False)
            stopped = True
        cid_file.unlink(missing_ok=True)
    if stopped:
        print(f"local registry: stopped (port {port})")
    return stopped


def _terminate(pid: int, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _is_registry_process(pid: int) -> bool:
    """Guard against a recycled pid: the process must be the registry binary."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    exe = os.path.basename(cmdline[0].decode(errors="replace")) if cmdline else ""
    return exe == os.path.basename(REGISTRY_BINARY)


# -- the suite's view: the embedded registry of the settings -----------------------------------


def url(registry: LocalRegistry) -> str:
    return _url(registry.host, registry.port)


def ensure_running(runner: Runner, registry: LocalRegistry) -> RegistryProcess:
    """Start the embedded registry of the settings unless it is already up.

    It has no TLS and, by default, no password: it listens on loopback only. What answers
    on its port must be the registry this suite started (recorded in its state directory),
    not another service that happens to speak the registry API there.
    """
    if not is_loopback(registry.host):
        raise RegistryError(
            f"suite.local_registry.host {registry.host!r} is not a loopback address: the "
            "embedded registry (no TLS, no password) serves this machine only; use 127.0.0.1, "
            "or a real registry for other machines (CONTAINER_REGISTRY_HOST)"
        )
    found = start(registry.host, registry.port, registry.storage, dry_run=runner.dry)
    if found.kind == "existing":
        raise RegistryError(
            f"a registry this suite did not start answers on {found.address}: to publish "
            f"to it, set CONTAINER_REGISTRY_HOST={found.address}; otherwise change "
            "suite.local_registry.port in invoke.yaml"
        )
    return found


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: an address no other machine can reach."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def stop_embedded(runner: Runner, registry: LocalRegistry) -> bool:
    """Stop the embedded registry if this suite started it (its data are kept)."""
    return stop(registry.port, registry.storage, dry_run=runner.dry)
