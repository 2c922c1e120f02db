"""The GitLab pipeline on a merge request, run for real by gitlab-ci-local beside main's.

A merge request whose report note an earlier push made: `train` without the DVC remote's
credentials (protected variables: GitLab gives them to protected branches only, a project
setting the test plays by leaving them out), then `report` updates that note instead of adding
a second; the merge request's own code sees no secret but the report's token. Its own
registry, S3 and forge: it runs in parallel with test_ci_gitlab.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support import ci_runners
from tests.support.ci_runners import FORGE_TOKEN, Project, gitlab_ci_local, gitlab_secrets

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def gitlab(tmp_path_factory, registry, training, leak_scan, pytestconfig) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("gitlab-mr")
    with ci_runners.runner_project(
        "gitlab-mr", base, registry, training, pytestconfig, seed=False
    ) as project:
        leak_scan.add_project(project)
        yield project


@pytest.fixture(scope="module")
def gitlab_merge_request(gitlab: Project) -> tuple[int, str]:
    """A push to a merge request whose report note an earlier push made: (its id, output)."""
    assert gitlab.forge is not None
    seeded = gitlab.forge.seed_report()
    gitlab_secrets(gitlab, protected=False)
    merge_request = {
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_IID": "3",
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature",
        "CI_API_V4_URL": f"{gitlab.forge.url}/api/v4",
        "CI_PROJECT_ID": "42",
    }
    ci_runners.open_pull_request(gitlab, "merge request")
    label = "gitlab-ci-local-merge-request"
    run = gitlab_ci_local(gitlab, label, ["train", "report"], merge_request)
    # The runner's secret store goes (the fixture's teardown makes sure too).
    shutil.rmtree(gitlab.home / ".gitlab-ci-local")
    return seeded, run


def test_gitlab_merge_request_updates_its_report_note(gitlab: Project, gitlab_merge_request):
    seeded, run = gitlab_merge_request
    assert "Session train was successful" in run and "Session report was successful" in run
    assert "dvc repro --pull" not in run  # no credentials: outputs not pulled
    assert "merge request comment updated" in run
    assert gitlab.forge is not None
    notes = "/api/v4/projects/42/merge_requests/3/notes"
    requests = gitlab.forge.requests
    assert all(p.startswith(notes) or p == "/api/v4/user" for _, p, _ in requests)
    assert all(credential == FORGE_TOKEN for _, _, credential in requests)
    ci_runners.assert_report_updated(gitlab, seeded, "PUT")


def test_gitlab_merge_request_code_gets_no_secret_but_the_reports_token(
    gitlab: Project, gitlab_merge_request
):
    ci_runners.assert_probes(gitlab.probes(), token_sessions={"report"})


def test_no_secret_in_any_output_or_file_left_behind(gitlab: Project, gitlab_merge_request):
    ci_runners.assert_no_secret_left(gitlab)
