"""The GitHub workflow runs for real, by act, on a clone of the run's trained project.

In order (tests/support/ci_runners.py has the forge, the S3 remote and the runner's machine):
  1. a push to main: checks (.ci/run on one test file), train (pulls the data, trains, pushes
     the model to S3), publish, verify;
  2. the same commit pushed again: publish skips ("already published");
  3. the manual promotion (workflow_dispatch) moves `production` by digest;
  4. a pull request whose report comment exists from an earlier push: train without secrets,
     the comment updated, not duplicated; its code sees no secret but the report's token.
Needs Docker, Debian's docker-registry (scripts/bootstrap); act comes with the tests' venv.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ci_runners
from tests.support.ci_runners import (
    AWS_KEY_ID,
    AWS_SECRET,
    FORGE_TOKEN,
    ONE_TEST_FILE,
    REGISTRY_PASSWORD,
    SIGNING_KEY_DOTENV,
    VENV_BIN,
    Project,
)
from tests.support.project import USER

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ACTIONS = Path(__file__).resolve().parents[1] / "ci" / "actions"


def act(project: Project, label: str, event_name: str, event: dict, job: str | None) -> str:
    event_file = project.home.parent / f"{label}.json"
    event_file.write_text(json.dumps(event))
    stand_ins = [
        f"actions/{name}@{ref}={ACTIONS / name}"
        for name, ref in (("setup-python", "v6"), ("cache", "v4"), ("upload-artifact", "v4"))
    ]
    command = [str(VENV_BIN / "act"), event_name, "-e", str(event_file)]
    command += ["-P", "ubuntu-latest=-self-hosted", "--no-cache-server"]
    # act masks secrets as *** by default: shown, a leak fails the output scan.
    command += ["--insecure-secrets"]
    for stand_in in stand_ins:
        command += ["--local-repository", stand_in]
    assert project.forge is not None
    variables = {
        "PYTEST_ADDOPTS": ONE_TEST_FILE,
        "GITHUB_API_URL": f"{project.forge.url}/api",
        "CI_FILES_PROBE": str(project.probe),
        **project.job_variables,
    }
    for name, value in variables.items():
        command += ["--env", f"{name}={value}"]
    if job:
        command += ["-j", job]
    secrets_file = project.home.parent / "act.secrets"
    secrets_file.touch(mode=0o600)
    # A file, deleted after the run: not on a command line, and not in act's own environment,
    # which act's host executor hands to every step (as a real runner never does).
    secrets_file.write_text(
        f"CONTAINER_REGISTRY_HOST={project.registry.address}\n"
        f"CONTAINER_REGISTRY_USERNAME={USER}\n"
        f"CONTAINER_REGISTRY_PASSWORD={REGISTRY_PASSWORD}\n"
        f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\n"
        f"GITHUB_TOKEN={FORGE_TOKEN}\n"
        f"SIGNING_KEY={SIGNING_KEY_DOTENV}\n"
    )
    try:
        return project.run(label, [*command, "--secret-file", str(secrets_file)], {})
    finally:
        secrets_file.unlink()


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with ci_runners.s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def github(tmp_path_factory, s3, registry, training, leak_scan, pytestconfig) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("github")
    origin = "https://github.com/example/celestial.git"
    project = ci_runners.make_project(base, "github", origin, s3, registry, training)
    leak_scan.add_project(project)
    with ci_runners.forge("github") as forge:
        project.forge = forge
        yield project
    ci_runners.write_times(project, base.parent, pytestconfig)


def push_event(project: Project) -> dict:
    return {
        "ref": "refs/heads/main",
        "after": project.git("rev-parse", "HEAD"),
        "repository": {"full_name": "example/celestial", "default_branch": "main"},
    }


def pr_event(sha: str) -> dict:
    return {
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"ref": "feature", "sha": sha},
            "base": {"ref": "main"},
        },
        "repository": {"full_name": "example/celestial", "default_branch": "main"},
    }


@pytest.fixture(scope="module")
def github_main(github: Project) -> str:
    return act(github, "act-push-main", "push", push_event(github), job=None)


@pytest.fixture(scope="module")
def github_again(github: Project, github_main: str) -> str:
    return act(github, "act-push-again", "push", push_event(github), job="pipeline")


@pytest.fixture(scope="module")
def github_promote(github: Project, github_again: str) -> tuple[str, str]:
    """The manual promotion (workflow_dispatch with inputs) of main's published commit."""
    sha = github.git("rev-parse", "main")
    event = {**push_event(github), "inputs": {"promote_to": "production", "revision": sha}}
    return sha, act(github, "act-promote", "workflow_dispatch", event, job="promote")


@pytest.fixture(scope="module")
def github_pull_request(github: Project, github_promote) -> tuple[int, str]:
    """A push to a pull request whose report comment an earlier push made: (its id, output)."""
    assert github.forge is not None
    seeded = github.forge.seed_report()
    sha = ci_runners.open_pull_request(github, "pull request")
    return seeded, act(github, "act-pull-request", "pull_request", pr_event(sha), "pipeline")


def test_github_push_to_main_checks_trains_and_publishes(github: Project, github_main: str, s3):
    for session in ("lint", "tests", "train", "publish", "verify"):
        assert f"Session {session} was successful" in github_main
    sha = github.git("rev-parse", "HEAD")
    by_sha, latest = github.manifest(sha), github.manifest("latest")
    assert by_sha is not None and by_sha == latest
    assert f"digest={by_sha.digest}" in github_main  # the step output
    assert "Running stage 'train'" in github_main, "main's train did not train"
    model = ci_runners.model_object(github)
    assert model in ci_runners.s3_objects(s3, "github/"), "train on main did not push the model"


def test_github_same_commit_again_skips_publish(github: Project, github_again: str):
    assert "already published" in github_again
    assert "bentoml containerize" not in github_again
    assert "skipped=true" in github_again


def test_github_promotion_moves_the_environment_tag_by_digest(github: Project, github_promote):
    ci_runners.assert_promoted(github, github_promote)


def test_github_pull_request_updates_its_report_comment(github: Project, github_pull_request):
    seeded, run = github_pull_request
    assert "Session train was successful" in run and "Session report was successful" in run
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


def test_no_secret_in_any_output_or_file_left_behind(github: Project, github_pull_request):
    ci_runners.assert_no_secret_left(github)
