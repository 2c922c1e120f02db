"""The GitHub workflow's pushes to main run for real, by act, on a clone of the trained project.

In order (tests/support/ci_runners.py has the forge, the S3 remote and the runner's machine):
  1. a push to main: checks (.ci/run on one test file), train (pulls the data, trains, pushes
     the model to S3), publish, verify;
  2. the same commit pushed again: publish skips ("already published"); its checks job, which
     `-j pipeline` runs too, only provisions (.ci/run's CI_RUN_SESSIONS=none);
  3. the manual promotion (workflow_dispatch) moves `production` to the digest publish output.
Pull requests: test_ci_github_pr.py. Needs Docker, Debian's docker-registry (scripts/bootstrap);
act comes with the tests' venv.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ci_runners
from tests.support.ci_runners import Project, act, push_event

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def github(tmp_path_factory, registry, training, leak_scan, pytestconfig) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("github")
    with ci_runners.runner_project("github", base, registry, training, pytestconfig) as project:
        leak_scan.add_project(project)
        yield project


@pytest.fixture(scope="module")
def github_main(github: Project) -> str:
    return act(github, "act-push-main", "push", push_event(github), job=None)


@pytest.fixture(scope="module")
def github_again(github: Project, github_main: str) -> str:
    # `-j pipeline` runs checks too (pipeline needs it): github_main ran it in full, this
    # commit again proves nothing new there.
    event = push_event(github)
    return act(github, "act-push-again", "push", event, job="pipeline", checks="none")


@pytest.fixture(scope="module")
def github_promote(github: Project, github_again: str) -> tuple[str, str]:
    """The manual promotion (workflow_dispatch with inputs) of the digest main's pipeline
    job published (its output `digest`, shown in its summary)."""
    sha = github.git("rev-parse", "main")
    digest = github.manifest(sha).digest
    assert f"digest={digest}" in github_again  # the output the promotion is given
    event = {**push_event(github), "inputs": {"promote_to": "production", "digest": digest}}
    return sha, act(github, "act-promote", "workflow_dispatch", event, job="promote")


def test_github_push_to_main_checks_trains_and_publishes(github: Project, github_main: str):
    for session in ("lint", "docs", "tests", "train", "publish", "verify"):  # checks in full
        assert f"Session {session} was successful" in github_main
    ci_runners.assert_checks_tested_in_one_process(github_main)
    sha = github.git("rev-parse", "HEAD")
    by_sha, latest = github.manifest(sha), github.manifest("latest")
    assert by_sha is not None and by_sha == latest
    assert f"digest={by_sha.digest}" in github_main  # the step output
    assert "Running stage 'train'" in github_main, "main's train did not train"
    model = ci_runners.model_object(github)
    assert model in ci_runners.s3_objects(github.s3, "github/"), "main's train pushed no model"


def test_github_same_commit_again_skips_publish(github: Project, github_again: str):
    assert "already published" in github_again
    assert "bentoml containerize" not in github_again
    assert "skipped=true" in github_again
    assert "CI_RUN_SESSIONS=none: provisioned, no session run" in github_again


def test_github_promotion_moves_the_environment_tag_by_digest(github: Project, github_promote):
    ci_runners.assert_promoted(github, github_promote)


def test_no_secret_in_any_output_or_file_left_behind(github: Project, github_promote):
    ci_runners.assert_no_secret_left(github)
