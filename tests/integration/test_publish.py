"""The publish path for real: a Docker engine builds, a registry with htpasswd auth receives.

From a temporary clone of the working tree: `nox -s train`, then `nox -s publish`, as CI
does; then the image pulled back from the registry, and the failure modes. The registry
password is the per-run sentinel; the session's ``leak_scan`` (tests/conftest.py) checks
that it appears nowhere. Needs a Docker engine and Debian's docker-registry (scripts/bootstrap).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

import noxfile
from cicd import local_registry
from cicd.registry import RegistryClient
from cicd.shell import Runner
from cicd.smoke import DEFAULT_TOLERANCE
from tests.support.hostile import bad_requests
from tests.support.project import (
    IMAGE,
    ROOT,
    SAMPLE,
    SIGNING_PUBLIC_KEY,
    Project,
    Registry,
    docker,
    docker_client_path,
    post_image,
    refused_port,
    remove_images,
    run_image,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ARCHIVE = Path("model/celestial_bodies_classifier_model.bentomodel")
# Images the smoke test does not post: the pulled image must agree with the model on them too.
OTHER_SAMPLES = [Path(f"data/raw/{name}.jpg") for name in ("Mars/Mars_1", "Moon/Moon_2")]
# The prediction of POST /predict, in serve.answer (UploadGuard and BentoML's endpoint share it).
PREDICT_LINE = "return 200, classifier.predict(decode_image(data))"


@pytest.fixture(scope="module")
def trained(new_project, registry, training) -> Project:
    """`nox -s train` in a clone of the run's trained project: the session pulls every output
    from the DVC remote (the training itself ran once, in ``training``)."""
    project = new_project("project", registry, trained=training)
    done = project.nox("-s", "train")
    assert "Running stage" not in done.stdout + done.stderr, "train ran a stage: nothing pulled"
    assert not project.run("git", "status", "--porcelain").stdout
    return project


@pytest.fixture(scope="module")
def published(trained) -> Project:
    trained.nox("-s", "publish")
    return trained


def kernels(blas_record: str) -> list[str]:
    return sorted({library["kernel"] for library in json.loads(blas_record)["libraries"]})


def writes(requests: list[str]) -> list[str]:
    """The registry's access-log lines of requests that change it (a push makes some)."""
    return [line for line in requests if re.search(r'"(PUT|POST|PATCH|DELETE) ', line)]


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def archive_tag(path: Path) -> str:
    """The model's tag as its archive's model.yaml says (read here, not by the suite's code)."""
    with tarfile.open(path) as archive:
        info = yaml.safe_load(archive.extractfile("./model.yaml").read())
    return f"{info['name']}:{info['version']}"


def test_train_in_a_fresh_clone_reproduces_the_committed_files(training):
    committed = kernels((ROOT / "model-blas.json").read_text())
    assert not training.changes, (
        f"`nox -s train` in a fresh clone changed tracked files (BLAS kernel "
        f"{kernels(training.blas)} here, {committed} in the commit's model-blas.json; another "
        f"kernel gives other model bits):\n{training.changes}"
    )
    assert "Running stage 'train'" in training.output, "the run's training trained nothing"


def test_publish_pushes_both_tags_with_one_digest_and_the_labels(published):
    client = published.registry.client()
    sha = published.head()
    by_sha, latest = client.manifest(IMAGE, sha), client.manifest(IMAGE, "latest")
    assert by_sha is not None and by_sha == latest
    labels = client.labels(IMAGE, by_sha)
    assert labels["org.opencontainers.image.revision"] == sha
    assert labels["org.opencontainers.image.version"] == sha
    # The commit's time, so that rebuilding a commit gives the same labels.
    committed = int(published.run("git", "show", "-s", "--format=%ct", "HEAD").stdout)
    created = dt.datetime.fromtimestamp(committed, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert labels["org.opencontainers.image.created"] == created
    archive = published.path(ARCHIVE)
    assert labels["model.tag"] == archive_tag(archive)
    assert labels["model.digest"] == digest_of(archive)
    # The model's metrics travel with the image (`invoke releases` reads them there).
    metrics = json.loads(published.path("evaluation/metrics.json").read_text())
    assert {name: labels[f"model.metrics.{name}"] for name in metrics} == {
        name: str(float(value)) for name, value in metrics.items()
    }


@pytest.fixture(scope="module")
def from_registry(published, tmp_path_factory):
    """The pushed image, removed from the engine, pulled back by digest and running."""
    registry = published.registry
    manifest = registry.client().manifest(IMAGE, published.head())
    # The image that containerize built and smoke tested here, by the tag it gave it.
    built = f"{registry.address}/{IMAGE}:{published.head()}"
    built_id = docker("image", "inspect", "--format", "{{.Id}}", built).stdout.strip()
    local = docker("image", "inspect", manifest.config_digest, check=False)
    if local.returncode == 0:
        found = json.loads(local.stdout)[0]
        references = (found.get("RepoTags") or []) + (found.get("RepoDigests") or [])
        foreign = [ref for ref in references if not ref.startswith(f"{registry.address}/")]
        assert not foreign, f"the pushed image is also {foreign}: not removing it"
        for reference in references:  # the last one removed takes the image with it
            docker("rmi", reference, check=False)
    gone = docker("image", "inspect", manifest.config_digest, check=False)
    assert gone.returncode != 0, "the pushed image is still in the engine: a pull proves nothing"
    reference = f"{registry.address}/{IMAGE}@{manifest.digest}"
    with logged_in(registry, tmp_path_factory.mktemp("docker-config")) as config:
        docker("--config", config, "pull", "--quiet", reference)
    image_id = docker("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()
    container, port = run_image(reference)
    try:
        wait_ready(port)
        yield SimpleNamespace(port=port, manifest=manifest, image_id=image_id, built_id=built_id)
    finally:
        docker("rm", "--force", container, check=False)


@contextlib.contextmanager
def logged_in(registry: Registry, config: Path) -> Iterator[str]:
    """python-on-whales login in a throwaway config dir (password through stdin), then logout."""
    from python_on_whales import DockerClient

    client = DockerClient(client_call=[docker_client_path()], config=str(config))
    client.login(registry.address, registry.user, registry.password)
    try:
        yield str(config)
    finally:
        client.logout(registry.address)


def test_the_image_pulled_by_digest_is_the_pushed_one(from_registry):
    # What the registry serves under the commit's tag is what was built and smoke-tested here.
    assert from_registry.built_id == from_registry.manifest.config_digest
    assert from_registry.image_id == from_registry.built_id


def test_the_image_pulled_by_digest_answers_like_the_local_model(published, from_registry):
    from celestial.reference import load_classifier

    classifier = load_classifier(published.path(ARCHIVE))
    for sample in [SAMPLE, *OTHER_SAMPLES]:
        image = published.path(sample)
        answer = post_image(from_registry.port, image)
        expected = classifier.predict_bytes(image.read_bytes())
        assert answer["prediction"] == expected["prediction"], sample
        assert answer["probabilities"].keys() == expected["probabilities"].keys()
        for label, p in expected["probabilities"].items():
            assert abs(answer["probabilities"][label] - p) <= DEFAULT_TOLERANCE, (sample, label)


def test_the_image_pulled_by_digest_refuses_hostile_input(published, from_registry):
    url = f"http://127.0.0.1:{from_registry.port}"
    jpeg = published.path(OTHER_SAMPLES[0]).read_bytes()
    wrong = []
    for name, (request, status) in bad_requests(jpeg).items():
        response = httpx.post(f"{url}/predict", timeout=60, **request)
        try:
            error = response.json().get("error")
        except ValueError:
            error = None
        if response.status_code != status or not error:
            wrong.append(f"{name}: HTTP {response.status_code} {response.text[:200]!r}")
    assert not wrong, "\n".join(wrong)
    # ... and it still serves.
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    assert post_image(from_registry.port, published.path(SAMPLE))["prediction"]


def test_a_second_publish_of_the_same_commit_skips(published):
    client = published.registry.client()
    before = client.manifest(IMAGE, "latest")
    done = published.nox("-s", "publish")
    assert "already published" in done.stdout + done.stderr
    assert "bentoml containerize" not in done.stdout + done.stderr
    assert client.manifest(IMAGE, "latest") == before


def test_a_stale_latest_is_repaired_by_the_session_without_a_rebuild(published, tmp_path):
    registry, sha = published.registry, published.head()
    client = registry.client()
    pushed = client.manifest(IMAGE, sha)
    # Another image takes `latest`, as a push by hand would (no created label: no order).
    stray = f"{registry.address}/{IMAGE}:stray"
    subprocess.run(
        [docker_client_path(), "build", "--quiet", "--tag", stray, "-"],
        input="FROM python:3.11-slim\nLABEL purpose=stray\n", text=True, check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        with logged_in(registry, tmp_path / "docker-config") as config:
            docker("--config", config, "push", "--quiet", stray)
    finally:
        remove_images(stray)
    client.put_manifest(IMAGE, "latest", client.manifest(IMAGE, "stray"))
    assert client.manifest(IMAGE, "latest") != pushed

    before = registry.requests()
    done = published.session("publish")
    output = done.stdout + done.stderr
    assert "latest did not point at" in output and "repaired (manifest PUT, no rebuild)" in output
    assert "already published" in output and "bentoml containerize" not in output
    assert client.manifest(IMAGE, "latest") == pushed
    assert not any("/blobs/uploads/" in line for line in registry.requests()[len(before) :])


def copy_image(registry: Registry, source: str, tag: str, target: str) -> None:
    """``source:tag`` also as ``target:tag``, through the registry's API (blobs mounted)."""
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    status, headers, manifest = registry.request(
        "GET", f"/v2/{source}/manifests/{tag}", headers={"Accept": accept}
    )
    assert status == 200, status
    document = json.loads(manifest)
    for blob in [document["config"], *document["layers"]]:
        path = f"/v2/{target}/blobs/uploads/?mount={blob['digest']}&from={source}"
        assert registry.request("POST", path)[0] == 201, blob
    put = f"/v2/{target}/manifests/{tag}"
    status, _, body = registry.request(
        "PUT", put, manifest, {"Content-Type": headers["Content-Type"]}
    )
    assert status == 201, body


def retrain(project: Project, workdir: Path) -> None:
    """Train another model (another seed) for the same commit; tracked files stay unchanged."""
    project.invoke("pull", "--target", "data/prepared")
    params = yaml.safe_load(project.path("params.yaml").read_text())
    params["train"]["seed"] += 1
    params["train"]["epochs"] = 2
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    train = [str(project.path("src/train.py")), str(project.path("data/prepared"))]
    project.run(
        "python", *train, str(workdir / "model"), str(workdir / "blas.json"),
        cwd=workdir, env={"PYTHONPATH": str(project.path("src"))},
    )  # fmt: skip
    project.path(ARCHIVE).write_bytes((workdir / "model" / ARCHIVE.name).read_bytes())


def test_a_model_the_commit_does_not_record_is_refused_before_anything_is_built(
    published, new_project, tmp_path
):
    """The registry has a copy of this commit's image without a signed provenance here: it is
    rebuilt, never trusted for its labels (issue 23, finding 1). Then the workspace's archive
    is swapped for another model without `dvc.lock` (git status stays clean: model/ is DVC's):
    publish refuses in one line before building, so the registry keeps what it had."""
    registry, swap = published.registry, "celestial-model-swap"
    project = new_project(
        "model-swap", registry, dvc_remote=published.dvc_remote,
        env={"IMAGE_NAME": swap}, source=published.root,
    )  # fmt: skip
    sha = project.head()
    assert sha == published.head()
    copy_image(registry, IMAGE, sha, swap)
    same = project.session("publish")
    assert "with no provenance: not trusted" in same.stdout, same.stdout
    client = registry.client()
    before = client.manifest(swap, sha), client.manifest(swap, "latest")

    retrain(project, tmp_path / "retrain")
    assert not project.run("git", "status", "--porcelain").stdout
    assert digest_of(project.path(ARCHIVE)) != digest_of(published.path(ARCHIVE))

    done = project.session("publish", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert (
        f"{ARCHIVE} (md5 " in output
        and "is not the train:model output that dvc.lock records" in output
        and "the commit does not record this model" in output
    ), output
    assert "bentoml containerize" not in output and "Traceback" not in output
    assert (client.manifest(swap, sha), client.manifest(swap, "latest")) == before


class FrontRefusingDocker:
    """A real HTTP front of a registry that passes the API through but refuses the Docker
    engine: the suite's ping and manifest checks succeed, `docker login` gets a 401. That is
    a registry whose credentials read but may not log in (a read-only token, say)."""

    def __init__(self, upstream: Registry):
        import http.client
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one_request_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if "docker/" in self.headers.get("User-Agent", ""):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="front"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                connection = http.client.HTTPConnection(upstream.address, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = handle_one_request_any

            def log_message(self, *args):  # quiet
                pass

        # Port 0: the OS assigns it and the server keeps it.
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_login_refused_after_a_passing_ping_is_a_clear_error_and_nothing_is_pushed(published):
    registry = published.registry
    before = registry.requests()
    with FrontRefusingDocker(registry) as front:
        try:
            done = published.session(
                "publish", "--force", env={"CONTAINER_REGISTRY_HOST": front.address}, check=False
            )
        finally:
            remove_images(f"{front.address}/")  # built and tagged for the front, never pushed
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"GET http://{front.address}/v2/" in output  # the ping ran, and passed:
    assert "smoke test passed" in output, output
    # The engine's own reason (docker's stderr, passed through), then the suite's one line.
    assert "401 Unauthorized" in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: `") and f"login {front.address}" in error, done.stderr
    assert "CONTAINER_REGISTRY_PASSWORD" in error
    assert "Traceback" not in done.stderr
    assert not writes(registry.requests()[len(before) :]), "something was pushed"


def test_wrong_password_is_refused_at_the_ping_and_nothing_is_built(published):
    before = published.registry.tags(IMAGE)
    done = published.session(
        "publish", "--force", env={"CONTAINER_REGISTRY_PASSWORD": "wrong"}, check=False
    )
    assert done.returncode != 0
    assert "refused user 'ci-bot'" in done.stderr and "CONTAINER_REGISTRY_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr
    assert "bentoml containerize" not in done.stdout
    assert published.registry.tags(IMAGE) == before


def test_registry_down_is_a_clear_error(published):
    with refused_port() as port:
        done = published.session(
            "publish", env={"CONTAINER_REGISTRY_HOST": f"127.0.0.1:{port}"}, check=False
        )
    assert done.returncode != 0
    assert "is not reachable" in done.stderr and "Traceback" not in done.stderr


def test_no_docker_engine_is_a_clear_error(published, tmp_path):
    no_engine = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    done = published.session("publish", "--force", env=no_engine, check=False)
    assert done.returncode != 0
    assert "no Docker engine answers" in done.stderr and "Traceback" not in done.stderr


# A real service that fails its smoke test, built by the publish session: it must not be
# pushed. The smoke test's other verdicts (a crash, never ready, HTTP 500) are proven on tiny
# images in test_smoke_failures.py: they need no rebuild of the service.
BROKEN_SERVICES = {
    # A service that answers in the right shape, but not the model's prediction.
    "wrong answer": (
        PREDICT_LINE,
        "p = classifier.predict(decode_image(data))['probabilities']\n"
        "        return 200, {'prediction': min(p, key=p.get), 'probabilities': p}",
        "differs from the local model's",
        {},
    ),
}


@pytest.mark.parametrize("broken", BROKEN_SERVICES)
def test_an_image_that_fails_its_smoke_test_is_not_pushed(published, broken):
    anchor, replacement, message, env = BROKEN_SERVICES[broken]
    serve = published.path("src/serve.py")
    original = serve.read_text()
    assert anchor in original, "serve.py changed: update this test's patch"
    serve.write_text(original.replace(anchor, replacement))
    registry = published.registry
    before, tags = registry.requests(), registry.tags(IMAGE)
    try:
        # -e: the commands, so that the SBOM's extraction shows it ran during the smoke test
        done = published.invoke(
            "-e", *noxfile.invoke_arguments(noxfile.PUBLISH, []), check=False, env=env
        )
    finally:
        serve.write_text(original)
    assert done.returncode != 0
    assert "bentoml containerize" in done.stdout, "the broken service was not even built"
    # The SBOM was being made while the smoke test ran (attestation_draft), and stopped with
    # it: nothing pushed, signed or attached (the tags, .sbom/.att included, are unchanged),
    # and its throwaway container (of the same image) is gone.
    assert re.search(r"^\$ \S*docker run --rm --name sbom-", done.stdout, re.M), done.stdout
    assert "attested" not in done.stdout and "✓ push" not in done.stdout
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: "), done.stdout + done.stderr
    assert message in error[0], error[0]
    assert "Traceback" not in done.stderr
    assert registry.tags(IMAGE) == tags
    assert not writes(registry.requests()[len(before) :]), "a failing image was pushed"
    left = docker("ps", "--all", "--quiet", "--filter", f"ancestor={registry.address}/{IMAGE}")
    assert not left.stdout.strip(), "the smoke test or the SBOM draft left its container behind"


@pytest.mark.parametrize(
    "change", ["tracked", "untracked"], ids=["a modified file", "an untracked file"]
)
def test_publish_in_ci_refuses_a_dirty_tree(published, change):
    target = published.path("README.md" if change == "tracked" else "notes.txt")
    original = target.read_text() if target.exists() else None
    target.write_text((original or "") + "\nan edit that is not committed\n")
    before = published.registry.requests()
    try:
        done = published.session("publish", "--force", env={"CI": "true"}, check=False)
    finally:
        if original is None:
            target.unlink()
        else:
            target.write_text(original)
    assert done.returncode != 0
    assert "uncommitted changes in CI" in done.stderr and target.name in done.stderr
    assert "Traceback" not in done.stderr
    assert "bentoml" not in done.stdout, "a dirty tree was built in CI"
    assert not writes(published.registry.requests()[len(before) :])


def test_missing_model_names_the_command_that_makes_it(new_project, registry):
    project = new_project("no-model", registry)
    done = project.session("publish", check=False)
    assert done.returncode != 0
    assert "nox -s train" in done.stderr and "Traceback" not in done.stderr


# What the quick start's publish may print, quiet: `nox -s train publish` must stay within 60
# lines, and nox's own (about 6 a session) and train's steps (about 5) come on top.
QUIET_PUBLISH_LINES = 40


def test_the_quick_start_publishes_to_the_embedded_registry(published, new_project, tmp_path):
    """No registry settings, no credentials: publish starts the embedded registry and pushes.

    Quiet, as a new user runs it: a line per step, and a summary at the end; `invoke -e`
    shows the commands and the registry requests. Port 0: the OS gives the embedded registry a
    port it keeps (no port chosen here, released, then taken by someone else)."""
    port, storage = local_registry.AUTO, tmp_path / "embedded-registry"
    settings = {  # suite.local_registry.port/storage of invoke.yaml, through invoke's environment
        "INVOKE_SUITE_LOCAL_REGISTRY_PORT": str(port),
        "INVOKE_SUITE_LOCAL_REGISTRY_STORAGE": str(storage),
        "INVOKE_SUITE_VERBOSE": "0",  # the default of a fresh clone: quiet
    }
    project = new_project(
        "embedded", None, dvc_remote=published.dvc_remote, env=settings, source=published.root
    )
    sha, addresses = project.head(), []
    try:
        assert project.invoke("registry", "--status").stdout.strip() == "127.0.0.1:0: down"
        done = project.session("publish")
        address = started_at(done.stdout)  # the port the OS gave, as the suite recorded it
        addresses.append(address)
        open_registry = RegistryClient(address)  # no credentials: the embedded one has none
        assert " login " not in done.stdout, "logged in without credentials"
        assert f"published {address}/{IMAGE}:{sha}" in done.stdout
        pushed = open_registry.manifest(IMAGE, sha)
        assert pushed is not None and open_registry.manifest(IMAGE, "latest") == pushed
        assert_quiet_with_a_summary(done, f"{address}/{IMAGE}", sha, pushed.digest)
        # The embedded registry keeps running: the summary says how to stop it.
        assert (
            f"  registry    embedded, still running on {address}: stop it with "
            "`.nox/publish/bin/invoke registry --stop`"
        ) in done.stdout.splitlines()
        # Built on scripts/build-base-image's stand-in (no Docker Hub): said once.
        warning = "WARNING: base image python:3.11-slim is this engine's local stand-in"
        assert done.stdout.count(warning) == (1 if engine_has_the_stand_in() else 0)
        labels = open_registry.labels(IMAGE, pushed)
        assert labels["model.digest"] == digest_of(project.path(ARCHIVE))
        assert project.invoke("registry", "--status").stdout.strip() == f"{address}: up"

        assert "local registry: stopped" in project.invoke("registry", "--stop").stdout
        assert project.invoke("registry", "--status").stdout.strip() == "127.0.0.1:0: down"
        address = started_at(project.invoke("registry").stdout)  # a new port, the same data
        addresses.append(address)
        open_registry = RegistryClient(address)
        assert open_registry.manifest(IMAGE, sha) == pushed, "the registry lost its data"
        again = project.invoke("-e", *noxfile.invoke_arguments(noxfile.PUBLISH, []))
        # No SIGNING_KEY: nothing is trusted, so the same commit is built and pushed again.
        assert "with an unsigned provenance: not trusted" in again.stdout
        # -e/--echo: the commands and the registry requests, as curl lines a user can paste.
        assert f"$ curl --fail --request GET http://{address}/v2/{IMAGE}/manifests/{sha}" in (
            again.stdout
        )
        assert "gate pass: val_acc" in again.stdout  # a detail: shown with -e only
    finally:
        local_registry.stop_port(Runner(), port, storage)
        for given in addresses:
            remove_images(f"{given}/")


def started_at(output: str) -> str:
    """``127.0.0.1:PORT`` of the embedded registry a step says it started (binary)."""
    found = re.search(r"local registry: started \(binary\) at http://(127\.0\.0\.1:\d+)", output)
    assert found, output
    return found.group(1)


def engine_has_the_stand_in() -> bool:
    """Is the engine's python:3.11-slim scripts/build-base-image's stand-in (its marks)?"""
    found = docker("image", "inspect", "--format", "{{json .Config.Labels}}", "python:3.11-slim")
    return "stand-in-for" in found.stdout or "made by scripts/build-base-image" in found.stdout


def assert_quiet_with_a_summary(done, repository: str, sha: str, digest: str) -> None:
    """A line per step, no command, no tool output, and the summary at the end."""
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    assert len(lines) <= QUIET_PUBLISH_LINES, done.stdout + done.stderr
    assert not any(line.startswith("$ ") for line in lines), done.stdout
    assert "gate pass" not in done.stdout and "#1 " not in done.stdout, done.stdout
    for name in (step.split()[0] for step in noxfile.PUBLISH):  # "smoke --draft-attestations"
        assert any(line.startswith(f"✓ {name} ") for line in lines), (name, done.stdout)
    summary = done.stdout[done.stdout.index(f"Published {repository}:{sha}") :].splitlines()
    assert f"  digest      {digest}" in summary, done.stdout
    assert f"  tags        {repository}:{sha}, {repository}:latest" in summary
    assert any(line.startswith("  image size  ") and line.endswith(" MB") for line in summary)
    assert "  attested    SBOM and provenance, UNSIGNED" in summary  # no SIGNING_KEY here
    assert any(line.startswith("  steps       check-published ") for line in summary)
    assert summary[-2:] == [
        f"  docker run --rm -p 127.0.0.1:3000:3000 {repository}:{sha}",
        "  curl -F image=@data/raw/Earth/Earth_1.jpg http://127.0.0.1:3000/predict",
    ], done.stdout


def test_each_step_runs_alone_and_does_its_part(published, new_project):
    """pull, import-model, bento, containerize, smoke, login, push: one at a time, as a user
    debugging CI would run them, each checked for its effect."""
    registry, name = published.registry, "celestial-steps"
    project = new_project(
        "steps", registry, dvc_remote=published.dvc_remote, env={"IMAGE_NAME": name},
        source=published.root,
    )  # fmt: skip
    sha, repository = project.head(), f"{registry.address}/{name}"
    try:
        project.invoke("pull")
        archive = project.path(ARCHIVE)
        assert archive.is_file() and project.path(SAMPLE).is_file()
        model_name, version = archive_tag(archive).split(":")

        project.invoke("import-model")
        assert (project.bentoml_home / "models" / model_name / version / "model.yaml").is_file()

        project.invoke("bento")
        bento = project.bentoml_home / "bentos" / "celestial_bodies_classifier" / sha
        assert (bento / "bento.yaml").is_file()

        started = project.home / "popen.jsonl"
        done = project.invoke("containerize", env=popen_recorder(project.home, started))
        commands = [json.loads(line)["argv"] for line in started.read_text().splitlines()]
        assert any(c[0].endswith("docker") and c[1:2] == ["build"] for c in commands), commands
        bentoml = [c for c in commands if Path(c[0]).name == "bentoml" or "bentoml_cli" in c]
        assert not bentoml, f"containerize started BentoML's command line: {bentoml}"
        assert "bentoml containerize celestial_bodies_classifier:" in done.stdout  # as shown
        assert "To run your newly built Bento container" not in done.stdout
        built = json.loads(docker("image", "inspect", f"{repository}:{sha}").stdout)[0]
        assert f"{repository}:latest" in built["RepoTags"]
        assert built["Config"]["Labels"]["model.digest"] == digest_of(archive)

        done = project.invoke("smoke")
        assert f"smoke test passed: {repository}:{sha}" in done.stdout
        left = docker("ps", "--all", "--quiet", "--filter", f"ancestor={repository}:{sha}")
        assert not left.stdout.strip(), "the smoke test or the SBOM draft left its container behind"

        before = registry.requests()
        done = project.invoke("login")
        assert f"logged in to {registry.address}" in done.stdout
        engine = [line for line in registry.requests()[len(before) :] if '"docker/' in line]
        assert any('"GET /v2/ HTTP/1.1" 200' in line for line in engine), "no login reached it"
        docker_config = project.home / ".docker" / "config.json"
        assert not docker_config.exists() or registry.address not in docker_config.read_text()
        assert registry.tags(name) == []

        project.invoke("push")
        assert registry.tags(name) == [sha]  # `latest` moves after attest, once it is signed
        pushed = registry.client().manifest(name, sha)
        assert pushed.config_digest == built["Id"]

        done = project.invoke("attest")
        assert f"published {repository}:{sha}, {repository}:latest ({pushed.digest})" in done.stdout
        assert registry.client().manifest(name, "latest") == pushed
    finally:
        remove_images(f"{repository}:")


# Imported at the start of every Python process started with popen_recorder's PYTHONPATH:
# each process it starts (subprocess.Popen's audit event) is appended to POPEN_RECORD.
POPEN_HOOK = """
import json, os, sys

def _record(event, args):
    if event == "subprocess.Popen":
        argv = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        with open(os.environ["POPEN_RECORD"], "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "argv": [os.fsdecode(a) for a in argv]}))
            log.write("\\n")

if os.environ.get("POPEN_RECORD"):
    sys.addaudithook(_record)
"""


def popen_recorder(directory: Path, record: Path) -> dict[str, str]:
    """The environment that records every process the suite's Python starts to ``record``
    (one JSON line each: the pid that started it, its argv), whatever PATH resolves."""
    hook = directory / "popen-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(POPEN_HOOK)
    record.unlink(missing_ok=True)
    return {"PYTHONPATH": str(hook), "POPEN_RECORD": str(record)}


CI_RUNS = {
    "GitHub pull request": (
        {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
         "GITHUB_REF": "refs/pull/7/merge", "GITHUB_HEAD_REF": "feature"},
        False,
    ),
    "GitHub push to main": (
        {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/main"},
        True,
    ),
    "GitLab merge request": (
        {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "merge_request_event",
         "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature"},
        False,
    ),
    "GitLab main": (
        {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"},
        True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("run", CI_RUNS)
def test_train_in_ci_pushes_the_outputs_only_when_it_builds_main(published, new_project, run):
    variables, pushes = CI_RUNS[run]
    project = new_project("ci-train", None, source=published.root)  # its own, empty remote
    # The outputs come from the trained project's remote; the project's own stays empty.
    project.run("dvc", "remote", "add", "--local", "trained", str(published.dvc_remote))
    project.run("dvc", "pull", "--remote", "trained")
    done = project.session("train", env={"CI": "true", **variables})
    pushed = [path for path in project.dvc_remote.rglob("*") if path.is_file()]
    if pushes:
        assert "$ dvc push" in done.stdout and pushed, done.stdout
    else:
        assert "outputs not pushed" in done.stdout and not pushed, done.stdout


def test_the_published_image_is_promoted_by_digest_and_listed(published, tmp_path):
    """Last in this module: the real smoke-tested image, promoted (the default revision: this
    commit) once verify passed on it with the key it was signed with, then listed with its
    metrics and tags."""
    client, sha = published.registry.client(), published.head()
    key = tmp_path / "tests.pub"
    key.write_text(SIGNING_PUBLIC_KEY)
    trusted = {"INVOKE_SUITE_SIGNING_PUBLIC_KEY": str(key)}  # as a committed public key
    mark = len(published.registry.requests())
    done = published.session("promote", "--to", "production", env=trusted)
    assert client.manifest(IMAGE, "production") == client.manifest(IMAGE, sha)
    assert f"moved from nothing (new tag) to {sha[:12]}" in done.stdout
    layers = json.loads(client.manifest(IMAGE, sha).raw)["layers"]
    requests = published.registry.requests()[mark:]
    assert not any(layer["digest"].split(":")[1] in line for layer in layers for line in requests)
    listed = json.loads(published.invoke("releases", "--json").stdout)
    ours = next(release for release in listed if release["revision"] == sha)
    assert {"production", sha} <= set(ours["tags"])  # latest too, unless a test above moved it
    metrics = json.loads(published.path("evaluation/metrics.json").read_text())
    assert ours["metrics"] == {name: str(float(v)) for name, v in sorted(metrics.items())}
    assert ours["size"] == sum(layer["size"] for layer in layers)
