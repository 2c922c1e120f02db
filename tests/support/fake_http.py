"""The base of the tests' fake HTTP servers (registries, GitHub, GitLab)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer ``status`` with ``body`` and ``headers`` (and its Content-Length)."""
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler whose subclasses answer with :meth:`reply`; no access log."""

    def reply(self, status: int, payload: object) -> None:
        send(self, status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def log_message(self, *args: object) -> None:  # keep the tests' output clean
        pass
