"""The GitHub workflow on a pull request, run for real by act beside the pushes to main.

A pull request whose report comment an earlier push made: the `review` job (and the
`checks` job it needs) trains without secrets, and the report updates that comment instead of
adding a second; the pull request's own code (its noxfile) sees no secret but the report's
token (tests/support/ci_runners.py, PROBE). Its own registry, S3 and forge: it runs in
parallel with test_ci_github.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ci_runners
from tests.support.ci_runners import FORGE_TOKEN, Project, act, pr_event

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def github(tmp_path_factory, registry, training, leak_scan, pytestconfig) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("github-pr")
    with ci_runners.runner_project(
        "github-pr", base, registry, training, pytestconfig, seed=False
    ) as project:
        leak_scan.add_project(project)
        yield project


@pytest.fixture(scope="module")
def github_pull_request(github: Project) -> tuple[int, str]:
    """A push to a pull request whose report comment an earlier push made: (its id, output)."""
    assert github.forge is not None
    seeded = github.forge.seed_report()
    sha = ci_runners.open_pull_request(github, "pull request")
    # The pull request changes no docs page: its checks job runs lint and tests (the probe
    # sees both), not the docs build that test_ci_github.py's push to main runs.
    event = pr_event(sha)
    run = act(github, "act-pull-request", "pull_request", event, "review", checks="lint tests")
    return seeded, run


def test_github_pull_request_updates_its_report_comment(github: Project, github_pull_request):
    seeded, run = github_pull_request
    for session in ("lint", "tests", "train", "report"):
        assert f"Session {session} was successful" in run
    assert "Session docs" not in run  # CI_RUN_SESSIONS: the push to main builds them
    ci_runners.assert_checks_tested_in_one_process(run)
    assert "dvc repro --pull" not in run  # no credentials: outputs not pulled
    assert "pull request comment updated" in run
    assert github.forge is not None
    comments = "/api/repos/example/celestial/issues/"
    requests = github.forge.requests
    assert all(p.startswith(comments) or p == "/api/user" for _, p, _ in requests)
    assert all(credential == f"Bearer {FORGE_TOKEN}" for _, _, credential in requests)
    ci_runners.assert_report_updated(github, seeded, "PATCH")


def test_github_pull_request_code_gets_no_secret_but_the_reports_token(
    github: Project, github_pull_request
):
    ci_runners.assert_probes(github.probes(), token_sessions={"report"})


@pytest.fixture(scope="module")
def github_promote_from_a_branch(github: Project, github_pull_request) -> str:
    """A manual promotion dispatched on the pull request's branch (not main)."""
    event = {
        "ref": "refs/heads/feature",
        "repository": {"full_name": "example/celestial", "default_branch": "main"},
        "inputs": {"promote_to": "production", "revision": ""},
    }
    return act(github, "act-promote-feature", "workflow_dispatch", event, "promote")


def test_github_promotion_runs_from_main_only(github: Project, github_promote_from_a_branch):
    assert "Session promote" not in github_promote_from_a_branch
    assert "nox -s promote" not in github_promote_from_a_branch
    assert github.manifest("production") is None


def test_no_secret_in_any_output_or_file_left_behind(
    github: Project, github_pull_request, github_promote_from_a_branch
):
    ci_runners.assert_no_secret_left(github)
