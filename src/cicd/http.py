"""The one HTTP layer of the registry and forge clients: credentials, redirects, retries, deadlines.

Built on httpx (a BentoML dependency, so already in the environment), with its own redirect
following because the decision that matters is per hop: credential headers go only to the
origin (scheme, host, port) the request was made for, and a redirect from https to plain http
is refused outright. Transient failures (429, 5xx, resets, truncated bodies, timeouts) are
retried by the suite's one retry loop (:mod:`cicd.retry`, through the Runner, which prints
each retry), honouring ``Retry-After``. Every call has a deadline covering all its attempts.
Every failure is a one-line :class:`SuiteError` that says what to do.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from cicd.errors import NotReplayed, SuiteError
from cicd.retry import REQUESTS, GiveUp, RetryPolicy, Transient
from cicd.shell import Runner

DEFAULT_TIMEOUT = 60.0
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_BODY = 16 * 1024 * 1024  # manifests, configs, comments: a larger answer is not one of ours
# POST creates something: after a reset or a gateway error (502, 504) we cannot know whether
# it did, so only answers that say "not done" (429, 503) are retried for it.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
NOT_DONE = frozenset({429, 503})  # answers that say the request was not processed
RETRIED_ON = "429, 5xx, resets and timeouts"  # an idempotent call's retries, as the note says


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


def loopback(url: str) -> bool:
    """Whether ``url`` names this machine (localhost, 127.0.0.0/8, ::1): never via a proxy."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        policy: RetryPolicy = REQUESTS,
        unreachable_hint: str = "check the address and the network",
    ):
        self.runner = runner
        self.name = name
        self.timeout = timeout
        self.policy = policy
        self.unreachable_hint = unreachable_hint
        self._clients: dict[bool, httpx.Client] = {}  # by "direct" (no proxy)

    def note(self, method: str) -> str:
        """What the echo of a request adds, so that it (and a dry run) says which retries
        would apply: a POST only on answers that say it was not done; nothing where no retry
        applies (a policy of one attempt)."""
        on = RETRIED_ON if method in IDEMPOTENT else " and ".join(map(str, sorted(NOT_DONE)))
        return self.policy.note(on, within=self.timeout)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        credentials: Mapping[str, str] | None = None,
        content: bytes | None = None,
        deadline: float | None = None,
        replay: bool | None = None,
    ) -> Response:
        """One request with its retries; ``credentials`` are headers for ``url``'s origin only.

        ``deadline`` (a ``time.monotonic()`` time): the caller's, when the call is one of several
        under one deadline (a token round trip); else ``timeout`` from now. ``replay``: whether
        the request may be sent again after it was sent (by default: idempotent methods); an
        upload PUT may not, its session closes on its first arrival."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        replayable = method in IDEMPOTENT if replay is None else replay

        def attempt() -> Response:
            try:
                response = self._follow(
                    method, url, headers or {}, credentials or {}, content, deadline
                )
            except _Transient as failure:
                if not replayable:
                    raise NotReplayed(
                        f"{self.name}: {method} {url} failed after it was sent ({failure}); not "
                        "retried since it may have taken effect: check, then run again",
                        str(failure),
                    ) from None
                raise Transient(str(failure)) from None
            if response.status != 429 and response.status < 500:
                return response
            reason = f"HTTP {response.status}"
            if not replayable and response.status not in NOT_DONE:
                raise NotReplayed(
                    f"{self.name}: {method} {url} answered {reason} after it was sent; not "
                    "retried since it may have taken effect: check, then run again",
                    reason,
                )
            retry_after = _retry_after(response.headers.get("retry-after"))
            raise Transient(reason, wait_at_least=retry_after)

        def give_up(stop: GiveUp) -> SuiteError:
            reason = stop.failure.reason
            if stop.why == "wait":
                return SuiteError(
                    f"{self.name} asks to retry {method} {url} after "
                    f"{stop.failure.wait_at_least:g} s (over {self.policy.wait_max:g} s): it "
                    "is rate-limiting; run again later"
                )
            if stop.why == "deadline":
                return self._late(method, url, reason)
            failed = f"failed {stop.attempts} times (last: " if stop.attempts > 1 else "failed ("
            return SuiteError(
                f"{self.name}: {method} {url} {failed}{reason}): the service or a proxy before "
                "it is failing; run again later"
            )

        return self.runner.retry(
            attempt,
            policy=self.policy,
            what=f"{method} {url}",
            give_up=give_up,
            deadline=deadline,
        )

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
        client = self._http(url)
        # httpx's timeout is per phase and per read (connect, each write, each read may take
        # `remaining`): the watchdog cuts the connection at the deadline instead, from before
        # the request is sent, so a peer trickling its headers or body ends by then too.
        watchdog = _Watchdog(lambda request: _pooled_stream(client, url, request))
        timer = threading.Timer(remaining, watchdog.expire)
        timer.daemon = True
        timer.start()
        try:
            with client.stream(
                method,
                url,
                headers=dict(headers),
                content=content,
                timeout=remaining,
                extensions={"trace": watchdog.trace},
            ) as answer:
                # Its stream, in case the trace did not give it (see _pooled_stream).
                watchdog.attach(answer.extensions.get("network_stream"))
                chunks, size = [], 0
                for chunk in answer.iter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise SuiteError(
                            f"{self.name} answered {method} {url} with over {MAX_BODY} "
                            "bytes: not an answer of this API; check the address"
                        )
                    if time.monotonic() > deadline:
                        raise _Transient("the answer did not end within the deadline")
                    chunks.append(chunk)
                watchdog.finish()  # before the connection goes back to the pool
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
            if watchdog.expired:
                raise _Transient("the answer did not end within the deadline") from None
            raise _Transient(f"connection broken: {str(error) or type(error).__name__}") from None
        except httpx.HTTPError as error:
            raise SuiteError(
                self.runner.mask(f"{self.name}: {method} {url} failed ({error}): check the address")
            ) from None
        finally:
            watchdog.finish()
            timer.cancel()

    def close(self) -> None:
        """Close the connections (a client made per call must not leave sockets behind)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _http(self, url: str) -> httpx.Client:
        """The client for ``url``: through the environment's proxy (HTTP_PROXY, NO_PROXY...),
        except for this machine, which is always reached directly: a proxy in between would
        see a local registry's Basic credential in clear."""
        direct = loopback(url)
        if direct not in self._clients:
            # The system's CA store (not certifi's): machines behind a TLS-intercepting proxy
            # trust its CA there, as urllib and the docker client do. OpenSSL reads
            # SSL_CERT_FILE / SSL_CERT_DIR here: a registry with a private CA is trusted by
            # pointing SSL_CERT_FILE at a bundle that includes that CA (docs/settings.md).
            self._clients[direct] = httpx.Client(
                verify=ssl.create_default_context(), follow_redirects=False, trust_env=not direct
            )
        return self._clients[direct]


class _Watchdog:
    """Cuts one call's connection at its deadline (:meth:`expire`, from a timer), whatever
    the call is doing then: a TLS handshake, sending, waiting for the status line and
    headers, reading the body. A read or write blocked on the socket returns at once.

    The socket comes from httpx's ``trace`` extension (:meth:`trace`): a new connection's
    when it is connected; a reused keep-alive connection's, which gives no connect event,
    from the connection pool when the request's headers are about to be sent (``locate``);
    failing both, from the answer once its headers arrived. The watchdog shuts down its own
    duplicate of the socket's descriptor: TLS detaches the plain socket object it wraps, and
    the duplicate still reaches the same connection."""

    def __init__(self, locate: Callable[[Any], Any]):
        self.locate = locate
        self.expired = False
        self._socket: socket.socket | None = None
        self._finished = False
        self._lock = threading.Lock()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event.endswith(".connect_tcp.complete"):
            self.attach(info.get("return_value"))
        elif event.endswith(".send_request_headers.started") and self._socket is None:
            self.attach(self.locate(info.get("request")))

    def expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            self._shut()

    def finish(self) -> None:
        """The call is over: the connection is no longer the watchdog's (the pool may give it
        to another call)."""
        with self._lock:
            self._finished = True
            if self._socket is not None:
                self._socket.close()  # the duplicate only: the connection stays open

    def attach(self, stream: Any) -> None:
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            if self._finished or self._socket is not None:
                return
            with contextlib.suppress(OSError):  # already closed: nothing to cut
                self._socket = socket.socket(fileno=os.dup(sock.fileno()))
            if self.expired:  # the deadline passed while it connected: cut it now
                self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)


def _pooled_stream(client: httpx.Client, url: str, request: Any) -> Any:
    """The network stream of the pooled connection httpcore chose for ``request`` (None when
    it cannot be found). httpx has no public way to this: its transport's pool lists the
    requests it serves and the connection of each, and a connection (an HTTP/1.1 one, or a
    proxy's, which wraps one) holds its stream. These are httpx's and httpcore's private
    names: should a release rename them, the stream is not found (the call is then cut only
    once its headers arrived, as before), and it never fails the request from inside httpx;
    test_transport's keep-alive deadline test says so."""
    try:
        transport = client._transport_for_url(httpx.URL(url))
        for pooled in list(transport._pool._requests):  # type: ignore[attr-defined]
            if pooled.request is request:
                connection = pooled.connection
                while getattr(connection, "_connection", None) is not None:
                    connection = connection._connection
                return connection._network_stream
    except AttributeError:
        pass
    return None


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
