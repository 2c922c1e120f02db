"""Real projects for the tests: a clone of the working tree, a registry with a password.

The API, small on purpose (fixtures in ``tests/conftest.py`` wrap it):

* :func:`clone_working_tree` -- a git clone of this repository *including* the working tree's
  uncommitted and untracked (not ignored) changes, committed in the clone: a local run tests
  what is being developed, not the last commit.
* :class:`Project` -- such a clone with its own HOME, BentoML store and DVC remote; ``run``,
  ``invoke``, ``nox`` run commands in it and keep every output (for the secret scan).
* :class:`Registry` / :func:`start_registry` -- a Distribution registry with htpasswd auth on a
  port the OS assigns; ``tags(image)`` and ``client()`` read it through its API.
* :func:`run_image` -- run an image on a port Docker assigns; :func:`post_image` asks it.
* :func:`refused_port` -- a reserved port where nothing answers; :func:`listening_ports` --
  the ports a server started on port 0 got from the OS.
* :data:`SENTINEL` -- the per-run registry password that must appear nowhere.
* :func:`train_once` -- one `nox -s train` of the working tree per test run, its outputs in a
  DVC remote that other projects start from (:class:`Trained`): training is proven once, and
  every other test pulls in seconds what it would otherwise retrain.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cicd import signing
from cicd.docker import choose_client
from cicd.registry import Credentials, RegistryClient
from tests.support import registry_process, runs

ROOT = Path(__file__).resolve().parents[2]
USER = "ci-bot"
# The registry password, made per run so that it is in no file unless the suite leaks it.
SENTINEL = "sentinel-" + secrets.token_hex(12)
# The signing key (SIGNING_KEY) of every project with a registry, made per run like the
# password; its public half is SIGNING_PUBLIC_KEY (tests pass it to `invoke verify --key`).
SIGNING_KEY = signing.generate_private_pem()
SIGNING_PUBLIC_KEY = signing.public_pem_of(SIGNING_KEY)
# What the secret scan looks for: the PEM's body line is the key (the armour is common text).
SIGNING_KEY_SECRET = max(SIGNING_KEY.splitlines(), key=len)
IMAGE = "celestial-bodies-classifier"
SAMPLE = Path("data/raw/Earth/Earth_1.jpg")  # what `invoke smoke` posts (invoke.yaml)
# CI variables of the machine running the tests must not leak into a project's steps.
CI_VARIABLES = (
    "CI", "GITHUB_ACTIONS", "GITLAB_CI", "GITHUB_SHA", "GITHUB_REF", "GITHUB_HEAD_REF",
    "GITHUB_EVENT_NAME", "CI_COMMIT_SHA", "CI_COMMIT_BRANCH", "CI_PIPELINE_SOURCE",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
    "CONTAINER_REGISTRY_HOST", "CONTAINER_REGISTRY_USERNAME", "CONTAINER_REGISTRY_PASSWORD",
    "GCP_CONTAINER_REGISTRY_HOST", "GOOGLE_SERVICE_ACCOUNT_KEY", "IMAGE_NAME", "SIGNING_KEY",
    "VIRTUAL_ENV", "NOX_CURRENT_SESSION",
)  # fmt: skip


def _git(root: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return done.stdout


def clone_working_tree(dest: Path, source: Path = ROOT) -> Path:
    """Clone ``source`` into ``dest`` with its uncommitted and untracked changes committed.

    Tracked changes (staged or not, deletions included) and untracked files that git does
    not ignore are copied over and committed with a fixed author and the date of HEAD, so
    two clones of the same tree have the same commit (and so the same image tag). A clean
    tree gives a plain clone of HEAD.
    """
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    changed = _git(source, "diff", "--name-only", "-z", "HEAD").split("\0")
    changed += _git(source, "ls-files", "-z", "--others", "--exclude-standard").split("\0")
    changed = sorted({name for name in changed if name})
    if not changed:
        return dest
    for name in changed:
        origin, target = source / name, dest / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        if origin.is_symlink() or origin.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target, follow_symlinks=False)
    when = _git(source, "show", "-s", "--format=%cI", "HEAD").strip()
    identity = {
        "GIT_AUTHOR_NAME": "tests", "GIT_AUTHOR_EMAIL": "tests@localhost",
        "GIT_COMMITTER_NAME": "tests", "GIT_COMMITTER_EMAIL": "tests@localhost",
        "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when,
    }  # fmt: skip
    _git(dest, "add", "-A", "--", *changed)
    _git(dest, "commit", "-q", "--no-verify", "-m", "the working tree under test", env=identity)
    return dest


@dataclass(frozen=True)
class Registry:
    """A running Distribution registry with htpasswd auth (user :data:`USER`)."""

    address: str  # host:port, the registry part of an image reference
    state: Path  # its state directory; the blobs are under ``state / "data"``
    user: str = USER
    password: str = field(default=SENTINEL, repr=False)

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def data(self) -> Path:
        return self.state / "data"

    def requests(self) -> list[str]:
        """The HTTP requests the registry has served so far (its access-log lines)."""
        log = self.state / f"run-{self.port}" / "registry.log"
        return [line for line in log.read_text().splitlines() if '] "' in line]

    def client(self) -> RegistryClient:
        return RegistryClient(self.address, Credentials(self.user, self.password))

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """``method path`` on the registry's API with the credentials: status, headers, body."""
        request = urllib.request.Request(
            f"http://{self.address}{path}", data=body, method=method, headers=headers or {}
        )
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def get(self, path: str) -> bytes | None:
        """The body of ``GET path`` on the registry's API; None on 404."""
        status, _, body = self.request("GET", path)
        if status == 404:
            return None
        assert status == 200, f"GET {path}: HTTP {status} {body[:200]!r}"
        return body

    def tags(self, image: str = IMAGE) -> list[str]:
        """The tags of ``image`` in this registry (empty when it has none)."""
        body = self.get(f"/v2/{image}/tags/list")
        return sorted(json.loads(body).get("tags") or []) if body else []

    def repositories(self) -> list[str]:
        return sorted(json.loads(self.get("/v2/_catalog") or b"{}").get("repositories") or [])


def start_registry(
    state: Path, user: str = USER, password: str = SENTINEL, seed: Path | None = None
) -> Registry:
    """Debian's Distribution binary with htpasswd auth, on a port the OS assigns and keeps;
    with ``seed`` (:func:`seed_once`), its storage starts with the seed's layers."""
    if seed is not None:
        seed_storage(seed, state / "data")
    started = registry_process.start(state, (user, password))
    return Registry(started.address, state, user, password)


# The image of the repository rendered from template/ (tests/support/template.py).
TEMPLATE_IMAGE = "iris-demo"
# The repositories a seeded registry has layers for: this project's image and the rendered
# template's (the base image's layers are the same).
SEEDED_REPOSITORIES = (IMAGE, TEMPLATE_IMAGE)
_STORAGE = Path("docker", "registry", "v2")


def seed_storage(seed: Path, data: Path) -> None:
    """Give an unused registry storage ``data`` the layers of the registry storage ``seed``,
    without any manifest or tag: the registry lists no image, and `docker push` finds the
    layers it has pushed before (it asks before it compresses and uploads a layer), as it
    does on a real registry after the last publish. Blobs are hard links (Distribution never
    rewrites a blob: an upload goes to a new file, renamed into place)."""
    shutil.copytree(seed / _STORAGE / "blobs", data / _STORAGE / "blobs", copy_function=os.link)
    layers = seed / _STORAGE / "repositories" / IMAGE / "_layers"
    for repository in SEEDED_REPOSITORIES:
        shutil.copytree(layers, data / _STORAGE / "repositories" / repository / "_layers")


def seed_once(shared: Path, trained: Trained) -> Path:
    """A registry storage holding the layers of this run's trained image, made once per test
    run (under a lock, like :func:`train_once`) by publishing the trained project for real.

    Why: each test module has a registry of its own, and the first push into an empty one
    compressed and uploaded the whole image again (430 MB; 13 s of CPU each time, idle)."""
    from filelock import FileLock

    storage = shared / "seed-registry"
    with FileLock(str(shared / "seed-registry.lock")):
        if not (storage / "data" / _STORAGE / "repositories" / IMAGE / "_layers").is_dir():
            registry = start_registry(storage)
            try:
                base = shared / "seed"
                project = make_project(
                    base, registry, trained.remote_copy(base / "dvc-remote"), source=trained.source
                )
                project.session("publish")
                # Kept under a name of its own when the registry's images go: the Docker
                # engine's build cache is its images' layers, so every later build of this
                # bento reuses them (the same layers, which the seeded registries hold)
                # instead of installing the environment again. Removed when the run ends.
                docker("tag", f"{registry.address}/{IMAGE}:latest", seed_image())
            finally:
                stop_registry(registry)
    return storage / "data"


def seed_image() -> str:
    """The seed's image, in the run's namespace: another run's end leaves it alone."""
    return f"{runs.image('registry-seed')}:latest"


def remove_seed_image() -> None:
    """At the run's end: the seed's image goes (a run on a fresh machine starts without it)."""
    if shutil.which("docker"):
        docker("rmi", seed_image(), check=False)


def stop_registry(registry: Registry) -> None:
    # The images first: the stop forgets the registry (tests/support/runs.py), and a run
    # killed in between leaves nothing the next run's sweep could no longer find.
    remove_images(f"{registry.address}/")
    registry_process.stop(registry.state, registry.port)


@dataclass
class Project:
    """A clone of the working tree with its own DVC remote, BentoML store and HOME.

    Every command's output is appended to ``outputs`` (a list the secret scan may share).
    """

    root: Path
    env: dict[str, str]
    registry: Registry | None
    outputs: list[str] = field(default_factory=list)
    dvc_remote: Path | None = None

    @property
    def home(self) -> Path:
        return Path(self.env["HOME"])

    @property
    def bentoml_home(self) -> Path:
        return Path(self.env["BENTOML_HOME"])

    def run(self, *command: str, env: dict | None = None, check: bool = True, cwd=None):
        done = subprocess.run(
            command, cwd=cwd or self.root, env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        self.outputs.append(done.stdout + done.stderr)
        if check:
            assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def invoke(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "invoke", *args, **kwargs)

    def session(
        self, name: str, *args: str, dry: bool = False, **kwargs
    ) -> subprocess.CompletedProcess:
        """The invoke steps of `nox -s NAME -- ARGS` (noxfile.py) in this test environment:
        the session's exact steps, without making its environment; ``dry``: `invoke --dry`."""
        import noxfile

        steps = noxfile.invoke_arguments(getattr(noxfile, name.upper()), list(args))
        return self.invoke(*(["--dry"] if dry else []), *steps, **kwargs)

    def nox(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "nox", *args, **kwargs)

    def head(self) -> str:
        return self.run("git", "rev-parse", "HEAD").stdout.strip()

    def path(self, relative: str | Path) -> Path:
        return self.root / relative


@dataclass(frozen=True)
class Trained:
    """The one `nox -s train` of a test run, in a fresh clone of the working tree.

    ``source`` is that clone, with what train changed committed (nothing, when this machine
    reproduces the commit); ``remote`` holds every output of every stage (`invoke push-data`).
    A project cloned from ``source`` with a copy of ``remote`` gets the outputs with `dvc pull`
    (or `dvc repro --pull`): the same bits, in seconds instead of a training.
    """

    shared: Path  # the test run's folder, shared by pytest-xdist's workers
    source: Path
    remote: Path
    changes: str  # `git status --porcelain` right after train: empty when it reproduced
    blas: str  # model-blas.json as this machine's train wrote it
    output: str  # what `nox -s train` printed

    def remote_copy(self, dest: Path) -> Path:
        """A project's own DVC remote, seeded with every output (hard links: DVC never
        rewrites an object in place, and a push only adds files)."""
        shutil.copytree(self.remote, dest, copy_function=os.link)
        return dest


def train_once(shared: Path) -> Trained:
    """`nox -s train` in a fresh clone, once per test run: the first caller trains (under a
    lock, so that pytest-xdist's workers wait for it), the others read its record."""
    from filelock import FileLock

    record = shared / "trained.json"
    with FileLock(str(shared / "trained.lock")):
        if not record.exists():
            project = make_project(shared / "trained", None, dvc_remote=shared / "trained-remote")
            done = project.nox("-s", "train")
            project.invoke("push-data")
            changes = project.run("git", "status", "--porcelain").stdout
            if changes:
                # Another CPU's BLAS kernel made other model bits (test_publish.py says so):
                # the clones start from what this machine made, so that their dvc.lock
                # matches the remote and the tests test the suite, not the CPU.
                identity = ("-c", "user.name=tests", "-c", "user.email=tests@localhost")
                project.run("git", *identity, "commit", "-qam", "what `nox -s train` made here")
            trained = {
                "source": str(project.root), "remote": str(project.dvc_remote),
                "changes": changes, "blas": project.path("model-blas.json").read_text(),
                "output": done.stdout + done.stderr,
            }  # fmt: skip
            record.write_text(json.dumps(trained))
    fields = json.loads(record.read_text())
    return Trained(
        shared,
        Path(fields["source"]), Path(fields["remote"]), fields["changes"], fields["blas"],
        fields["output"],
    )  # fmt: skip


def make_project(
    base: Path,
    registry: Registry | None,
    dvc_remote: Path | None = None,
    env: Mapping[str, str] | None = None,
    outputs: list[str] | None = None,
    source: Path = ROOT,
) -> Project:
    """A :class:`Project` in ``base`` (clone, home, bentoml) publishing to ``registry``.

    ``registry=None``: no registry variables, the steps use the embedded one of invoke.yaml.
    ``dvc_remote``: the project's DVC remote (default ``base / "dvc-remote"``, empty).
    ``env``: more variables for every command (e.g. ``INVOKE_SUITE_SMOKE_TIMEOUT``).
    ``source``: the repository to clone (another project's clone gives the same commit).
    """
    root = clone_working_tree(base / "clone", source)
    home = base / "home"
    home.mkdir()
    full = {key: value for key, value in os.environ.items() if key not in CI_VARIABLES}
    full.update({
        "HOME": str(home),
        # keep the machine's package caches: only what the suite writes goes to the fake HOME
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")),
        "BENTOML_HOME": str(base / "bentoml"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "INVOKE_SUITE_VERBOSE": "1",  # the tests read the commands in the output; "0": quiet
    })  # fmt: skip
    if registry is not None:
        full.update({
            "CONTAINER_REGISTRY_HOST": registry.address,
            "CONTAINER_REGISTRY_USERNAME": registry.user,
            "CONTAINER_REGISTRY_PASSWORD": registry.password,
            "SIGNING_KEY": SIGNING_KEY,
        })  # fmt: skip
    full.update(env or {})
    remote = dvc_remote or base / "dvc-remote"
    project = Project(root, full, registry, outputs if outputs is not None else [], remote)
    # What `dvc remote modify --local local url REMOTE` writes (a DVC process costs about a
    # second of CPU, and every test project needs this line).
    (root / ".dvc" / "config.local").write_text(f"['remote \"local\"']\n    url = {remote}\n")
    return project


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port of 127.0.0.1 where connections are refused, reserved while the block runs.

    The socket is bound and never listens: the OS keeps the port ours (nobody else can
    listen there meanwhile, unlike a probe-then-release "free" port) and refuses connections.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def listening_ports(pid: int) -> list[int]:
    """The TCP ports a process tree listens on: for a server told port 0, which binds a port
    the OS assigns and keeps it (no bind-then-release race). A server may listen on more
    than one (BentoML's process manager has control sockets too): ask each."""
    import psutil

    ports = set()
    try:
        root = psutil.Process(pid)
        for process in (root, *root.children(recursive=True)):
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    ports.add(int(connection.laddr.port))
    except psutil.Error:
        pass
    return sorted(ports)


@functools.cache
def docker_client_path() -> str:
    """The docker client that talks to the engine (the one the suite chooses): chosen once,
    as choosing runs the client twice."""
    return choose_client().path


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the docker client; with ``check``, a failure is an assertion naming docker's error."""
    done = subprocess.run(
        [docker_client_path(), *args], capture_output=True, text=True, check=False, timeout=600
    )
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr.strip()}"
    return done


def remove_images(prefix: str) -> None:
    """Remove the images whose reference starts with ``prefix`` (tags and digest-only pulls;
    layers stay): a registry's (``host:port/``), a repository's (``name`` or ``name:``),
    or one tag (``name:tag``)."""
    listed = docker("images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}")
    ours = []
    for line in listed.stdout.splitlines():
        repository, tag, digest = line.split()
        # The tag too: a prefix with a colon never matches a repository name alone.
        if repository.startswith(prefix) or f"{repository}:{tag}".startswith(prefix):
            ours.append(f"{repository}:{tag}" if tag != "<none>" else f"{repository}@{digest}")
    if ours:
        docker("rmi", "--force", *ours, check=False)


def run_image(reference: str, *args: str) -> tuple[str, int]:
    """``docker run -d`` the image on 127.0.0.1 with a port Docker assigns: (id, port)."""
    container = docker(
        "run", "--detach", *runs.label_args(), "--publish", "127.0.0.1::3000", *args, reference
    )
    cid = container.stdout.strip()
    mapped = docker("port", cid, "3000/tcp").stdout.split()[0]
    return cid, int(mapped.rsplit(":", 1)[1])


def wait_ready(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"nothing ready on 127.0.0.1:{port} within {timeout:.0f} s")


def post_image(port: int, image: Path, timeout: float = 90) -> dict:
    """Wait for ``/readyz``, then POST ``image`` to ``/predict`` as multipart: the answer."""
    wait_ready(port, timeout)
    boundary = "testboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"'
            f"\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
