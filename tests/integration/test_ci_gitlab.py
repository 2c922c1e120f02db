"""The GitLab pipeline runs for real, by gitlab-ci-local, on a clone of the run's trained project.

In order (tests/support/ci_runners.py has the forge, the S3 remote and the runner's machine):
  1. a push to main: checks (.ci/run on one test file), train (pulls the data, trains, pushes
     the model to S3), publish, verify, with the dotenv report of publish;
  2. the same commit again: publish skips ("already published");
  3. the manual promote job moves `production` by digest;
  4. a merge request whose report note exists from an earlier push: train without secrets,
     the note updated, not duplicated; its code sees no secret but the report's token.
Each job runs in its own copy of the repository (``--shell-isolation``), on the host.
Needs Docker, Debian's docker-registry, rsync and gitlab-ci-local (scripts/bootstrap).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from tests.support import ci_runners
from tests.support.ci_runners import (
    AWS_KEY_ID,
    AWS_SECRET,
    FORGE_TOKEN,
    IMAGE,
    ONE_TEST_FILE,
    REGISTRY_PASSWORD,
    SIGNING_KEY_BASE64,
    Project,
)
from tests.support.project import USER, start_registry, stop_registry

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def gitlab_ci_local(project: Project, label: str, jobs: list[str], variables: dict) -> str:
    command = ["gitlab-ci-local", "--shell-isolation", "--force-shell-executor"]
    settings = {
        "GITLAB_CI": "true",  # gitlab-ci-local says "false"; the jobs must act as on GitLab
        "PYTEST_ADDOPTS": ONE_TEST_FILE,
        "CI_FILES_PROBE": str(project.probe),
        # The runner's package cache (a warm runner), instead of a per-project copy.
        "UV_CACHE_DIR": project.env["UV_CACHE_DIR"],
        **project.job_variables,
        **variables,
    }
    for name, value in settings.items():
        command += ["--variable", f"{name}={value}"]
    return project.run(label, command + jobs, {})


def gitlab_secrets(project: Project, protected: bool) -> None:
    """The project's CI/CD variables, scoped as .gitlab-ci.yml's header says.

    ``protected=False``: a merge request's pipeline, which GitLab does not give protected
    variables (a project setting, not something .gitlab-ci.yml can enforce)."""
    scoped = {
        "CONTAINER_REGISTRY_HOST": ("registry", project.registry.address),
        "CONTAINER_REGISTRY_USERNAME": ("registry", USER),
        "CONTAINER_REGISTRY_PASSWORD": ("registry", REGISTRY_PASSWORD),
        "SIGNING_KEY": ("registry", SIGNING_KEY_BASE64),
        "GITLAB_TOKEN": ("review/*", FORGE_TOKEN),
    }
    if protected:  # protected variables: pipelines of main only
        scoped |= {
            "AWS_ACCESS_KEY_ID": ("*", AWS_KEY_ID),
            "AWS_SECRET_ACCESS_KEY": ("*", AWS_SECRET),
        }
    variables = {
        name: {"type": "variable", "values": {scope: value}}
        for name, (scope, value) in scoped.items()
    }
    path = project.home / ".gitlab-ci-local" / "variables.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"global": variables}))  # JSON is YAML


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with ci_runners.s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def gitlab(tmp_path_factory, s3, training, leak_scan, pytestconfig) -> Iterator[Project]:
    registry = start_registry(tmp_path_factory.mktemp("gitlab-registry"))
    leak_scan.add_registry(registry)
    base = tmp_path_factory.mktemp("gitlab")
    origin = "git@gitlab.example.com:example/celestial.git"
    project = ci_runners.make_project(base, "gitlab", origin, s3, registry, training)
    leak_scan.add_project(project)
    try:
        with ci_runners.forge("gitlab") as forge:
            project.forge = forge
            yield project
    finally:
        # The variables file is the runner's secret store: it must not outlive the test.
        shutil.rmtree(project.home / ".gitlab-ci-local", ignore_errors=True)
        leak_scan.record_pushed_images(registry)
        stop_registry(registry)
        ci_runners.write_times(project, base.parent, pytestconfig)


@pytest.fixture(scope="module")
def gitlab_main(gitlab: Project) -> str:
    gitlab_secrets(gitlab, protected=True)
    return gitlab_ci_local(gitlab, "gitlab-ci-local-push-main", [], {})


@pytest.fixture(scope="module")
def gitlab_again(gitlab: Project, gitlab_main: str) -> str:
    return gitlab_ci_local(gitlab, "gitlab-ci-local-push-again", ["train", "publish"], {})


@pytest.fixture(scope="module")
def gitlab_promote(gitlab: Project, gitlab_again: str) -> tuple[str, str]:
    """The manual promote job, run on main with PROMOTE_TO set, as "Run job" would."""
    sha = gitlab.git("rev-parse", "main")
    variables = {"PROMOTE_TO": "production", "PROMOTE_REVISION": sha}
    return sha, gitlab_ci_local(gitlab, "gitlab-ci-local-promote", ["promote"], variables)


@pytest.fixture(scope="module")
def gitlab_merge_request(gitlab: Project, gitlab_promote) -> tuple[int, str]:
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
    # The last run: the runner's secret store goes (the fixture's teardown makes sure too).
    shutil.rmtree(gitlab.home / ".gitlab-ci-local")
    return seeded, run


def dotenv_report(project: Project) -> dict[str, str]:
    path = project.root / ".gitlab-ci-local/artifacts/publish/.gitlab-ci-reports/dotenv/publish.env"
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_gitlab_push_to_main_checks_trains_and_publishes(gitlab: Project, gitlab_main: str, s3):
    for session in ("lint", "tests", "train", "publish", "verify"):
        assert f"Session {session} was successful" in gitlab_main
    sha = gitlab.git("rev-parse", "HEAD")
    by_sha, latest = gitlab.manifest(sha), gitlab.manifest("latest")
    assert by_sha is not None and by_sha == latest
    report = dotenv_report(gitlab)
    assert report["PUBLISH_DIGEST"] == by_sha.digest and report["PUBLISH_SKIPPED"] == "false"
    assert report["PUBLISH_TAGS"].split() == [
        f"{gitlab.registry.address}/{IMAGE}:{t}" for t in (sha, "latest")
    ]
    assert "Running stage 'train'" in gitlab_main, "main's train did not train"
    model = ci_runners.model_object(gitlab)
    assert model in ci_runners.s3_objects(s3, "gitlab/"), "train on main did not push the model"


def test_gitlab_same_commit_again_skips_publish(gitlab: Project, gitlab_again: str):
    assert "already published" in gitlab_again
    assert "bentoml containerize" not in gitlab_again
    assert dotenv_report(gitlab)["PUBLISH_SKIPPED"] == "true"


def test_gitlab_promotion_moves_the_environment_tag_by_digest(gitlab: Project, gitlab_promote):
    ci_runners.assert_promoted(gitlab, gitlab_promote)


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
