"""Publishing the experiment report from CI: one pull/merge-request comment, kept up to date.

Like CML's ``cml comment update``: the comment carries a hidden marker; the next run edits
that comment instead of adding another. On GitHub the report also goes to the job summary.

CI's variables are read by :func:`cicd.ci.places` (it receives the environment as a
Mapping, so tests pass a dict); :func:`ci_context` turns its answer into API endpoints. Every
HTTP request goes through the Runner (shown, dry-run aware); the token travels in a header
only and is registered as a secret so it is never printed.

Images: the report links its plots relatively (``report/*.png``). We do not upload a
private project's plots to a third-party host (CML's ``--publish`` does): the comment
links to the CI run, where the images are kept as artifacts. Opt in to a host of your own
with ``REPORT_IMAGE_URL_TEMPLATE`` (see docs/report.md).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from cicd import ci
from cicd.errors import CommentForbidden, SuiteError
from cicd.http import DEFAULT_TIMEOUT, Http, Response, origin
from cicd.shell import Runner

# The suite's, not a model's: the report comment of any repository that uses the suite.
MARKER = "<!-- model-cicd-report -->"
MAX_BODY = 60_000  # GitHub rejects comments over 65,536 characters; GitLab allows more
PAGE_SIZE = 100  # GitHub's and GitLab's maximum per_page
MAX_PAGES = 100  # 10,000 comments: more is a broken or hostile server
DRY = "dry-run: nothing posted"
IMAGE = re.compile(r'!\[(?P<alt>[^\]]*)\]\((?P<path>[^)\s]+)(?:\s+"[^"]*")?\)')


@dataclass(frozen=True)
class CiContext:
    """What publishing needs from CI (made once, by :func:`ci_context`)."""

    forge: ci.Forge
    comments_url: str | None  # list/create endpoint; None when the run is not for a PR/MR
    token: str | None = field(repr=False)  # never in repr: contexts may get printed
    token_variable: str  # which variable holds (or should hold) the token
    artifacts_url: str
    summary_path: Path | None = None
    image_url_template: str | None = None
    update_method: str = "PATCH"
    timeout: float = DEFAULT_TIMEOUT  # deadline of each API call, retries included

    def auth_header(self, token: str) -> tuple[str, str]:
        """The header that carries ``token`` (never the URL): GitHub Bearer, GitLab own."""
        if self.forge == "github":
            return "Authorization", f"Bearer {token}"
        return "PRIVATE-TOKEN", token

    def item_url(self, comment_id: object) -> str:
        """URL of one existing comment (GitHub: issues/comments/<id>; GitLab: notes/<id>)."""
        assert self.comments_url
        if self.forge == "github":
            return f"{self.comments_url.rsplit('/issues/', 1)[0]}/issues/comments/{comment_id}"
        return f"{self.comments_url}/{comment_id}"


def ci_context(places: ci.CiPlaces) -> CiContext | None:
    """Everything publishing needs, from CI's ``places``; None when not in a supported CI."""
    if places.forge == "github":
        number = places.request_number
        return CiContext(
            forge="github",
            comments_url=(
                f"{places.api_url}/repos/{places.project}/issues/{number}/comments"
                if number
                else None
            ),
            token=places.token,
            token_variable=places.token_variable,
            artifacts_url=places.run_url,  # the run's page lists its artifacts
            summary_path=places.step_summary,
            image_url_template=places.image_url_template,
            update_method="PATCH",
        )
    if places.forge == "gitlab":
        iid = places.request_number
        return CiContext(
            forge="gitlab",
            comments_url=(
                f"{places.api_url}/projects/{places.project}/merge_requests/{iid}/notes"
                if iid
                else None
            ),
            token=places.token,
            token_variable=places.token_variable,
            artifacts_url=f"{places.run_url}/artifacts/browse",
            image_url_template=places.image_url_template,
            update_method="PUT",  # GitLab edits notes with PUT
        )
    return None


# --------------------------------------------------------------------------- publishing


def publish_report(
    runner: Runner,
    report_path: Path,
    environ: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Publish ``report_path`` in CI; return where it went (or why nothing was posted).

    ``timeout`` is the deadline of each API call (``suite.network_timeout``)."""
    context = ci_context(ci.places(environ))
    if context is None:
        return "not in CI: nothing posted"
    context = dataclasses.replace(context, timeout=timeout)
    body = comment_body(report_path.read_text(encoding="utf-8"), context)
    places = []
    if context.summary_path is not None:
        _append_summary(runner, context.summary_path, body)
        places.append("GitHub job summary")
    if context.comments_url is None:
        places.append("no pull/merge request for this run: no comment")
        return "; ".join(places)
    if not context.token:
        permission = " and `permissions: pull-requests: write`" * (context.forge == "github")
        raise SuiteError(
            f"no token to comment on the {_kind(context)}: set {context.token_variable} "
            f"(or REPO_TOKEN) in the CI job's environment{permission}"
        )
    runner.add_secret(context.token)
    try:
        places.append(upsert_comment(runner, context, body))
    except CommentForbidden:
        if context.summary_path is None or not _from_a_fork(environ):
            raise
        # GitHub gives a fork's pull request a read-only GITHUB_TOKEN, whatever the workflow
        # asks: no comment is possible, the job summary has the report, the gates still count.
        runner.echo(
            "WARNING: the pull request comment was refused (HTTP 403): a pull request from a "
            "fork gets a read-only GITHUB_TOKEN; the report is in the job summary"
        )
        places.append("no comment (a fork's pull request)")
    return "; ".join(places)


def _from_a_fork(environ: Mapping[str, str]) -> bool:
    """A GitHub pull request whose head is in another repository (the event payload says)."""
    path = environ.get("GITHUB_EVENT_PATH")
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):
        return False
    request = event.get("pull_request") if isinstance(event, dict) else None
    if not isinstance(request, dict):
        return False
    head = (request.get("head") or {}).get("repo") or {}
    base = (request.get("base") or {}).get("repo") or {}
    return bool(head.get("full_name")) and head.get("full_name") != base.get("full_name")


def upsert_comment(runner: Runner, context: CiContext, body: str) -> str:
    """Update the comment that has :data:`MARKER`, or create one; return what was done."""
    assert context.comments_url
    existing = _find_marked(runner, context)
    if existing is None:
        created = _request(runner, context, "POST", context.comments_url, {"body": body})
        url = (created or {}).get("html_url") or context.comments_url
        return f"{_kind(context)} comment created: {url}" if not runner.dry else DRY
    url = context.item_url(existing)
    _request(runner, context, context.update_method, url, {"body": body})
    return f"{_kind(context)} comment updated: {url}" if not runner.dry else DRY


def _find_marked(runner: Runner, context: CiContext) -> object | None:
    """Our comment: it starts with the marker AND the token's own identity wrote it.

    Anyone can paste the marker into a comment; editing theirs would fail (GitHub: 403) or,
    worse, overwrite a human's words. The identity is asked for only once a marked comment
    is seen, so a first report costs no extra request. Pages are followed as the API names
    them (:func:`_next_page`), at most :data:`MAX_PAGES`, never one already fetched.
    """
    assert context.comments_url
    me: object = None
    url: str | None = f"{context.comments_url}?per_page={PAGE_SIZE}&page=1"
    fetched: set[str] = set()
    while url is not None:
        fetched.add(_page_key(url))
        response = _call(runner, context, "GET", url)
        comments = _checked(runner, context, "GET", url, response) or []
        if not isinstance(comments, list):
            raise SuiteError(f"GET {url} did not answer a list of comments: check the API URL")
        for comment in comments:
            if not (comment.get("body") or "").startswith(MARKER):
                continue
            me = me if me is not None else _identity(runner, context)
            if me is not None and _author(context, comment) == me:
                return comment["id"]
        url = _next_page(context, url, response, len(comments)) if response else None
        if url is not None and _page_key(url) in fetched:
            raise SuiteError(
                f"the {context.forge} API names {url} as the next page of comments, a page "
                "already read: a broken server or proxy; no comment is posted"
            )
        if url is not None and len(fetched) >= MAX_PAGES:
            raise SuiteError(
                f"over {MAX_PAGES} pages of comments on the {_kind(context)} "
                f"({MAX_PAGES * PAGE_SIZE} comments): stopped looking; no comment is posted"
            )
    return None


def _next_page(context: CiContext, url: str, response: Response, count: int) -> str | None:
    """The URL of the page after ``url``, as the API says, or None on the last page.

    GitHub and GitLab name it in ``Link: <...>; rel="next"`` (no ``next`` on the last page);
    GitLab also in ``X-Next-Page`` (empty on the last page). An API that sends neither
    (an old GitLab behind a proxy dropping headers) pages by number while pages are full.
    A next page on another origin is refused: the token would go there.
    """
    link = response.headers.get("link")
    match = re.search(r'<([^>]+)>\s*;[^,]*\brel="?next"?', link or "")
    if match:
        target = urljoin(url, match.group(1))
        if origin(target) != origin(url):
            raise SuiteError(
                f"the {context.forge} API names a next page of comments on another host "
                f"({urlsplit(target).netloc}): refused, the token would go there"
            )
        return target
    if link is not None:
        return None
    number = response.headers.get("x-next-page")
    if number is not None:
        return _with_page(url, int(number)) if number.strip().isdigit() else None
    if count < PAGE_SIZE:
        return None
    current = parse_qs(urlsplit(url).query).get("page", ["1"])[0]
    return _with_page(url, int(current) + 1 if current.isdigit() else 2)


def _with_page(url: str, page: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "page"] + [("page", str(page))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _page_key(url: str) -> str:
    """A page's identity: the same URL with its query in another order is the same page."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode(sorted(parse_qsl(parts.query)))))


# GitHub Actions' GITHUB_TOKEN is an app installation token: GET /user answers 403
# ("Resource not accessible by integration"), and what it writes is signed by this bot.
ACTIONS_BOT = "github-actions[bot]"


def _identity(runner: Runner, context: CiContext) -> object:
    """Who the token is: the GitHub login (lowercase) or the GitLab user id."""
    assert context.comments_url
    split = "/repos/" if context.forge == "github" else "/projects/"
    url = context.comments_url.rsplit(split, 1)[0] + "/user"
    response = _call(runner, context, "GET", url)
    if response is None:  # dry run
        return None
    actions_token = context.forge == "github" and context.token_variable == "GITHUB_TOKEN"
    if actions_token and response.status == 403:
        return ACTIONS_BOT
    if response.status != 200:
        raise SuiteError(
            f"cannot tell whose token {context.token_variable} is (GET {url}: HTTP "
            f"{response.status}), so no comment is edited: use a token that may read its own "
            "user (GitHub: GITHUB_TOKEN or a personal token; GitLab: `api` or `read_user` scope)"
        )
    user = response.json(f"the {context.forge} API")
    user = user if isinstance(user, dict) else {}
    identity = str(user.get("login") or "").lower() if context.forge == "github" else user.get("id")
    if not identity:
        raise SuiteError(f"GET {url} did not say whose token {context.token_variable} is")
    return identity


def _author(context: CiContext, comment: Mapping[str, Any]) -> object:
    if context.forge == "github":
        return str((comment.get("user") or {}).get("login") or "").lower()
    return (comment.get("author") or {}).get("id")


def comment_body(report: str, context: CiContext) -> str:
    """The report as a comment: marker first, relative images replaced by reachable links."""
    replaced = 0

    def link(match: re.Match[str]) -> str:
        nonlocal replaced
        path = match.group("path")
        if re.match(r"[a-z]+://", path):
            return match.group(0)
        replaced += 1
        if context.image_url_template:
            url = context.image_url_template.format(path=path, name=Path(path).name)
            return f"![{match.group('alt')}]({url})"
        return f"[{match.group('alt')}]({context.artifacts_url})"

    text = IMAGE.sub(link, report)
    if replaced and not context.image_url_template:
        text += (
            f"\n\n> Plot images are not uploaded to any image host: they are kept as "
            f"artifacts of [this CI run]({context.artifacts_url}).\n"
        )
    body = f"{MARKER}\n{text}"
    if len(body) > MAX_BODY:
        body = body[:MAX_BODY] + "\n\n… (truncated; full report in the CI artifacts)\n"
    return body


def _append_summary(runner: Runner, path: Path, body: str) -> None:
    def append() -> None:
        with path.open("a", encoding="utf-8") as summary:
            summary.write(body + "\n")

    runner.call(["sh", "-c", "cat report.md >> $GITHUB_STEP_SUMMARY"], append)


def _request(
    runner: Runner, context: CiContext, method: str, url: str, payload: object = None
) -> Any:
    """One JSON API request through the runner; HTTP failures become SuiteError."""
    response = _call(runner, context, method, url, payload)
    return _checked(runner, context, method, url, response)


def _checked(
    runner: Runner, context: CiContext, method: str, url: str, response: Response | None
) -> Any:
    """The JSON of ``response`` (None in a dry run or without a body); HTTP errors raise."""
    if response is None:  # dry run
        return None
    if response.status >= 400:
        detail = response.body.decode(errors="replace")[:200]
        raise (CommentForbidden if response.status == 403 else SuiteError)(
            runner.mask(
                f"{method} {url} failed: HTTP {response.status} {detail}; check that "
                f"{context.token_variable} may comment on {_kind(context)}s (GitHub: "
                "`permissions: pull-requests: write`; GitLab: a token with `api` scope)"
            ).replace("\n", " ")
        )
    return response.json(f"the {context.forge} API") if response.body.strip() else None


def _call(
    runner: Runner, context: CiContext, method: str, url: str, payload: object = None
) -> Response | None:
    """Send through the runner (shown as curl, dry-run aware) and the hardened HTTP layer:
    the token goes only to the API's origin, transient failures are retried."""
    assert context.token
    name, value = context.auth_header(context.token)
    # Shown with the variable's name in place of the token: the echo says where it comes from.
    shown = f"{name}: {value.replace(context.token, '$' + context.token_variable)}"
    command = ["curl", "--request", method, "--header", shown, url]
    if payload is not None:
        command[-1:-1] = ["--data", "@body.json"]
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {
        "Accept": "application/vnd.github+json" if context.forge == "github" else "*/*",
        "Content-Type": "application/json",
        "User-Agent": "celestial-bodies-cicd",  # GitHub rejects requests without one
    }
    if context.forge == "github":
        headers["X-GitHub-Api-Version"] = "2022-11-28"
    http = Http(
        runner,
        f"the {context.forge} API",
        timeout=context.timeout,
        unreachable_hint="check the CI network and the API URL variable",
    )

    def send() -> Response:
        try:
            return http.send(method, url, headers=headers, credentials={name: value}, content=data)
        finally:
            http.close()

    return runner.call(command, send, note=http.note(method))


def _kind(context: CiContext) -> str:
    return "pull request" if context.forge == "github" else "merge request"
