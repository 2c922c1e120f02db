"""The report comment lookup pages as GitHub's and GitLab's APIs do (tests/support/fake_forge.py).

tests/integration/test_report.py covers a server without paging headers (pages by number while
full); here the pages say what comes next (``Link: rel="next"``, GitLab's ``X-Next-Page``), as
the real APIs do, and some servers lie about it.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cicd.errors import SuiteError
from cicd.forge import MARKER, MAX_PAGES, publish_report
from cicd.shell import Runner
from tests.support.fake_forge import BOT, REPO_ID, PagingForge, github_env, gitlab_env, serving

pytestmark = pytest.mark.slow

TOKEN = "ghs_pagingTOKEN0123456789"


def chatter(count: int) -> list[dict]:
    return [
        {"id": i, "body": f"chatter {i}", "user": {"login": "human"}, "author": {"id": 1}}
        for i in range(1, count + 1)
    ]


def ours(comment: dict) -> dict:
    return {**comment, "body": f"{MARKER}\nold report", "user": {"login": BOT["login"]},
            "author": {"id": BOT["id"]}}  # fmt: skip


def publish(environ: dict[str, str], report_md: Path) -> tuple[str, str]:
    out = io.StringIO()
    result = publish_report(Runner(out=out), report_md, environ)
    return result, out.getvalue()


def test_github_follows_link_next_to_our_comment_on_page_3_of_3(tmp_path, report_md):
    comments = chatter(250)
    comments[240] = ours(comments[240])  # id 241, on page 3
    with serving(PagingForge("github", comments)) as forge:
        result, out = publish(github_env(forge, tmp_path, TOKEN), report_md)
    assert "comment updated" in result
    # Page 1 where the suite asked; pages 2 and 3 where GitHub's Link said (by repository id).
    gets = forge.gets()
    assert urlsplit(gets[0]).path == "/api/repos/owner/proj/issues/7/comments"
    assert [urlsplit(g).path for g in gets[1:3]] == [
        f"/api/repositories/{REPO_ID}/issues/7/comments"
    ] * 2
    assert forge.page_requests() == [1, 2, 3]
    assert [r["method"] for r in forge.requests] == ["GET"] * 4 + ["PATCH"]  # 3 pages, /user
    assert forge.requests[-1]["path"].endswith("/issues/comments/241")
    assert "train.lr" in forge.comments[240]["body"] and len(forge.comments) == 250
    assert TOKEN not in out


def test_github_pages_shorter_than_asked_are_followed_while_there_is_a_next(tmp_path, report_md):
    # The API gives 30 a page whatever per_page says (its default): a short page is not the
    # last one while Link names a next; a lookup that stopped there would add a duplicate.
    comments = chatter(75)
    comments[70] = ours(comments[70])  # page 3 of 3
    with serving(PagingForge("github", comments, cap=30)) as forge:
        result, _ = publish(github_env(forge, tmp_path, TOKEN), report_md)
    assert "comment updated" in result
    assert forge.page_requests() == [1, 2, 3]
    assert len(forge.comments) == 75  # nothing added


def test_github_stops_after_the_last_page_and_creates_one_comment(tmp_path, report_md):
    with serving(PagingForge("github", chatter(300))) as forge:  # exactly 3 full pages
        result, _ = publish(github_env(forge, tmp_path, TOKEN), report_md)
    assert "comment created" in result
    assert forge.page_requests() == [1, 2, 3]  # page 3 has no next: no page 4
    assert [r["method"] for r in forge.requests] == ["GET"] * 3 + ["POST"]


@pytest.mark.parametrize("hostile", ["", "gitlab-no-link"])
def test_gitlab_finds_our_note_on_page_3_of_3(report_md, hostile):
    comments = chatter(300)
    comments[299] = ours(comments[299])  # the last note of page 3
    with serving(PagingForge("gitlab", comments, hostile=hostile)) as forge:
        result, _ = publish(gitlab_env(forge, TOKEN), report_md)
    assert "merge request comment updated" in result
    assert forge.page_requests() == [1, 2, 3]
    assert [r["method"] for r in forge.requests] == ["GET"] * 4 + ["PUT"]
    assert forge.requests[-1]["path"].endswith("/notes/300")
    for request in forge.requests:
        assert request["headers"]["private-token"] == TOKEN


@pytest.mark.parametrize("hostile", ["", "gitlab-no-link"])
def test_gitlab_stops_when_there_is_no_next_page(report_md, hostile):
    with serving(PagingForge("gitlab", chatter(300), hostile=hostile)) as forge:
        result, _ = publish(gitlab_env(forge, TOKEN), report_md)
    assert "comment created" in result
    assert forge.page_requests() == [1, 2, 3]  # X-Next-Page "" on page 3


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_a_next_link_back_to_a_page_already_read_stops_with_one_line(tmp_path, report_md, kind):
    with serving(PagingForge(kind, chatter(300), hostile="loop")) as forge:
        environ = (
            github_env(forge, tmp_path, TOKEN) if kind == "github" else gitlab_env(forge, TOKEN)
        )
        with pytest.raises(SuiteError, match="a page already read") as error:
            publish(environ, report_md)
    assert "\n" not in str(error.value)
    # GitHub's page 1 by repository id is another URL than the one asked first: read once more,
    # then its next (page 2) is a page already read.
    pages = [1, 2, 1] if kind == "github" else [1, 2]
    assert forge.page_requests() == pages
    assert {r["method"] for r in forge.requests} == {"GET"}  # nothing posted


def test_endless_pages_stop_at_the_cap(tmp_path, report_md):
    with (
        serving(PagingForge("github", [], hostile="endless")) as forge,
        pytest.raises(SuiteError, match=f"over {MAX_PAGES} pages") as error,
    ):
        publish(github_env(forge, tmp_path, TOKEN), report_md)
    assert "\n" not in str(error.value)
    assert forge.page_requests() == list(range(1, MAX_PAGES + 1))
    assert {r["method"] for r in forge.requests} == {"GET"}


def test_a_next_page_on_another_host_is_refused_and_gets_no_token(tmp_path, report_md):
    with (
        serving(PagingForge("github", [])) as other,
        serving(PagingForge("github", chatter(250), hostile="elsewhere")) as forge,
    ):
        forge.elsewhere = other.url.replace("127.0.0.1", "localhost")
        with pytest.raises(SuiteError, match="on another host") as error:
            publish(github_env(forge, tmp_path, TOKEN), report_md)
    assert "\n" not in str(error.value)
    assert other.requests == []
    assert forge.page_requests() == [1]
