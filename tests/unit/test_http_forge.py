"""The forge client under faults and against comments it must not touch (scripted servers)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cicd.errors import SuiteError
from cicd.forge import MARKER, publish_report
from cicd.shell import Runner
from tests.unit.test_http_faults import Scripted, _serve, answer, cut_mid_body, slow

TOKEN = "ghp_SENTINELtoken42"
COMMENTS = "/api/repos/owner/proj/issues/7/comments"
NOTES = "/api/v4/projects/42/merge_requests/3/notes"
forge = pytest.fixture(_serve)
other = pytest.fixture(_serve)


def github(server: Scripted, tmp_path: Path, variable: str = "GITHUB_TOKEN") -> dict[str, str]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": f"{server.url}/api",
        "GITHUB_REPOSITORY": "owner/proj",
        "GITHUB_EVENT_PATH": str(event),
        variable: TOKEN,
    }


def gitlab(server: Scripted) -> dict[str, str]:
    return {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{server.url}/api/v4",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "3",
        "GITLAB_TOKEN": TOKEN,
    }


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "report.md"
    path.write_text("# Experiment Report (abc)\n\n| train.lr | 0.1 | 0.3 |\n")
    return path


def _json(payload: object, status: int = 200) -> object:
    return answer(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def methods(server: Scripted) -> list[tuple[str, str]]:
    return [(r["method"], r["path"].split("?")[0]) for r in server.requests]


def test_a_marker_comment_by_another_user_is_not_touched_on_github(
    forge: Scripted, tmp_path: Path, report: Path
):
    theirs = {"id": 5, "body": f"{MARKER}\nmine now", "user": {"login": "mallory"}}
    forge.routes[COMMENTS] = _json([theirs])
    forge.routes["/api/user"] = _json({"login": "CI-Bot"})
    forge.script[COMMENTS] = [_json([theirs]), _json({"id": 6}, 201)]  # GET, then the POST
    publish_report(Runner(out=io.StringIO()), report, github(forge, tmp_path, "REPO_TOKEN"))
    assert methods(forge) == [("GET", COMMENTS), ("GET", "/api/user"), ("POST", COMMENTS)]


def test_our_own_marker_comment_is_updated_on_github(forge: Scripted, tmp_path: Path, report: Path):
    ours = {"id": 5, "body": f"{MARKER}\nold", "user": {"login": "ci-bot"}}
    forge.routes[COMMENTS] = _json([ours])
    forge.routes["/api/user"] = _json({"login": "CI-Bot"})  # logins compare case-blind
    forge.routes["/api/repos/owner/proj/issues/comments/5"] = _json(ours)
    publish_report(Runner(out=io.StringIO()), report, github(forge, tmp_path, "REPO_TOKEN"))
    assert methods(forge)[-1] == ("PATCH", "/api/repos/owner/proj/issues/comments/5")


def test_github_token_is_the_actions_bot_when_user_is_forbidden(
    forge: Scripted, tmp_path: Path, report: Path
):
    theirs = {"id": 4, "body": f"{MARKER}\nx", "user": {"login": "someone"}}
    ours = {"id": 5, "body": f"{MARKER}\nold", "user": {"login": "github-actions[bot]"}}
    forge.routes[COMMENTS] = _json([theirs, ours])
    forge.routes["/api/user"] = _json({"message": "Resource not accessible by integration"}, 403)
    forge.routes["/api/repos/owner/proj/issues/comments/5"] = _json(ours)
    publish_report(Runner(out=io.StringIO()), report, github(forge, tmp_path))
    assert methods(forge)[-1] == ("PATCH", "/api/repos/owner/proj/issues/comments/5")
    assert forge.hits("/api/repos/owner/proj/issues/comments/4") == 0


def test_an_unknown_identity_edits_nothing_and_says_why(
    forge: Scripted, tmp_path: Path, report: Path
):
    forge.routes[COMMENTS] = _json([{"id": 5, "body": f"{MARKER}\n", "user": {"login": "x"}}])
    forge.routes["/api/user"] = _json({"message": "Resource not accessible"}, 403)
    with pytest.raises(SuiteError) as error:
        publish_report(Runner(out=io.StringIO()), report, github(forge, tmp_path, "REPO_TOKEN"))
    assert "cannot tell whose token REPO_TOKEN is" in str(error.value)
    assert "\n" not in str(error.value) and TOKEN not in str(error.value)
    assert [m for m, _ in methods(forge)] == ["GET", "GET"]


def test_a_marker_note_by_another_user_is_not_touched_on_gitlab(forge: Scripted, report: Path):
    theirs = {"id": 9, "body": f"{MARKER}\n", "author": {"id": 666}}
    forge.routes["/api/v4/user"] = _json({"id": 7})
    forge.script[NOTES] = [_json([theirs]), _json({"id": 10}, 201)]
    publish_report(Runner(out=io.StringIO()), report, gitlab(forge))
    assert methods(forge) == [("GET", NOTES), ("GET", "/api/v4/user"), ("POST", NOTES)]


def test_a_502_on_the_forge_is_retried(forge: Scripted, tmp_path: Path, report: Path):
    forge.script[COMMENTS] = [answer(502), _json([]), _json({"id": 6}, 201)]
    out = io.StringIO()
    publish_report(Runner(out=out), report, github(forge, tmp_path))
    assert methods(forge) == [("GET", COMMENTS)] * 2 + [("POST", COMMENTS)]
    assert "retry 1/3 of GET" in out.getvalue() and TOKEN not in out.getvalue()


def test_a_post_answered_502_is_not_retried_but_503_is(
    forge: Scripted, tmp_path: Path, report: Path
):
    forge.script[COMMENTS] = [_json([]), answer(503), _json({"id": 6}, 201)]
    publish_report(Runner(out=io.StringIO()), report, github(forge, tmp_path))
    assert [m for m, _ in methods(forge)] == ["GET", "POST", "POST"]
    forge.requests.clear()
    forge.script[COMMENTS] = [_json([]), answer(502), _json({"id": 7}, 201)]
    with pytest.raises(SuiteError, match="answered HTTP 502 after it was sent; not retried"):
        publish_report(Runner(out=io.StringIO()), report, github(forge, tmp_path))
    assert [m for m, _ in methods(forge)] == ["GET", "POST"]


def test_a_post_cut_off_is_not_retried(forge: Scripted, tmp_path: Path, report: Path):
    forge.script[COMMENTS] = [_json([]), cut_mid_body(b'{"id": 6, "html_url": "x"}')]
    with pytest.raises(SuiteError) as error:
        publish_report(Runner(out=io.StringIO()), report, github(forge, tmp_path))
    assert "not retried since it may have taken effect" in str(error.value)
    assert forge.hits(COMMENTS) == 2  # one GET, one POST: no second POST


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_a_redirect_to_another_origin_never_carries_the_token(
    forge: Scripted, other: Scripted, tmp_path: Path, report: Path, kind: str
):
    path = COMMENTS if kind == "github" else NOTES
    moved = answer(307, b"", {"Location": f"{other.url}{path}?per_page=100"})
    forge.script[path] = [moved, moved]  # the GET, then the POST (307 keeps the method)
    other.script[path] = [_json([]), _json({"id": 6}, 201)]
    environ = github(forge, tmp_path) if kind == "github" else gitlab(forge)
    publish_report(Runner(out=io.StringIO()), report, environ)
    assert all(TOKEN in json.dumps(r["headers"]) for r in forge.requests)  # its own origin
    assert [r["method"] for r in other.requests] == ["GET", "POST"]
    for request in other.requests:
        assert TOKEN not in json.dumps(request["headers"])


# -- what the comment renders: params, metrics and plot names are inert text -------------------

HOSTILE = [
    "@team",
    "[click](https://evil.example)",
    "https://evil.example/x",
    "www.evil.example",
    '<img src="https://evil.example/p.png">',
    MARKER,
    "`code` and <b>bold</b>",
    "fixes #12",
    'x](https://evil.example) ![y" onerror="z',
]


def _rendered(markdown: str) -> str:
    from markdown_it import MarkdownIt

    # Raw HTML on, as GitHub and GitLab allow much of it; bare-URL autolinks are checked on
    # the text instead (the linkify extension is not installed).
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_param_or_metric_renders_as_text(value: str):
    from cicd.report import PlotImages, render_report

    report = render_report(
        sha="abc",
        base="main",
        params={"params.yaml": {value: {"old": value, "new": 1}}},
        metrics={"m.json": {value: {"old": 1.0, "new": value, "diff": value}}},
        plots=[PlotImages(f"plots/{value}.png", "report/a.png", "report/b.png")],
        plot_errors=[f"main: {value}"],
    )
    html = _rendered(report)
    assert "<a " not in html and "<b>" not in html and MARKER not in report
    assert html.count("<img ") == 2  # only the two plot images the report itself links
    assert "://evil" not in html and "www.evil" not in html  # no autolink either
    for text in ("@team", "#12"):  # a mention or an issue reference would notify
        assert text not in html
    body = comment_body_for(report)
    assert body.count(MARKER) == 1 and body.startswith(MARKER)


def comment_body_for(report: str) -> str:
    from cicd.forge import CiContext, comment_body

    context = CiContext("github", None, None, "GITHUB_TOKEN", "https://ci.example/run/1")
    body = comment_body(report, context)
    # Relative images still become links to the run: the escaping kept them recognisable.
    assert "report/a.png" not in body and "(https://ci.example/run/1)" in body
    return body


def test_a_backtick_in_the_base_branch_stays_in_its_code_span():
    from cicd.report import render_params

    html = _rendered(render_params({}, "a`<img src=x>`b"))
    assert "<code>a`&lt;img src=x&gt;`b</code>" in html and "<img" not in html


def test_the_deadline_of_forge_calls_is_the_setting(forge: Scripted, tmp_path: Path, report: Path):
    forge.script[COMMENTS] = [slow(3)] * 3
    out = io.StringIO()
    with pytest.raises(SuiteError, match="not done within the 1 s deadline"):
        publish_report(Runner(out=out, verbose=True), report, github(forge, tmp_path), timeout=1)
    assert "within 1 s" in out.getvalue()  # the echo says which deadline applies
