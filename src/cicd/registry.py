"""The registry's HTTP API (Distribution v2): what a tag points to, and its labels.

Used to verify a push (both tags resolve to the digest of the smoke-tested image) and to
skip a publish whose image is already there. Speaks basic auth and the bearer-token flow
that GHCR, GitLab and Artifact Registry use. Standard library only.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from cicd.errors import SuiteError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
TIMEOUT = 15


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Manifest:
    digest: str  # the manifest digest: what `image@sha256:...` pulls
    config_digest: str  # the image ID of the pushed image (sha256 of its config)


class RegistryClient:
    """Read-only client of one registry host."""

    def __init__(self, host: str, credentials: Credentials | None = None):
        self.host = host
        self.base = f"{scheme(host)}://{host}"
        self.credentials = credentials
        self._token: str | None = None

    def ping(self) -> None:
        """Fail with what to do when the registry does not answer or refuses the credentials."""
        status, _, _ = self._request("/v2/", accept="application/json", scope=None)
        if status not in (200,):
            raise SuiteError(f"registry {self.host} answered HTTP {status} to /v2/")

    def manifest_url(self, repository: str, reference: str) -> str:
        """Where :meth:`manifest` asks (for the echo of what runs)."""
        return self.base + _manifest_path(repository, reference)

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest of ``repository:reference``, or None when the tag does not exist."""
        status, headers, body = self._request(
            _manifest_path(repository, reference), accept=MANIFEST_TYPES, scope=repository
        )
        if status == 404:
            return None
        if status != 200:
            raise SuiteError(f"registry {self.host} answered HTTP {status} for {repository}")
        document = json.loads(body)
        if "config" not in document:
            raise SuiteError(
                f"{repository}:{reference} is a multi-platform index, not an image: "
                "this suite pushes single-platform images"
            )
        digest = headers.get("Docker-Content-Digest") or _sha256(body)
        return Manifest(digest=digest, config_digest=document["config"]["digest"])

    def labels(self, repository: str, manifest: Manifest) -> dict[str, str]:
        """The image's labels, read from its config blob."""
        status, _, body = self._request(
            f"/v2/{repository}/blobs/{manifest.config_digest}", accept="*/*", scope=repository
        )
        if status != 200:
            raise SuiteError(f"registry {self.host} answered HTTP {status} for a config blob")
        config: dict[str, Any] = json.loads(body)
        return dict((config.get("config") or {}).get("Labels") or {})

    # -- HTTP with the two auth schemes -------------------------------------------------------
    def _request(self, path: str, accept: str, scope: str | None) -> tuple[int, Any, bytes]:
        status, headers, body = self._send(path, accept)
        if status == 401 and self._authenticate(headers.get("WWW-Authenticate", ""), scope):
            status, headers, body = self._send(path, accept)
        if status == 401:
            who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
            raise SuiteError(
                f"registry {self.host} refused {who}: check CONTAINER_REGISTRY_USERNAME "
                "and CONTAINER_REGISTRY_PASSWORD"
            )
        return status, headers, body

    def _send(self, path: str, accept: str) -> tuple[int, Any, bytes]:
        request = urllib.request.Request(self.base + path, headers={"Accept": accept})
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        elif self.credentials:
            request.add_header("Authorization", _basic(self.credentials))
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise SuiteError(
                f"registry {self.host} is not reachable ({reason}): start it "
                "(`invoke registry` for the embedded one) or fix CONTAINER_REGISTRY_HOST"
            ) from None

    def _authenticate(self, challenge: str, scope: str | None) -> bool:
        """Bearer-token flow: ask the realm for a token with our credentials."""
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = f"repository:{scope}:pull"
        request = urllib.request.Request(params["realm"] + "?" + urllib.parse.urlencode(query))
        if self.credentials:
            request.add_header("Authorization", _basic(self.credentials))
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError:
            return False
        self._token = answer.get("token") or answer.get("access_token")
        return bool(self._token)


def _manifest_path(repository: str, reference: str) -> str:
    return f"/v2/{repository}/manifests/{reference}"


def scheme(host: str) -> str:
    """Plain HTTP only for a registry on this machine (as the Docker daemon allows)."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    return "http" if name in ("localhost", "[::1]") or name.startswith("127.") else "https"


def _basic(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _sha256(body: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(body).hexdigest()
