"""The GitLab pipeline on main runs for real, by gitlab-ci-local, on a clone of the trained project.

In order (tests/support/ci_runners.py has the forge, the S3 remote and the runner's machine):
  1. a push to main: checks (.ci/run on one test file), train (pulls the data, trains, pushes
     the model to S3), publish, verify, with the dotenv report of publish;
  2. the same commit again: publish skips ("already published");
  3. the manual promote job moves `production` to the digest publish output.
Each job runs in its own copy of the repository (``--shell-isolation``), on the host. Merge
requests: test_ci_gitlab_mr.py. Needs Docker, Debian's docker-registry, rsync and
gitlab-ci-local (`scripts/bootstrap --tests`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from tests.support import ci_runners
from tests.support.ci_runners import IMAGE, Project, gitlab_ci_local, gitlab_secrets

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def gitlab(tmp_path_factory, registry, training, leak_scan, pytestconfig) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("gitlab")
    with ci_runners.runner_project("gitlab", base, registry, training, pytestconfig) as project:
        leak_scan.add_project(project)
        yield project


class Pipeline(NamedTuple):
    output: str
    report: dict[str, str]  # publish's dotenv report, read at once: the next run writes it


@pytest.fixture(scope="module")
def gitlab_main(gitlab: Project) -> Pipeline:
    gitlab_secrets(gitlab, protected=True)
    output = gitlab_ci_local(gitlab, "gitlab-ci-local-push-main", [], {})
    return Pipeline(output, dotenv_report(gitlab))


@pytest.fixture(scope="module")
def gitlab_again(gitlab: Project, gitlab_main: Pipeline) -> Pipeline:
    jobs = ["train", "publish"]
    output = gitlab_ci_local(gitlab, "gitlab-ci-local-push-again", jobs, {})
    return Pipeline(output, dotenv_report(gitlab))


@pytest.fixture(scope="module")
def gitlab_promote(gitlab: Project, gitlab_again: Pipeline) -> tuple[str, str]:
    """The manual promote job, run on main with PROMOTE_TO set, as "Run job" would: it
    promotes the digest of publish's dotenv report (PUBLISH_DIGEST)."""
    sha = gitlab.git("rev-parse", "main")
    variables = {"PROMOTE_TO": "production"}
    done = gitlab_ci_local(gitlab, "gitlab-ci-local-promote", ["promote"], variables)
    # The last run: the runner's secret store goes (the fixture's teardown makes sure too).
    shutil.rmtree(gitlab.home / ".gitlab-ci-local")
    return sha, done


def dotenv_report(project: Project) -> dict[str, str]:
    path = project.root / ".gitlab-ci-local/artifacts/publish/.gitlab-ci-reports/dotenv/publish.env"
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_gitlab_push_to_main_checks_trains_and_publishes(gitlab: Project, gitlab_main: Pipeline):
    output, report = gitlab_main
    for session in ("lint", "docs", "tests", "train", "publish", "verify"):  # checks in full
        assert f"Session {session} was successful" in output
    ci_runners.assert_checks_tested_in_one_process(output)
    sha = gitlab.git("rev-parse", "HEAD")
    by_sha, latest = gitlab.manifest(sha), gitlab.manifest("latest")
    assert by_sha is not None and by_sha == latest
    assert report["PUBLISH_DIGEST"] == by_sha.digest and report["PUBLISH_SKIPPED"] == "false"
    assert report["PUBLISH_TAGS"].split() == [
        f"{gitlab.registry.address}/{IMAGE}:{t}" for t in (sha, "latest")
    ]
    assert "Running stage 'train'" in output, "main's train did not train"
    model = ci_runners.model_object(gitlab)
    assert model in ci_runners.s3_objects(gitlab.s3, "gitlab/"), "main's train pushed no model"


def test_gitlab_same_commit_again_skips_publish(gitlab: Project, gitlab_again: Pipeline):
    assert "already published" in gitlab_again.output
    assert "bentoml containerize" not in gitlab_again.output
    assert gitlab_again.report["PUBLISH_SKIPPED"] == "true"


def test_gitlab_promotion_moves_the_environment_tag_by_digest(gitlab: Project, gitlab_promote):
    ci_runners.assert_promoted(gitlab, gitlab_promote)


def test_no_secret_in_any_output_or_file_left_behind(gitlab: Project, gitlab_promote):
    ci_runners.assert_no_secret_left(gitlab)
