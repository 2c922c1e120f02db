"""The one HTTP layer of the registry and forge clients: credentials, redirects, retries, deadlines.

Built on httpx (a BentoML dependency, so already in the environment), with its own redirect
following because the decision that matters is per hop: credential headers go only to the
origin (scheme, host, port) the request was made for, and a redirect from https to plain http
is refused outright. Transient failures (429, 5xx, resets, truncated bodies, timeouts) are
retried with exponential backoff and jitter, honouring ``Retry-After``; each retry is echoed
through the Runner. Every call has a deadline covering all its attempts. Every failure is a
one-line :class:`SuiteError` that says what to do.
"""

from __future__ import annotations

import email.utils
import json
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from cicd.errors import SuiteError
from cicd.shell import Runner

DEFAULT_TIMEOUT = 60.0
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_BODY = 16 * 1024 * 1024  # manifests, configs, comments: a larger answer is not one of ours
# POST creates something: after a reset or a gateway error (502, 504) we cannot know whether
# it did, so only answers that say "not done" (429, 503) are retried for it.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
NOT_DONE = frozenset({429, 503})  # answers that say the request was not processed


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # the first try and three retries
    backoff: float = 1.0  # first wait (seconds), doubled after each retry
    max_wait: float = 30.0  # longest single wait, Retry-After included


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class Response:
    method: str
    url: str
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self, what: str) -> Any:
        """The body as JSON, or a one-line error naming ``what`` answered something else."""
        try:
            return json.loads(self.body)
        except ValueError:
            kind = self.headers.get("content-type", "no content type").split(";")[0]
            start = self.body[:60].decode(errors="replace").replace("\n", " ")
            raise SuiteError(
                f"{what} answered {self.method} {self.url} with HTTP {self.status} {kind} "
                f"instead of JSON ({start!r}): a proxy or login page may be in the way; "
                "check the address and the network"
            ) from None


class _Transient(Exception):
    """A failure worth another attempt (reset, truncated body, timeout)."""


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``: what the browser same-origin rule compares."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        raise SuiteError(f"{url!r} has an invalid port: fix the address") from None
    return parts.scheme, (parts.hostname or "").lower(), port


class Http:
    """Sends requests for one client (``name``, e.g. ``registry ghcr.io``) through a Runner."""

    def __init__(
        self,
        runner: Runner,
        name: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        policy: RetryPolicy = DEFAULT_POLICY,
        unreachable_hint: str = "check the address and the network",
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.runner = runner
        self.name = name
        self.timeout = timeout
        self.policy = policy
        self.unreachable_hint = unreachable_hint
        self.sleep = sleep
        self._client: httpx.Client | None = None

    def note(self, method: str) -> str:
        """What the echo of a request adds, so that it (and a dry run) says a retry would
        apply; nothing where none does (a POST, a policy of one attempt)."""
        if method not in IDEMPOTENT or self.policy.attempts < 2:
            return ""
        return (
            f"retried on 429, 5xx, resets and timeouts: up to {self.policy.attempts} "
            f"attempts within {self.timeout:g} s"
        )

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        credentials: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> Response:
        """One request with its retries; ``credentials`` are headers for ``url``'s origin only."""
        deadline = time.monotonic() + self.timeout
        attempt = 1
        while True:
            retry_after = 0.0
            try:
                response = self._follow(
                    method, url, headers or {}, credentials or {}, content, deadline
                )
            except _Transient as failure:
                if method not in IDEMPOTENT:
                    raise SuiteError(
                        f"{self.name}: {method} {url} failed after it was sent ({failure}); not "
                        "retried since it may have taken effect: check, then run again"
                    ) from None
                reason = str(failure)
            else:
                if response.status != 429 and response.status < 500:
                    return response
                reason = f"HTTP {response.status}"
                if method not in IDEMPOTENT and response.status not in NOT_DONE:
                    raise SuiteError(
                        f"{self.name}: {method} {url} answered {reason} after it was sent; not "
                        "retried since it may have taken effect: check, then run again"
                    )
                retry_after = _retry_after(response.headers.get("retry-after"))
            if attempt >= self.policy.attempts:
                raise SuiteError(
                    f"{self.name}: {method} {url} failed {attempt} times (last: {reason}): "
                    "the service or a proxy before it is failing; run again later"
                )
            if retry_after > self.policy.max_wait:
                raise SuiteError(
                    f"{self.name} asks to retry {method} {url} after {retry_after:g} s (over "
                    f"{self.policy.max_wait:g} s): it is rate-limiting; run again later"
                )
            wait = max(retry_after, self._backoff(attempt))
            if time.monotonic() + wait > deadline:
                raise self._late(method, url, reason)
            self.runner.echo(
                f"retry {attempt}/{self.policy.attempts - 1} of {method} {url} in {wait:.1f} s "
                f"({reason})"
            )
            self.sleep(wait)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        # Equal jitter: half fixed, half random, so that parallel jobs do not retry in step.
        wait = min(self.policy.max_wait, self.policy.backoff * 2 ** (attempt - 1))
        return wait / 2 + random.random() * wait / 2

    def _late(self, method: str, url: str, reason: str) -> SuiteError:
        return SuiteError(
            f"{self.name}: {method} {url} not done within the {self.timeout:g} s deadline "
            f"(last: {reason}): raise suite.network_timeout in invoke.yaml, or run again later"
        )

    def _follow(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        credentials: Mapping[str, str],
        content: bytes | None,
        deadline: float,
    ) -> Response:
        """Send, following redirects; credentials only to the first origin, and never again
        once a hop left it."""
        first = origin(url)
        trusted = True
        for _ in range(MAX_REDIRECTS + 1):
            trusted = trusted and origin(url) == first
            sent = {**headers, **(credentials if trusted else {})}
            response = self._once(method, url, sent, content, deadline)
            if response.status not in REDIRECTS:
                return response
            location = response.headers.get("location")
            if not location:
                raise SuiteError(
                    f"{self.name} answered {method} {url} with HTTP {response.status} but no "
                    "Location: a proxy may be in the way; check the address"
                )
            target = urljoin(url, location)
            scheme = urlsplit(target).scheme
            if scheme not in ("http", "https"):
                raise SuiteError(
                    f"{self.name} redirected {method} {url} to a {scheme}: URL: refused; "
                    "check the address"
                )
            if urlsplit(url).scheme == "https" and scheme == "http":
                raise SuiteError(
                    f"{self.name} redirected {method} {url} from https to plain http "
                    f"({urlsplit(target).netloc}): refused, nothing goes out in clear; "
                    "check the service's configuration"
                )
            if response.status == 303:
                method, content = "GET", None
            url = target
        raise SuiteError(f"{self.name}: {method} {url}: over {MAX_REDIRECTS} redirects: refused")

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        deadline: float,
    ) -> Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._late(method, url, "no time left")
        try:
            with self._http().stream(
                method, url, headers=dict(headers), content=content, timeout=remaining
            ) as answer:
                chunks, size = [], 0
                for chunk in answer.iter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise SuiteError(
                            f"{self.name} answered {method} {url} with over {MAX_BODY} bytes: "
                            "not an answer of this API; check the address"
                        )
                    if time.monotonic() > deadline:
                        raise _Transient("the answer did not end within the deadline")
                    chunks.append(chunk)
                return Response(method, url, answer.status_code, answer.headers, b"".join(chunks))
        except httpx.ConnectTimeout:
            raise _Transient("connection timed out") from None
        except httpx.ConnectError as error:
            # Refused or unknown host: retrying does not help, the address or the service is wrong.
            hint = self.unreachable_hint
            if "CERTIFICATE_VERIFY_FAILED" in str(error):
                hint = (
                    "its certificate is not trusted here; if a private CA issued it, set "
                    "SSL_CERT_FILE to a CA bundle that includes that CA (docs/settings.md)"
                )
            raise SuiteError(
                self.runner.mask(f"{self.name} is not reachable ({error}): {hint}")
            ) from None
        except httpx.TimeoutException:
            raise _Transient("timed out") from None
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as error:
            raise _Transient(f"connection broken: {error or type(error).__name__}") from None
        except httpx.HTTPError as error:
            raise SuiteError(
                self.runner.mask(f"{self.name}: {method} {url} failed ({error}): check the address")
            ) from None

    def close(self) -> None:
        """Close the connections (a client made per call must not leave sockets behind)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            # The system's CA store (not certifi's): machines behind a TLS-intercepting proxy
            # trust its CA there, as urllib and the docker client do. OpenSSL reads
            # SSL_CERT_FILE / SSL_CERT_DIR here: a registry with a private CA is trusted by
            # pointing SSL_CERT_FILE at a bundle that includes that CA (docs/settings.md).
            self._client = httpx.Client(verify=ssl.create_default_context(), follow_redirects=False)
        return self._client


def _retry_after(value: str | None) -> float:
    """Seconds asked by ``Retry-After`` (delta-seconds or an HTTP date); 0 when absent or bad."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())
