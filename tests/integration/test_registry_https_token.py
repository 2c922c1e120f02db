"""The registry path of GHCR, Artifact Registry and Docker Hub, for real: https with a private CA
and the bearer-token flow (tests/support/token_registry.py: Debian's Distribution 2.8 with
``auth: token``, and a token service that signs JWTs with a certificate of that CA).

The suite trusts the CA through ``SSL_CERT_FILE`` (OpenSSL's standard variable), the engine
through ``/etc/docker/certs.d/HOST:PORT/ca.crt``. Users: a password user, ``_json_key`` whose
password is a (multi-line) service-account key as Artifact Registry takes it, and a reader.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import shutil
import ssl
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cicd import image as image_module
from cicd import local_registry
from cicd.context import Run
from cicd.errors import SuiteError
from cicd.registry import Credentials, Manifest, RegistryClient, content_digest
from cicd.settings import read_config
from cicd.shell import Runner
from tests.support import token_registry
from tests.support.leaks import LeakScan
from tests.support.project import ROOT
from tests.support.token_registry import TokenIssuer, User

NAME = token_registry.machine_name()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(local_registry.REGISTRY_BINARY).exists(),
        reason="needs docker-registry (run scripts/bootstrap)",
    ),
    pytest.mark.skipif(
        NAME is None, reason="this machine's name does not resolve to loopback: no https name"
    ),
]

PASSWORD = f"pw-{uuid.uuid4().hex}"
READER_PASSWORD = f"rd-{uuid.uuid4().hex}"
PRIVATE_KEY = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
# A service-account key file as Google gives it: pretty-printed JSON, a PEM key inside.
JSON_KEY = json.dumps(
    {
        "type": "service_account",
        "project_id": "celestial-test",
        "private_key_id": uuid.uuid4().hex,
        "private_key": PRIVATE_KEY,
        "client_email": "publisher@celestial-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    },
    indent=2,
)
SECRETS = (PASSWORD, READER_PASSWORD, JSON_KEY, PRIVATE_KEY.splitlines()[1])


@dataclass
class Secure:
    host: str  # NAME:PORT, what the suite and docker are given
    port: int
    pki: token_registry.Pki
    issuer: TokenIssuer
    state: Path


@dataclass
class _Stored:
    """What LeakScan searches on disk for a registry (its state directory)."""

    state: Path


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    root = tmp_path_factory.mktemp("https-registry")
    assert NAME
    pki = token_registry.make_pki(root / "pki", [NAME])
    users = {
        "ci-publisher": User(PASSWORD),
        "_json_key": User(JSON_KEY),
        "reader": User(READER_PASSWORD, frozenset({"pull"})),
    }
    issuer = TokenIssuer(pki, users)
    issuer.start()
    try:
        registry = token_registry.start_registry(root / "state", pki, issuer.realm)
        try:
            yield Secure(f"{NAME}:{registry.port}", registry.port, pki, issuer, root / "state")
        finally:
            token_registry.stop_registry(root / "state", registry.port)
    finally:
        issuer.stop()
    # Nothing the registry stored or logged holds a password or the key.
    scan = LeakScan(*SECRETS)
    scan.add_registry(_Stored(root / "state"))  # type: ignore[arg-type]
    assert scan.findings() == []


@pytest.fixture
def trusted(secure: Secure, monkeypatch: pytest.MonkeyPatch) -> Secure:
    """The suite's HTTP client trusts the CA: SSL_CERT_FILE, as a user would set it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(secure.pki.ca))
    return secure


def leaked(*texts: str) -> list[str]:
    scan = LeakScan(*SECRETS)
    scan.texts += [(f"text {number}", text) for number, text in enumerate(texts)]
    return scan.findings()


def layer(content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buffer.getvalue(), mtime=0)


def push_small_image(client: RegistryClient, repository: str, tag: str) -> Manifest:
    """A one-layer OCI image pushed through the suite's client alone (blobs, then manifest)."""
    blob = layer(b"hello from the https registry\n")
    diff_id = content_digest(gzip.decompress(blob))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.example.test": repository}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_digest = client.upload_blob(repository, config)
    layer_digest = client.upload_blob(repository, blob)
    media_type = "application/vnd.oci.image.manifest.v1+json"
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": len(blob),
                }
            ],
        }
    ).encode()
    manifest = Manifest(content_digest(raw), config_digest, raw, media_type)
    assert client.put_manifest(repository, tag, manifest) == manifest.digest
    return manifest


def test_the_suites_client_pings_gets_a_token_per_scope_pushes_and_reads(trusted: Secure):
    out = io.StringIO()
    client = RegistryClient(
        trusted.host, Credentials("ci-publisher", PASSWORD), runner=Runner(out=out)
    )
    assert client.base == f"https://{trusted.host}"  # a name: https, as GHCR
    repository = f"team/app-{uuid.uuid4().hex[:8]}"
    before = len(trusted.issuer.requests)
    client.ping()
    assert client.manifest(repository, "v1") is None  # a pull token; nothing there yet
    pushed = push_small_image(client, repository, "v1")
    read = client.manifest(repository, "v1")
    assert read is not None and read.digest == pushed.digest
    assert client.labels(repository, read) == {"org.example.test": repository}
    assert client.tags(repository) == ["v1"]
    asked = trusted.issuer.requests[before:]
    assert all(who == "ci-publisher" and status == 200 for who, _, _, status in asked)
    # One token per scope, each asked once and reused: ping (no scope), pull, then pull+push.
    assert [scopes for _, scopes, _, _ in asked] == [
        [],
        [f"repository:{repository}:pull"],
        [f"repository:{repository}:pull,push"],
    ]
    assert asked[2][2] == [{"type": "repository", "name": repository, "actions": ["pull", "push"]}]
    assert leaked(out.getvalue()) == []
    assert "Bearer" not in out.getvalue()  # tokens are masked too, if ever shown


def test_the_google_json_key_user_is_taken_as_artifact_registry_takes_it(
    trusted: Secure, capsys: pytest.CaptureFixture[str]
):
    assert "\n" in JSON_KEY  # multi-line, as the key file is
    run = Run.load(
        ROOT, {"CONTAINER_REGISTRY_HOST": trusted.host, "GOOGLE_SERVICE_ACCOUNT_KEY": JSON_KEY}
    )
    assert run.credentials is not None and run.credentials.username == "_json_key"
    repository = f"gar/app-{uuid.uuid4().hex[:8]}"
    run.registry.ping()
    pushed = push_small_image(run.registry, repository, "sha-1")
    assert run.registry.manifest(repository, "sha-1") == pushed
    assert f"repository:{repository}:pull,push" in trusted.issuer.scopes_asked("_json_key")
    captured = capsys.readouterr()
    assert leaked(captured.out, captured.err) == []


def test_a_wrong_password_is_one_clear_line(trusted: Secure, capsys: pytest.CaptureFixture[str]):
    wrong = f"not-it-{uuid.uuid4().hex}"
    runner = Runner()
    client = RegistryClient(trusted.host, Credentials("ci-publisher", wrong), runner=runner)
    with pytest.raises(SuiteError) as error:
        client.ping()
    message = str(error.value)
    assert "\n" not in message
    assert f"registry {trusted.host} refused user 'ci-publisher'" in message
    assert "CONTAINER_REGISTRY_PASSWORD" in message
    captured = capsys.readouterr()
    assert wrong not in message + captured.out + captured.err
    assert trusted.issuer.requests[-1][0] is None and trusted.issuer.requests[-1][3] == 401


def test_a_pull_token_cannot_push(trusted: Secure):
    repository = f"team/guarded-{uuid.uuid4().hex[:8]}"
    context = ssl.create_default_context(cafile=str(trusted.pki.ca))
    uploads = f"https://{trusted.host}/v2/{repository}/blobs/uploads/"

    def token(user: str, password: str, actions: str) -> str:
        answer = httpx.get(
            trusted.issuer.realm,
            params={
                "service": token_registry.SERVICE,
                "scope": f"repository:{repository}:{actions}",
            },
            auth=(user, password),
            verify=context,
        )
        assert answer.status_code == 200
        return answer.json()["token"]

    pull = token("ci-publisher", PASSWORD, "pull")
    refused = httpx.post(uploads, headers={"Authorization": f"Bearer {pull}"}, verify=context)
    assert refused.status_code == 401
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    push = token("ci-publisher", PASSWORD, "pull,push")
    started = httpx.post(uploads, headers={"Authorization": f"Bearer {push}"}, verify=context)
    assert started.status_code == 202
    # A user who may only pull asks for pull,push and is granted pull: the suite says so.
    reader = RegistryClient(trusted.host, Credentials("reader", READER_PASSWORD))
    assert reader.manifest(repository, "latest") is None  # reading is allowed
    with pytest.raises(SuiteError) as error:
        reader.upload_blob(repository, b"not allowed\n")
    assert "did not grant user 'reader' pull,push on " + repository in str(error.value)
    assert "\n" not in str(error.value)
    granted = [access for who, _, access, _ in trusted.issuer.requests if who == "reader"]
    assert granted[-1] == [{"type": "repository", "name": repository, "actions": ["pull"]}]


def test_ssl_cert_file_is_how_the_suite_trusts_a_private_ca(
    secure: Secure, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    untrusting = RegistryClient(secure.host, Credentials("ci-publisher", PASSWORD))
    with pytest.raises(SuiteError) as error:
        untrusting.ping()
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value)
    assert "set SSL_CERT_FILE" in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(secure.pki.ca))
    RegistryClient(secure.host, Credentials("ci-publisher", PASSWORD)).ping()


# -- the engine half: docker login/push through the suite's push step --------------------------

DOCKER = "/usr/bin/docker"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, check=check, timeout=600,
        env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


@pytest.fixture
def engine_trusts(secure: Secure) -> Iterator[Path]:
    """The CA where dockerd looks for this registry's (read per request: no restart).

    Put there as a user would. This engine would not need it, though: a registry whose name
    resolves into 127.0.0.0/8 is an insecure registry by default, for which dockerd speaks TLS
    without verifying the certificate; so this test proves the engine's push over TLS through
    the token service, not the engine's trust in the CA (the suite's is proven above).
    """
    if not Path(DOCKER).exists() or _docker("version", check=False).returncode != 0:
        pytest.skip("no Docker engine answers /usr/bin/docker")
    if _docker("image", "inspect", "python:3.11-slim", check=False).returncode != 0:
        pytest.skip("the engine has no python:3.11-slim image")
    certs_d = Path("/etc/docker/certs.d")
    made_certs_d = not certs_d.exists()
    directory = certs_d / secure.host
    assert not directory.exists(), f"{directory} exists: another run's? not touching it"
    directory.mkdir(parents=True)
    shutil.copy(secure.pki.ca, directory / "ca.crt")
    try:
        yield directory
    finally:
        shutil.rmtree(directory)
        if made_certs_d and not any(certs_d.iterdir()):
            certs_d.rmdir()


@pytest.mark.docker
def test_docker_pushes_through_the_suites_push_step(
    trusted: Secure, engine_trusts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    image_name = f"gar/pushed-{uuid.uuid4().hex[:8]}"
    environ = {
        "CONTAINER_REGISTRY_HOST": trusted.host,
        "GOOGLE_SERVICE_ACCOUNT_KEY": JSON_KEY,  # docker login -u _json_key --password-stdin
        "IMAGE_NAME": image_name,
    }
    # Verbose: the test reads the commands the step shows (quiet by default).
    run = Run.create(ROOT, read_config(ROOT), environ, verbose=True)
    repository = run.settings.repository
    assert repository == f"{trusted.host}/{image_name}"
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    (tmp_path / "Dockerfile").write_text(
        f"FROM python:3.11-slim\nLABEL org.opencontainers.image.created={created}\n"
    )
    tags = ("sha-0123456789ab", "latest")
    reference = f"{repository}:{tags[0]}"
    _docker("build", "--quiet", "--tag", reference, str(tmp_path))
    try:
        image_id = _docker("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()
        local = image_module.Image(image_id, repository, tags)
        # The publish session's push step, then its `latest` (attest's last act).
        digest = image_module.move_tags(run, local, image_module.push(run, local))
        for tag in tags:
            manifest = run.registry.manifest(image_name, tag)
            assert manifest is not None and manifest.config_digest == image_id
            assert manifest.digest == digest
    finally:
        _docker("rmi", reference, check=False)
    # The engine asked the token service for push rights as _json_key (the daemon's own
    # token request: the suite's client only reads before the tag moves).
    assert f"repository:{image_name}:pull,push" in trusted.issuer.scopes_asked("_json_key")
    captured = capsys.readouterr()
    assert f"push {reference}" in captured.out
    assert leaked(captured.out, captured.err) == []
