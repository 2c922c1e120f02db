"""An https registry with a real token service, as GHCR, Artifact Registry and Docker Hub work.

* :func:`make_pki`: a CA made per test run (``cryptography``), a server certificate for
  127.0.0.1 and this machine's name, and a token-signing certificate, all issued by that CA.
* :class:`TokenIssuer`: the token service (https on 127.0.0.1, a port the OS assigns and the
  server keeps). It checks Basic credentials, then answers a JWT signed RS256 whose header
  carries the signing certificate (``x5c``): Distribution 2.8 verifies that chain against its
  ``rootcertbundle`` (the CA), then ``iss``, ``aud`` (its ``service``), ``exp``/``nbf`` and
  the ``access`` claim, which holds what was asked *and* the user may do (a reader asking for
  ``pull,push`` gets ``pull``), as real token services grant.
* :func:`start_registry`: Debian's Distribution binary with ``http.tls`` and ``auth.token``
  on a port the OS assigns (read from its log), through local_registry's own pieces (config,
  pid file, stop), like tests/support/registry_process.py.

Passwords are never logged: the issuer records who asked for which scope, not with what.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cicd import local_registry
from cicd.local_registry import RegistryProcess
from cicd.shell import Runner
from tests.support import registry_process
from tests.support.fake_http import JsonHandler

SERVICE = "celestial-test-registry"
ISSUER = "celestial-test-token-issuer"
TIMEOUT = 15.0


def machine_name() -> str | None:
    """A name of this machine that resolves to loopback, or None.

    The suite speaks plain http to 127.0.0.1 and ``localhost`` (as Docker allows) and https to
    names, as to GHCR: the https path is reached through a name. The engine, too, treats
    127.0.0.0/8 as insecure and would fall back to plain http; through a name it must trust
    the CA (/etc/docker/certs.d/NAME:PORT/ca.crt).
    """
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return None
    if name == "localhost" or not ipaddress.ip_address(address).is_loopback:
        return None
    return name if name.lower() == name else None


# -- the CA and the certificates ----------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path  # the CA certificate: rootcertbundle, SSL_CERT_FILE, certs.d/<host>/ca.crt
    server_cert: Path
    server_key: Path
    signer_key: rsa.RSAPrivateKey = field(repr=False)
    signer_der: bytes = field(repr=False)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


CA_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True,
    crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip


def make_pki(directory: Path, names: list[str]) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and ``names``, a token-signing certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("celestial test CA"))
        .issuer_name(_name("celestial test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def issued(key: rsa.RSAPrivateKey, common: str, extensions: list) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())

    server_key = _key()
    alternatives = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    alternatives += [x509.DNSName(name) for name in names]
    server = issued(
        server_key,
        names[0] if names else "127.0.0.1",
        [
            (x509.SubjectAlternativeName(alternatives), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    signer_key = _key()
    signer = issued(signer_key, "celestial token signer", [])
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "server.crt").write_bytes(server.public_bytes(pem))
    (directory / "server.key").write_bytes(_pem_key(server_key))
    (directory / "server.key").chmod(0o600)
    return Pki(
        directory,
        directory / "ca.crt",
        directory / "server.crt",
        directory / "server.key",
        signer_key,
        signer.public_bytes(serialization.Encoding.DER),
    )


# -- the token service --------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class User:
    password: str = field(repr=False)
    actions: frozenset[str] = frozenset({"pull", "push"})


class TokenIssuer(ThreadingHTTPServer):
    """``GET /token?service=..&scope=..``: Basic credentials in, ``{"token": JWT}`` out."""

    def __init__(self, pki: Pki, users: dict[str, User]):
        super().__init__(("127.0.0.1", 0), _TokenHandler)  # the OS assigns the port; kept
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.pki, self.users = pki, users
        # (user or None, the scopes asked, the access granted, HTTP status): no passwords.
        self.requests: list[tuple[str | None, list[str], list[dict[str, Any]], int]] = []
        self._thread: threading.Thread | None = None

    @property
    def realm(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/token"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()

    def handle_error(self, request, client_address) -> None:  # a client that hung up
        pass

    def scopes_asked(self, user: str) -> list[str]:
        return [scope for who, scopes, _, _ in self.requests if who == user for scope in scopes]

    def token(self, user: str, scopes: list[str]) -> tuple[str, list[dict[str, Any]]]:
        allowed = self.users[user].actions
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in allowed or (a == "*" and allowed)]
            if kind == "repository" and name and granted:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.pki.signer_der).decode()],
        }
        claims = {
            "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 600, "nbf": now - 60,
            "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self.pki.signer_key.sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}", access


class _TokenHandler(JsonHandler):
    server: TokenIssuer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        user = self._user()
        if url.path != "/token" or query.get("service", [""])[0] != SERVICE:
            self.server.requests.append((user, scopes, [], 400))
            return self.reply(400, {"errors": [{"code": "UNSUPPORTED", "message": "no"}]})
        if user is None:
            self.server.requests.append((None, scopes, [], 401))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="celestial test token service"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        token, access = self.server.token(user, scopes)
        self.server.requests.append((user, scopes, access, 200))
        issued = dt.datetime.now(dt.UTC).isoformat()
        self.reply(
            200,
            {"token": token, "access_token": token, "expires_in": 600, "issued_at": issued},
        )

    def _user(self) -> str | None:
        """The user whose Basic credentials are right, or None."""
        kind, _, encoded = self.headers.get("Authorization", "").partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            name, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        known = self.server.users.get(name)
        return name if known is not None and known.password == password else None


# -- the registry ------------------------------------------------------------------------------


def registry_config(pki: Pki, data: Path, realm: str) -> dict[str, Any]:
    config = local_registry.binary_config("127.0.0.1", 0, data)
    config["http"]["tls"] = {"certificate": str(pki.server_cert), "key": str(pki.server_key)}
    config["auth"] = {
        "token": {
            "realm": realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(pki.ca),
        }
    }
    return config


def start_registry(state: Path, pki: Pki, realm: str) -> RegistryProcess:
    """Distribution over https with token auth, on a port the OS assigns; stop with
    :func:`stop_registry`."""
    runner = Runner()
    local_registry.private_dir(state)
    local_registry.private_dir(state / "data")
    run_dir = Path(tempfile.mkdtemp(prefix="run-auto-", dir=state))
    pid = local_registry.serve(runner, run_dir, registry_config(pki, state / "data", realm))
    try:
        log, alive = run_dir / "registry.log", lambda: local_registry._pid_alive(pid)
        port = local_registry.logged_port(log, "127.0.0.1", registry_process.TIMEOUT, alive)
        registry_process._link(state / f"run-{port}", run_dir)
        _wait_https(port, pki.ca)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    return RegistryProcess("127.0.0.1", port, "binary", run_dir, pid=pid)


def stop_registry(state: Path, port: int) -> bool:
    return local_registry.stop_port(Runner(), port, state)


def _wait_https(port: int, ca: Path) -> None:
    """Until ``/v2/`` answers over TLS (401: a token is needed)."""
    import httpx

    deadline = time.monotonic() + TIMEOUT
    context = ssl.create_default_context(cafile=str(ca))
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"https://127.0.0.1:{port}/v2/", verify=context, timeout=2)
            if answer.status_code == 401:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise local_registry.RegistryError(f"the https registry on port {port} did not answer")
