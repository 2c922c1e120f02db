"""Start and stop the project's embedded local image registry (CNCF Distribution, API v2).

The quick start publishes to it when no registry is configured: ``invoke check-published`` and
``invoke registry`` call :func:`ensure_running`, ``invoke registry --stop`` calls :func:`stop`.
Its address and state directory are settings (``suite.local_registry`` in invoke.yaml).
Two ways to run it, chosen by :func:`start`:

* the image of ``suite.local_registry.image`` (default ``registry:2``), when the Docker engine
  already has it, as a container publishing ``host:port``: it is never pulled here (without
  Docker Hub a pull hangs until its timeout), ``docker pull`` it once to use it;
* otherwise Debian's ``docker-registry`` binary (package ``docker-registry``, Distribution
  2.8) as a background process with a config file generated in the state directory.

Port 0 (``suite.local_registry.port: 0``) lets the OS or the engine choose a free port and
keep it: the binary binds ``host:0`` and logs the port it got, the container publishes
``host::5000`` and ``docker port`` tells; the port in use is recorded in
``<storage>/run-0/port``, where :func:`cicd.settings.recorded_port` (the settings' address) reads
it back. No port is probed, released and then bound by someone else.

It has no TLS, so it listens on loopback only; with ``suite.local_registry.auth`` it asks for
the configured registry user and password (basic auth, a bcrypt htpasswd file). Its data live
outside git's view: ``<storage>/data`` holds the blobs, ``<storage>/run-<port>/`` the config,
log and pid (or container id) file by which :func:`stop` finds what the suite started, and
stops only that.
Commands go through the :class:`~cicd.shell.Runner` (shown; a dry run only shows what it
would start or stop); ``/v2/`` is probed through :class:`~cicd.registry.RegistryClient`'s HTTP
layer. Errors the user can fix raise :class:`RegistryError` with a line that says what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cicd.errors import CommandError, RegistryError, SuiteError
from cicd.registry import Credentials, RegistryClient, scheme
from cicd.retry import RetryPolicy
from cicd.settings import AUTO, recorded_port
from cicd.shell import Runner, interruptions_deferred

if TYPE_CHECKING:
    from cicd.context import Run
    from cicd.docker import Client

REGISTRY_BINARY = "/usr/bin/docker-registry"
REGISTRY_IMAGE = "registry:2"
INSTALL_HINT = "install docker-registry (apt-get install docker-registry) or run scripts/bootstrap"
START_TIMEOUT = 15.0  # seconds for a started registry to answer /v2/
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL of the binary
DOCKER_TIMEOUT = 30.0  # deadline of `docker image inspect`: a hung engine means the binary
# A probe asks once, briefly: the start loop polls every 0.1 s, and a port where nothing
# listens must answer "nothing" at once, not after the client's retries.
PROBE_TIMEOUT = 2.0
PROBE_POLICY = RetryPolicy(attempts=1)


# The docker client, asked for only when the image is run or removed (the binary needs none).
DockerChoice = Callable[[], "Client | None"]


@dataclass(frozen=True)
class RegistryProcess:
    """What :func:`start` found or started.

    ``kind`` is ``"binary"`` (Debian's docker-registry process), ``"container"`` (registry:2),
    ``"existing"`` (something already answered; not ours, :func:`stop` leaves it alone) or
    ``"dry-run"``. ``pid`` is set for ``binary``, ``container_id`` for ``container``.
    """

    host: str
    port: int
    kind: str
    run_dir: Path
    pid: int | None = None
    container_id: str | None = None

    @property
    def address(self) -> str:
        """``host:port``, the registry part of an image reference."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return _url(self.host, self.port)


# -- the suite's view: the embedded registry of the settings -----------------------------------


def ensure_running(run: Run) -> RegistryProcess:
    """Start the embedded registry of the settings unless it is already up.

    It has no TLS and no password: it listens on loopback only. What answers on its port
    must be the registry this suite started (recorded in its state directory), not another
    service that happens to speak the registry API there.
    """
    registry = run.settings.local_registry
    # No TLS: loopback only, the addresses the registry client speaks plain HTTP to.
    if scheme(registry.host) != "http":
        raise RegistryError(
            f"suite.local_registry.host {registry.host!r} is not a loopback address: the "
            "embedded registry (no TLS, no password) serves this machine only; use 127.0.0.1, "
            "or a real registry for other machines (CONTAINER_REGISTRY_HOST)"
        )
    credentials = run.credentials if registry.auth else None
    if registry.auth and credentials is None:
        raise RegistryError(
            "suite.local_registry.auth is on but no user is set: set CONTAINER_REGISTRY_USERNAME "
            "and CONTAINER_REGISTRY_PASSWORD (the embedded registry's user)"
        )
    found = start(
        run.runner, registry.host, registry.port, registry.storage,
        docker=lambda: _docker(run), credentials=credentials, image=registry.image,
    )  # fmt: skip
    if found.kind == "existing":
        raise RegistryError(
            f"a registry this suite did not start answers on {found.address}: to publish "
            f"to it, set CONTAINER_REGISTRY_HOST={found.address}; otherwise change "
            "suite.local_registry.port in invoke.yaml"
        )
    if not run.dry:
        _check_auth(found, asked=registry.auth, has_credentials=run.credentials is not None)
    return found


def _check_auth(found: RegistryProcess, asked: bool, has_credentials: bool) -> None:
    """The running registry asks for a password exactly when the settings say so, or at
    least when the user can give one (a registry started earlier with other settings)."""
    status = probe(found.url)
    again = "stop it (`invoke registry --stop`) and publish again"
    if asked and status == 200:
        raise RegistryError(
            f"the embedded registry on {found.address} runs without a password, although "
            f"suite.local_registry.auth is on (it was started before): {again}"
        )
    if status == 401 and not has_credentials:
        raise RegistryError(
            f"the embedded registry on {found.address} asks for a password: set "
            f"CONTAINER_REGISTRY_USERNAME and CONTAINER_REGISTRY_PASSWORD, or {again}"
        )


def stop(run: Run) -> bool:
    """Stop the embedded registry if this suite started it (its data are kept)."""
    registry = run.settings.local_registry
    return stop_port(run.runner, registry.port, registry.storage, docker=lambda: _docker(run))


def is_up(run: Run) -> bool:
    """True when a registry answers on the embedded registry's address."""
    registry = run.settings.local_registry
    port = recorded_port(registry.storage, registry.port)
    return port != AUTO and answers(_url(registry.host, port))


def logged_port(log: Path, host: str, timeout: float, alive: Callable[[], bool]) -> int:
    """The port the binary, told port 0, got from the OS: its log says ``listening on
    HOST:PORT``. RegistryError after ``timeout`` seconds or once ``alive()`` is False."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(rf"listening on {re.escape(host)}:(\d+)")
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return int(found.group(1))
        if not alive():
            break
        time.sleep(0.05)
    raise RegistryError(f"the registry logged no port within {timeout:.0f} s: see {log}")


def _docker(run: Run) -> Client | None:
    """The run's docker client when an engine answers (in a dry run: when there is a client)."""
    try:
        return run.docker
    except SuiteError:
        return None  # no Docker here: Debian's binary serves alone


# -- a registry on a host and port (tests/support/registry_process.py uses these too) ----------


def probe(url: str) -> int | None:
    """HTTP status of ``GET {url}/v2/``, or None if nothing answers.

    Anything that answers but is not a registry (no ``Docker-Distribution-Api-Version`` header
    on a 200/401) gives the status negated, e.g. ``-404``, so callers can tell them apart.
    """
    client = RegistryClient(urlsplit(url).netloc, timeout=PROBE_TIMEOUT, policy=PROBE_POLICY)
    try:
        response = client.http.send("GET", client.base + "/v2/")
    except SuiteError:  # refused, timed out, or not HTTP
        return None
    finally:
        client.http.close()
    speaks_api = response.headers.get("Docker-Distribution-Api-Version")
    return response.status if response.status in (200, 401) and speaks_api else -response.status


def answers(url: str) -> bool:
    """True when a registry answers ``/v2/`` with 200 (open) or 401 (auth needed)."""
    return probe(url) in (200, 401)


def wait_until_up(
    url: str, timeout: float = START_TIMEOUT, alive: Callable[[], bool] = lambda: True
) -> None:
    """Poll ``{url}/v2/`` until a registry answers; RegistryError after ``timeout`` seconds,
    or as soon as ``alive()`` says the process that should answer is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if answers(url):
            return
        time.sleep(0.1)
    raise RegistryError(f"registry at {url} did not answer /v2/ within {timeout:.0f} s")


def _port_taken(host: str, port: int) -> bool:
    """Something listens there that gave no HTTP answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def start(
    runner: Runner,
    host: str,
    port: int,
    storage: Path,
    docker: DockerChoice | None = None,
    credentials: Credentials | None = None,
    image: str = REGISTRY_IMAGE,
) -> RegistryProcess:
    """Start a registry on ``host:port`` and wait until ``/v2/`` answers.

    Idempotent: if a registry already answers there, say so and return it (kind
    ``"existing"``, or the recorded kind if the suite started it). ``docker`` gives the docker
    client to run ``image`` with, if any; without one, or when the engine lacks the image
    (it is never pulled: no network call), Debian's binary. ``credentials``: basic auth for
    that user (an htpasswd file; the binary serves then, whose config it is). Raises
    RegistryError: binary missing, port used by something that is not a registry, or the
    registry not answering within :data:`START_TIMEOUT` seconds.
    """
    storage = Path(storage).expanduser()
    run_dir = storage / f"run-{port}"
    with _locked(storage, skip=runner.dry):  # a dry run writes nothing, not even the lock file
        if port == AUTO:
            found = _recorded_auto(runner, host, storage)
            if found is not None:
                return found
        url = _url(host, port)
        status = probe(url) if port != AUTO else None
        if status in (200, 401):
            runner.echo(f"local registry: already up at {url} (/v2/ -> {status})")
            return _recorded(host, port, run_dir)
        if port != AUTO and (status is not None or _port_taken(host, port)):
            raise RegistryError(
                f"port {port} on {host} is used by something that is not a registry "
                f"(/v2/ -> {abs(status) if status else 'no HTTP answer'}): pick another port"
            )
        client = docker() if docker and credentials is None else None
        use_image = client is not None and _engine_has_image(runner, client, image)
        if client is not None and not use_image:
            runner.echo(
                f"local registry: the Docker engine has no {image} image (never pulled here; "
                f"`docker pull {image}` to use it): Debian's {REGISTRY_BINARY} serves"
            )
        if not use_image and not os.access(REGISTRY_BINARY, os.X_OK):
            raise RegistryError(f"{REGISTRY_BINARY} missing: {INSTALL_HINT}")
        if runner.dry:
            what = f"{image} container" if use_image else REGISTRY_BINARY
            where = f"http://{host}:<a port the OS assigns>" if port == AUTO else url
            runner.echo(f"[dry-run] would start {what} on {where} (data: {storage / 'data'})")
            return RegistryProcess(host, port, "dry-run", run_dir)
        return _launch(
            runner, client if use_image else None, host, port, storage, credentials, image
        )


def _recorded_auto(runner: Runner, host: str, storage: Path) -> RegistryProcess | None:
    """The registry an earlier start with port 0 left running, if it still answers and is
    ours (its pid or container recorded); None means: start one."""
    run_dir = storage / f"run-{AUTO}"
    port = recorded_port(storage, AUTO)
    if port == AUTO:
        return None
    status = probe(_url(host, port))
    found = _recorded(host, port, run_dir)
    if status in (200, 401) and found.kind != "existing":
        runner.echo(f"local registry: already up at {found.url} (/v2/ -> {status})")
        return found
    # Gone (or its port now someone else's): forget it; a new start gets a new port.
    if not runner.dry:
        for stale in ("port", "pid", "container-id"):
            (run_dir / stale).unlink(missing_ok=True)
    return None


def _launch(
    runner: Runner,
    image_client: Client | None,
    host: str,
    port: int,
    storage: Path,
    credentials: Credentials | None,
    image: str = REGISTRY_IMAGE,
) -> RegistryProcess:
    """Start the container (with ``image_client``) or the binary, and wait for its ``/v2/``."""
    run_dir, data_dir = storage / f"run-{port}", storage / "data"
    url = _url(host, port)
    private_dir(data_dir)
    private_dir(run_dir)
    for stale in ("pid", "container-id", "port"):
        (run_dir / stale).unlink(missing_ok=True)
    log_file = run_dir / "registry.log"
    if image_client is not None:
        reg = _start_container(runner, image_client, image, host, port, data_dir, run_dir)
    else:
        config = binary_config(host, port, data_dir)
        if credentials is not None:
            htpasswd = run_dir / "htpasswd"
            write_htpasswd(runner, htpasswd, credentials)
            config["auth"] = {"htpasswd": {"realm": "celestial-bodies", "path": str(htpasswd)}}
        if port == AUTO:
            log_file.unlink(missing_ok=True)  # the port is read from this run's log
        pid = serve(runner, run_dir, config)
        reg = RegistryProcess(host, port, "binary", run_dir, pid=pid)
    try:
        if port == AUTO:  # the port the OS or the engine gave, recorded for the next calls
            reg = dataclasses.replace(reg, port=_assigned_port(runner, reg, image_client, log_file))
            (run_dir / "port").write_text(f"{reg.port}\n")
            url = reg.url
        wait_until_up(url, START_TIMEOUT, alive=lambda: reg.pid is None or _pid_alive(reg.pid))
    except RegistryError:
        # The binary's last words (the container logs elsewhere).
        tail = log_file.read_text(errors="replace").splitlines()[-1:] if log_file.exists() else []
        _stop(runner, port, storage, lambda: image_client)  # under the lock start holds
        raise RegistryError(
            f"registry on {url} did not come up within {START_TIMEOUT:.0f} s; see {log_file}"
            + "".join(f": {line}" for line in tail)
        ) from None
    runner.echo(f"local registry: started ({reg.kind}) at {url}")
    return reg


def _assigned_port(
    runner: Runner, reg: RegistryProcess, client: Client | None, log_file: Path
) -> int:
    """The port a registry started on port 0 got: from the binary's log, or the engine."""
    if (pid := reg.pid) is not None:
        return logged_port(log_file, reg.host, START_TIMEOUT, alive=lambda: _pid_alive(pid))
    assert client is not None and reg.container_id is not None
    try:
        output = runner.run([client.path, "port", reg.container_id, "5000/tcp"], quiet=True)
    except CommandError as error:
        raise RegistryError(f"docker port failed: {error.output.strip()}") from None
    for line in output.splitlines():  # e.g. 127.0.0.1:49153
        host, _, port = line.strip().rpartition(":")
        if host == reg.host and port.isdigit():
            return int(port)
    raise RegistryError(f"the registry container publishes no port on {reg.host}: {output!r}")


def binary_config(host: str, port: int, data_dir: Path) -> dict[str, Any]:
    """The configuration of Debian's binary serving ``data_dir`` on ``host:port``."""
    return {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(data_dir)}, "delete": {"enabled": True}},
        "http": {"addr": f"{host}:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }


def write_htpasswd(runner: Runner, path: Path, credentials: Credentials) -> None:
    """A bcrypt htpasswd file (0600); the password goes to ``htpasswd`` through stdin only."""
    user = credentials.username
    if not user or ":" in user:
        raise RegistryError(f"registry user {user!r} cannot be an htpasswd user: no ':' in it")
    runner.add_secret(credentials.password)
    # -n: print the line, -i: read the password from stdin, -B: bcrypt.
    output = runner.run(["htpasswd", "-niB", user], stdin=credentials.password + "\n", quiet=True)
    line = next(line for line in output.splitlines() if line.startswith(f"{user}:"))
    path.write_text(line + "\n")
    path.chmod(0o600)


def serve(runner: Runner, run_dir: Path, config: dict[str, Any]) -> int:
    """Start Debian's binary on ``config`` in the background: its pid, recorded in ``run_dir``
    with its config and log."""
    config_file, log_file = run_dir / "config.yml", run_dir / "registry.log"
    config_file.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML: safe quoting
    config_file.chmod(0o600)
    log_file.touch(mode=0o600)
    # Ctrl-C between the start and the pid file would leave a registry that stop cannot find.
    with interruptions_deferred():
        pid = runner.spawn([REGISTRY_BINARY, "serve", str(config_file)], log=log_file)
        (run_dir / "pid").write_text(f"{pid}\n")
    return pid


def _engine_has_image(runner: Runner, docker: Client, image: str = REGISTRY_IMAGE) -> bool:
    """The engine already has ``image``. Never pulls: an implicit pull goes to Docker Hub,
    which may be unreachable (a 30 s hang at every start); a missing engine or image only
    means the binary serves instead. Silent, with a short deadline."""
    quick = dataclasses.replace(runner, command_timeout=DOCKER_TIMEOUT)
    return quick.query([docker.path, "image", "inspect", "--format", "{{.Id}}", image]) is not None


def _start_container(
    runner: Runner, docker: Client, image: str, host: str, port: int, data_dir: Path, run_dir: Path
) -> RegistryProcess:
    """``image`` serves the registry API on port 5000, its data in /var/lib/registry (as
    ``registry:2`` does)."""
    # Port 0: the engine chooses (`-p host::5000`) and keeps it; no fixed name, which two
    # state directories with port 0 would both want.
    published = f"{host}:{port or ''}:5000"
    volume = f"{data_dir}:/var/lib/registry"
    named = ["--name", f"celestial-registry-{port}"] if port != AUTO else []
    command = [docker.path, "run", "-d", "--rm", *named, "-p", published, "-v", volume]
    try:
        output = runner.run([*command, image])
    except CommandError as error:
        raise RegistryError(f"docker run {image} failed: {error.output.strip()}") from None
    cid = output.strip().splitlines()[-1]
    (run_dir / "container-id").write_text(cid + "\n")
    return RegistryProcess(host, port, "container", run_dir, container_id=cid)


def _recorded(host: str, port: int, run_dir: Path) -> RegistryProcess:
    """The registry answering on ``port``, as the suite recorded it in ``run_dir`` if it did."""
    pid, cid_file = _our_pid(run_dir), run_dir / "container-id"
    if pid is not None:
        return RegistryProcess(host, port, "binary", run_dir, pid=pid)
    if cid_file.exists():
        cid = cid_file.read_text().strip()
        return RegistryProcess(host, port, "container", run_dir, container_id=cid)
    return RegistryProcess(host, port, "existing", run_dir)


def stop_port(runner: Runner, port: int, storage: Path, docker: DockerChoice | None = None) -> bool:
    """Stop the registry the suite started on ``port`` (found by its pid or container id
    file in ``storage/run-PORT``); leave anything else alone. True if it stopped something.
    ``docker`` gives the client to remove a container with. Data are kept."""
    storage = Path(storage).expanduser()
    # No lock in a dry run (nothing is written) or without a state directory (nothing to stop).
    with _locked(storage, skip=runner.dry or not storage.is_dir()):
        return _stop(runner, port, storage, docker)


def _stop(runner: Runner, port: int, storage: Path, docker: DockerChoice | None) -> bool:
    run_dir = storage / f"run-{port}"
    pid_file, cid_file = run_dir / "pid", run_dir / "container-id"
    stopped = False
    pid = _our_pid(run_dir)
    if pid is not None:
        if runner.dry:
            runner.echo(f"[dry-run] would stop local registry pid {pid}")
            return True
        _terminate(pid)
        stopped = True
    if not runner.dry:
        pid_file.unlink(missing_ok=True)
    if cid_file.exists():
        cid = cid_file.read_text().strip()
        client = docker() if cid and docker else None
        if client is not None:
            if runner.dry:
                runner.echo(f"[dry-run] would remove registry container {cid[:12]}")
                return True
            runner.run([client.path, "rm", "-f", cid], check=False)
            stopped = True
        if not runner.dry:
            cid_file.unlink(missing_ok=True)
    if port == AUTO and not runner.dry:
        shown = recorded_port(storage, port)
        (run_dir / "port").unlink(missing_ok=True)
    else:
        shown = port
    if stopped:
        runner.echo(f"local registry: stopped (port {shown})")
    return stopped


def _terminate(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _locked(storage: Path, skip: bool = False) -> Iterator[None]:
    """One start or stop at a time per state directory: two concurrent starts would both
    spawn a registry, and the pid file would keep only one of them."""
    if skip:
        yield
        return
    private_dir(storage)
    with (storage / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def private_dir(path: Path) -> None:
    """The registry's state (blobs, config, log) is readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _our_pid(run_dir: Path) -> int | None:
    """The pid of the registry process the suite started there, if it still runs."""
    pid_file = run_dir / "pid"
    pid = int(pid_file.read_text().strip() or 0) if pid_file.exists() else 0
    return pid if pid > 0 and _pid_alive(pid) and _is_registry_process(pid) else None


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


def _is_registry_process(pid: int) -> bool:
    """Guard against a recycled pid: the process must be the registry binary."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    exe = os.path.basename(cmdline[0].decode(errors="replace")) if cmdline else ""
    return exe == os.path.basename(REGISTRY_BINARY)
