"""The registry's HTTP API (Distribution v2): what a tag points to, its labels, moving a tag.

Used to verify a push (both tags resolve to the digest of the smoke-tested image), to skip a
publish whose image is already there, and to point ``latest`` at an image already in the
registry (a manifest PUT: no layer moves). Speaks basic auth and the bearer-token flow that
GHCR, GitLab and Artifact Registry use, through the hardened layer in :mod:`cicd.http`.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from cicd.errors import SuiteError
from cicd.http import DEFAULT_TIMEOUT, Http, NotReplayed, Response, origin
from cicd.retry import REQUESTS, RetryPolicy, Transient
from cicd.settings import Settings
from cicd.shell import Runner

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_TYPES = f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"  # the Accept header of a manifest GET
TAGS_PER_PAGE = 1000
MAX_PAGES = 100  # of tags (100,000 tags): a longer list is a server's loop, not a repository


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Manifest:
    digest: str  # the manifest digest: what `image@sha256:...` pulls
    config_digest: str  # the image ID of the pushed image (sha256 of its config)
    # The exact bytes and type, to PUT the same manifest under another tag.
    raw: bytes = field(default=b"", repr=False, compare=False)
    media_type: str = field(default="", compare=False)


def credentials(settings: Settings) -> Credentials | None:
    """The configured registry user and password, or None (anonymous)."""
    if settings.registry_username and settings.registry_password:
        return Credentials(settings.registry_username, settings.registry_password)
    return None


class RegistryClient:
    """Client of one registry host.

    With a ``runner``, every request is shown through it (and only shown in a dry run, where
    reads return None); without one, the caller shows the call.
    """

    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        *,
        runner: Runner | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        policy: RetryPolicy = REQUESTS,
    ):
        self.host = host
        self.base = f"{scheme(host)}://{host}"
        self.credentials = credentials
        self.runner = runner
        self._tokens: dict[str, str] = {}  # by scope: a pull token cannot push
        hint = "start it (`invoke registry` for the embedded one) or fix CONTAINER_REGISTRY_HOST"
        self.http = Http(
            runner or Runner(), f"registry {host}", timeout=timeout, policy=policy,
            unreachable_hint=hint,
        )  # fmt: skip
        if runner and credentials:
            runner.add_secret(credentials.password, username=credentials.username)

    def ping(self) -> None:
        """Fail with what to do when the registry does not answer or refuses the credentials."""
        response = self._show("GET", "/v2/", lambda: self._request("GET", "/v2/", None))
        if response is not None and response.status != 200:
            raise SuiteError(f"registry {self.host} answered HTTP {response.status} to /v2/")

    def manifest_url(self, repository: str, reference: str) -> str:
        """Where :meth:`manifest` asks (for the echo of what runs)."""
        return self.base + _manifest_path(repository, reference)

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest of ``repository:reference``, or None when the tag does not exist."""
        path = _manifest_path(repository, reference)
        response = self._show(
            "GET", path, lambda: self._request("GET", path, repository, accept=MANIFEST_TYPES)
        )
        if response is None or response.status == 404:
            return None
        if response.status != 200:
            raise SuiteError(
                f"registry {self.host} answered HTTP {response.status} for {repository}"
            )
        document = response.json(f"registry {self.host}")
        if not isinstance(document, dict) or "config" not in document:
            raise SuiteError(
                f"{repository}:{reference} is a multi-platform index or not an image: "
                "this suite pushes single-platform images"
            )
        digest = content_digest(response.body)
        if _is_digest(reference) and digest != reference:
            raise SuiteError(
                f"registry {self.host} sent a manifest of {repository}@{reference} whose content "
                f"does not match the digest asked ({digest}): something in between altered it"
            )
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise SuiteError(
                f"registry {self.host} sent a manifest of {repository}:{reference} whose content "
                f"does not match its digest {claimed}: something in between altered it"
            )
        media_type = document.get("mediaType") or response.headers.get("content-type", "")
        return Manifest(digest, document["config"]["digest"], response.body, media_type)

    def labels(self, repository: str, manifest: Manifest) -> dict[str, str]:
        """The image's labels, read from its config blob (checked against its digest)."""
        body = self.blob(repository, manifest.config_digest, what="the config blob")
        if body is None:
            return {}
        config: Any = _json(body, f"the config blob of {repository}")
        labels = (config.get("config") or {}).get("Labels") if isinstance(config, dict) else None
        return dict(labels or {})

    def blob(self, repository: str, digest: str, what: str = "a blob") -> bytes | None:
        """The bytes of blob ``digest``, checked against it (None in a dry run)."""
        path = f"/v2/{repository}/blobs/{digest}"
        response = self._show("GET", path, lambda: self._request("GET", path, repository))
        if response is None:
            return None
        if response.status != 200:
            raise SuiteError(f"registry {self.host} answered HTTP {response.status} for {what}")
        if content_digest(response.body) != digest:
            raise SuiteError(
                f"{what} of {repository} from registry {self.host} does not match its "
                f"digest {digest}: something in between altered it"
            )
        return response.body

    def tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` (``/v2/<name>/tags/list``, every page); [] when it has
        none or does not exist, and in a dry run."""
        path = f"/v2/{repository}/tags/list?n={TAGS_PER_PAGE}"
        found: list[str] = []
        fetched: set[str] = set()
        while path:
            fetched.add(path)
            response = self._show("GET", path, lambda p=path: self._request("GET", p, repository))
            if response is None or response.status == 404:
                return found
            if response.status != 200:
                raise SuiteError(
                    f"registry {self.host} answered HTTP {response.status} listing the tags "
                    f"of {repository}"
                )
            document = response.json(f"registry {self.host}")
            found += list((document if isinstance(document, dict) else {}).get("tags") or [])
            path = _next_page(response.headers.get("Link", ""))
            if path and path in fetched:
                raise SuiteError(
                    f"registry {self.host} names {path} as the next page of the tags of "
                    f"{repository}, a page already read: a broken server or proxy; stopped"
                )
            if path and len(fetched) >= MAX_PAGES:
                raise SuiteError(
                    f"registry {self.host} lists over {MAX_PAGES} pages of tags of {repository} "
                    f"({MAX_PAGES * TAGS_PER_PAGE} tags): stopped, a server's loop is likelier"
                )
        return found

    def upload_blob(self, repository: str, content: bytes) -> str:
        """Upload ``content`` as a blob (POST then PUT, monolithic); return its digest.

        The PUT is never sent twice: the registry closes the upload session when it arrives,
        so a replay after a lost answer meets a 404. When its answer is lost (or an error),
        the blob is looked up: there, the upload is done; else a new session (POST) starts,
        as the retry policy allows. Only for the suite's small records (a tag's history):
        images go by `docker push`."""
        digest = content_digest(content)
        start = f"/v2/{repository}/blobs/uploads/"
        shown = f"{start}<upload>?digest={digest}"  # the upload's own URL: an opaque token
        if self.runner is not None and self.runner.dry:
            self._show("POST", start, lambda: None)
            self._show("PUT", shown, lambda: None)
            return digest

        def attempt() -> str:
            response = self._show("POST", start, lambda: self._request("POST", start, repository))
            assert response is not None
            location = response.headers.get("Location")
            if response.status != 202 or not location:
                raise SuiteError(
                    f"registry {self.host} answered HTTP {response.status} to POST {start}: "
                    "check that the user may push"
                )
            url = urljoin(self.base + start, location)
            url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
            try:
                put = self._show(
                    "PUT", shown,
                    lambda: self._request(
                        "PUT", url, repository, content=content,
                        content_type="application/octet-stream", replay=False,
                    ),
                )  # fmt: skip
            except NotReplayed as failure:
                lost = failure.reason  # not its message: the URL holds the session's state
            else:
                assert put is not None
                if put.status == 201:
                    return digest
                if put.status in (401, 403):
                    raise SuiteError(
                        f"registry {self.host} answered HTTP {put.status} to the upload of "
                        f"{digest}: check that the user may push"
                    )
                lost = f"HTTP {put.status}"
            if self._has_blob(repository, digest):
                return digest  # it arrived; only its answer was lost
            refused = SuiteError(
                f"registry {self.host} did not confirm the upload of {digest} ({lost}); it is "
                "not in the registry: run again later"
            )
            raise Transient(f"upload not confirmed: {lost}", refused)

        return self.http.runner.retry(
            attempt, policy=self.http.policy, what=f"upload of {digest} to {repository}"
        )

    def _has_blob(self, repository: str, digest: str) -> bool:
        """Whether blob ``digest`` is in ``repository``, with the right content."""
        path = f"/v2/{repository}/blobs/{digest}"
        response = self._show("GET", path, lambda: self._request("GET", path, repository))
        return (
            response is not None
            and response.status == 200
            and content_digest(response.body) == digest
        )

    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]] | None:
        """The manifests whose ``subject`` is ``digest`` (OCI 1.1 referrers API), or None
        when the registry has no such API (Distribution 2.8 answers 404): then artifacts
        about an image go under the ``sha256-<hex>.<kind>`` tag scheme instead."""
        path = f"/v2/{repository}/referrers/{digest}"
        index_type = "application/vnd.oci.image.index.v1+json"
        response = self._show(
            "GET", path, lambda: self._request("GET", path, repository, accept=index_type)
        )
        if response is None or response.status != 200:
            return None
        if not response.headers.get("content-type", "").startswith(index_type):
            return None  # a catch-all answer (a proxy's page), not the API
        document = response.json(f"registry {self.host}")
        manifests = document.get("manifests") if isinstance(document, dict) else None
        return [item for item in manifests or [] if isinstance(item, dict)]

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str | None:
        """Point ``tag`` at ``manifest`` (already in the registry); return the digest."""
        path = _manifest_path(repository, tag)
        send = lambda: self._request(  # noqa: E731
            "PUT", path, repository, content=manifest.raw, content_type=manifest.media_type
        )
        response = self._show("PUT", path, send)
        if response is None:
            return None
        if response.status not in (200, 201):
            raise SuiteError(
                f"registry {self.host} answered HTTP {response.status} to PUT {repository}:{tag}:"
                " check that the user may push"
            )
        return response.headers.get("Docker-Content-Digest") or manifest.digest

    # -- HTTP with the two auth schemes -------------------------------------------------------
    def _show(self, method: str, path: str, send: Any) -> Response | None:
        if self.runner is None:
            return send()
        return self.runner.call(self.curl(method, path), send, note=self.http.note(method))

    def curl(self, method: str, path: str) -> list[str]:
        """The request as a curl line a user can paste: with credentials, curl asks for the
        password (``--user NAME``), so none is ever shown."""
        user = ["--user", self.credentials.username] if self.credentials else []
        return ["curl", "--fail", *user, "--request", method, self.base + path]

    def _request(
        self,
        method: str,
        path: str,
        repository: str | None,
        *,
        accept: str = "*/*",
        content: bytes | None = None,
        content_type: str = "",
        replay: bool | None = None,
    ) -> Response:
        """One call, under one deadline: the request, a token round trip, the request again."""
        deadline = time.monotonic() + self.http.timeout
        actions = "pull" if method in ("GET", "HEAD") else "pull,push"
        scope = f"repository:{repository}:{actions}" if repository else ""
        headers = {"Accept": accept, **({"Content-Type": content_type} if content_type else {})}

        url = path if path.startswith(("http://", "https://")) else self.base + path
        # An upload's Location may name another host (storage): no credentials go there.
        ours = origin(url) == origin(self.base)

        def send() -> Response:
            return self.http.send(
                method, url, headers=headers, credentials=self._auth(scope) if ours else {},
                content=content, deadline=deadline, replay=replay,
            )  # fmt: skip

        response = send()
        if response.status == 401 and self._authenticate(
            response.headers.get("WWW-Authenticate", ""), scope, deadline
        ):
            response = send()
        if response.status == 401:
            who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
            challenge = response.headers.get("WWW-Authenticate", "")
            if 'error="insufficient_scope"' in challenge and repository:
                # The password was right (the token service gave a token) but not the rights.
                raise SuiteError(
                    f"registry {self.host} did not grant {who} {actions} on {repository}: "
                    f"check that this user may {actions.split(',')[-1]} there"
                )
            raise SuiteError(
                f"registry {self.host} refused {who}: check CONTAINER_REGISTRY_USERNAME "
                "and CONTAINER_REGISTRY_PASSWORD"
            )
        return response

    def _auth(self, scope: str) -> dict[str, str]:
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        return {"Authorization": _basic(self.credentials)} if self.credentials else {}

    def _authenticate(self, challenge: str, scope: str, deadline: float | None = None) -> bool:
        """Bearer-token flow: ask the challenge's realm for a token, if the realm is safe."""
        if not challenge.lower().startswith("bearer"):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.get("realm")
        if not realm:
            raise SuiteError(
                f"registry {self.host} asks for a token but names no realm to get it from: "
                "a proxy may be rewriting its answers; check CONTAINER_REGISTRY_HOST"
            )
        problem = realm_problem(self.base, realm)
        if problem:
            raise SuiteError(
                f"registry {self.host} names the token realm {realm!r}: refused ({problem}); "
                "check CONTAINER_REGISTRY_HOST"
            )
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        credentials = {"Authorization": _basic(self.credentials)} if self.credentials else {}
        response = self.http.send(
            "GET", url, headers={"Accept": "application/json"}, credentials=credentials,
            deadline=deadline,
        )  # fmt: skip
        if response.status in (401, 403):
            return False
        what = f"the token service of registry {self.host}"
        if response.status != 200:
            raise SuiteError(f"{what} answered HTTP {response.status}: run again later")
        answer = response.json(what)
        answer = answer if isinstance(answer, dict) else {}
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise SuiteError(f"{what} answered without a token: check CONTAINER_REGISTRY_HOST")
        if self.runner:
            self.runner.add_secret(token)
        self._tokens[scope] = token
        return True


def realm_problem(registry_base: str, realm: str) -> str | None:
    """Why credentials must not go to ``realm``, or None when it is safe.

    https anywhere (Docker Hub's realm is auth.docker.io); plain http only back to the
    registry itself when that is a registry on this machine (so already plain http).
    """
    parts = urlsplit(realm)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http":
        local = urlsplit(registry_base).scheme == "http"
        if local and origin(realm) == origin(registry_base):
            return None
        return "plain http only for a registry on this machine, at its own address"
    return f"only https realms are accepted, not {parts.scheme or 'relative'} URLs"


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise SuiteError(f"{what} is not JSON: something in between altered it") from None


def _next_page(link: str) -> str:
    """The path of the next page named by a ``Link: <...>; rel="next"`` header, or ""."""
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    if not match:
        return ""
    parts = urlsplit(match.group(1))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _is_digest(reference: str) -> bool:
    """Whether a manifest reference is a digest (``algorithm:hex``) rather than a tag."""
    return re.fullmatch(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}", reference) is not None


def _manifest_path(repository: str, reference: str) -> str:
    return f"/v2/{repository}/manifests/{reference}"


def scheme(host: str) -> str:
    """Plain HTTP only for a registry on this machine (as the Docker daemon allows)."""
    match = re.fullmatch(r"\[(?P<v6>[^\]]+)\](:\d+)?|(?P<name>[^:]+)(:\d+)?", host)
    name = (match.group("v6") or match.group("name")) if match else host
    if name == "localhost":
        return "http"
    try:
        return "http" if ipaddress.ip_address(name).is_loopback else "https"
    except ValueError:  # a name: 127.evil.example is not this machine
        return "https"


def _basic(credentials: Credentials | None) -> str:
    assert credentials
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def content_digest(body: bytes) -> str:
    """The OCI digest of ``body`` (``sha256:<hex>``): what a blob or a manifest is named by."""
    return "sha256:" + hashlib.sha256(body).hexdigest()
