"""The tests' one fake forge: GitHub's and GitLab's comment APIs on 127.0.0.1, and the CI
environments that point the report step at it (test_report.py, test_forge_pagination.py).

``kind="plain"``: pages by number, no paging headers (the client pages while a page is full).
Otherwise it pages the way GitHub's and GitLab's REST APIs do:

GitHub (``/repos/OWNER/REPO/issues/N/comments``): ``per_page`` at most 100, ``Link`` with
``prev``/``next``/``last``/``first`` only when there is more than one page, and the links name
the repository by id (``/repositories/ID/issues/N/comments?per_page=..&page=..``), not by the
path the client asked: a client must follow the link, not rebuild the URL.
GitLab (``/projects/ID/merge_requests/IID/notes``): ``per_page`` at most 100, ``Link`` and
``X-Page``/``X-Per-Page``/``X-Next-Page`` (empty on the last page)/``X-Total-Pages``.

``hostile`` changes what the pages say: ``"loop"`` (page 2's next link is page 1),
``"endless"`` (always a next page), ``"elsewhere"`` (the next link is on ``elsewhere``, another
server), ``"gitlab-no-link"`` (only the ``X-`` headers, as a proxy that drops ``Link``).
``cap`` is the page size the server gives whatever ``per_page`` asks (an API default).
A token containing ``forbidden`` gets a 403 that echoes it, as a careless proxy might.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cicd.forge import MARKER
from tests.support.fake_http import JsonHandler

BOT = {"login": "ci-bot", "id": 7}
REPO_ID = 1300192
# After this many requests the server answers 410: a client that does not stop by itself
# fails instead of looping for ever.
GIVE_UP = 150


REPORT_TEXT = (
    "# Experiment Report (abc)\n\n| train.lr | 0.1 | 0.3 |\n\n"
    '| ![t (main)](report/main_t.png "t (main)") | ![t](report/workspace_t.png "t") |\n'
)


class PagingForge(ThreadingHTTPServer):
    def __init__(
        self,
        kind: str,
        comments: list[dict[str, Any]],
        cap: int = 100,
        hostile: str = "",
        next_id: int = 10_000,
    ):
        super().__init__(("127.0.0.1", 0), _Handler)  # a port the OS assigns, kept
        self.kind, self.comments, self.cap, self.hostile = kind, comments, cap, hostile
        self.requests: list[dict[str, Any]] = []
        self.elsewhere = ""  # base URL of the other server for hostile="elsewhere"
        self.next_id = next_id

    def marked(self) -> list[dict[str, Any]]:
        """The comments that carry the report's marker."""
        return [c for c in self.comments if MARKER in c["body"]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self) -> list[str]:
        return [r["path"] for r in self.requests if r["method"] == "GET"]

    def page_requests(self) -> list[int]:
        """The page numbers the client asked for, in order."""
        pages = []
        for request in self.requests:
            query = parse_qs(urlsplit(request["path"]).query)
            if request["method"] == "GET" and "page" in query:
                pages.append(int(query["page"][0]))
        return pages


class _Handler(JsonHandler):
    server: PagingForge

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        forge = self.server
        forge.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        if len(forge.requests) > GIVE_UP:
            return self.reply(410, {"message": "the client never stopped paging"})
        token = self.headers.get("Authorization", "") + self.headers.get("PRIVATE-TOKEN", "")
        if "forbidden" in token:
            # Echo the credential back, as a careless proxy might: it must still be masked.
            return self.reply(403, {"message": f"Resource not accessible with {token}"})
        url = urlsplit(self.path)
        last = url.path.rstrip("/").rsplit("/", 1)[-1]
        if last == "user":
            return self.reply(200, BOT)
        if last in ("comments", "notes") and self.command == "GET":
            return self._page(url.path, parse_qs(url.query))
        if last in ("comments", "notes") and self.command == "POST":
            comment = {
                "id": forge.next_id,
                "body": body["body"],
                "html_url": f"{forge.url}/c/{forge.next_id}",
                "user": {"login": BOT["login"]},  # GitHub's author field
                "author": {"id": BOT["id"]},  # GitLab's
            }
            forge.next_id += 1
            forge.comments.append(comment)
            return self.reply(201, comment)
        if self.command in ("PATCH", "PUT") and last.isdigit():
            for comment in forge.comments:
                if comment["id"] == int(last):
                    comment["body"] = body["body"]
                    return self.reply(200, comment)
        return self.reply(404, {"message": "Not Found"})

    def _page(self, path: str, query: dict[str, list[str]]) -> None:
        forge = self.server
        size = min(int(query.get("per_page", ["30"])[0]), 100, forge.cap)
        page = int(query.get("page", ["1"])[0])
        total_pages = max(1, -(-len(forge.comments) // size))
        items = forge.comments[(page - 1) * size : page * size]
        if forge.hostile == "endless":
            total_pages = page + 1
            items = [{"id": -page, "body": "chatter"}] * size
        base = self._link_base(path)

        def link(number: int) -> str:
            return f"{base}?per_page={size}&page={number}"

        next_page = page + 1 if page < total_pages else None
        if forge.hostile == "loop" and page == 2:
            next_page = 1
        relations = []
        if page > 1:
            relations.append((link(page - 1), "prev"))
        if next_page is not None:
            target = link(next_page)
            if forge.hostile == "elsewhere":
                target = forge.elsewhere + urlsplit(target).path + "?" + urlsplit(target).query
            relations.append((target, "next"))
        if total_pages > 1:
            relations += [(link(total_pages), "last"), (link(1), "first")]
        headers = {}
        if forge.kind == "plain":
            relations = []
        if relations and not (forge.kind == "gitlab" and forge.hostile == "gitlab-no-link"):
            headers["Link"] = ", ".join(f'<{url}>; rel="{rel}"' for url, rel in relations)
        if forge.kind == "gitlab":
            headers.update(
                {
                    "X-Page": str(page),
                    "X-Per-Page": str(size),
                    "X-Next-Page": str(next_page or ""),
                    "X-Prev-Page": str(page - 1 if page > 1 else ""),
                    "X-Total": str(len(forge.comments)),
                    "X-Total-Pages": str(total_pages),
                }
            )
        payload = json.dumps(items).encode()
        self.send_response(200)
        for key, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _link_base(self, path: str) -> str:
        """GitHub links name the repository by id; GitLab links repeat the path."""
        if self.server.kind == "github" and "/repos/" in path:
            api, rest = path.split("/repos/", 1)
            rest = rest.split("/", 2)[2]  # drop OWNER/REPO
            path = f"{api}/repositories/{REPO_ID}/{rest}"
        return self.server.url + path

    do_GET = do_POST = do_PATCH = do_PUT = _handle


@contextmanager
def serving(forge: PagingForge) -> Iterator[PagingForge]:
    thread = threading.Thread(target=forge.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield forge
    finally:
        forge.shutdown()
        forge.server_close()
        thread.join()


def report_md(directory: Path, text: str = REPORT_TEXT) -> Path:
    """The report the step publishes, written in ``directory``."""
    path = directory / "report.md"
    path.write_text(text)
    return path


def github_env(forge: PagingForge, tmp_path: Path, token: str, **extra: str) -> dict[str, str]:
    """A GitHub Actions pull-request job whose API is ``forge``."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": f"{forge.url}/api",
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_REPOSITORY": "owner/proj",
        "GITHUB_RUN_ID": "99",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_TOKEN": token,
        **extra,
    }


def gitlab_env(forge: PagingForge, token: str, **extra: str) -> dict[str, str]:
    """A GitLab merge-request pipeline job whose API is ``forge``."""
    return {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{forge.url}/api/v4",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "3",
        "CI_JOB_URL": "https://gitlab.example/g/p/-/jobs/5",
        "GITLAB_TOKEN": token,
        **extra,
    }
