import json
import subprocess
from pathlib import Path

import pytest

from cicd import ci
from cicd.errors import SuiteError
from cicd.shell import Runner

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"CI": "false"}, False),
        ({"CI": "true"}, True),
        ({"GITHUB_ACTIONS": "true"}, True),
        ({"GITLAB_CI": "true"}, True),
    ],
)
def test_in_ci(environ, expected):
    assert ci.in_ci(environ) is expected


def test_provider():
    assert ci.provider({"GITHUB_ACTIONS": "true"}) == "github"
    assert ci.provider({"GITLAB_CI": "true"}) == "gitlab"
    assert ci.provider({"CI": "true"}) is None
    assert ci.provider({}) is None


def test_ci_sha_prefers_the_merge_request_head_and_ignores_junk():
    assert ci.ci_sha({"GITHUB_SHA": SHA}) == SHA
    assert ci.ci_sha({"CI_COMMIT_SHA": SHA.upper()}) == SHA
    other = "f" * 40
    assert ci.ci_sha({"CI_COMMIT_SHA": SHA, "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": other}) == other
    assert ci.ci_sha({"GITHUB_SHA": "not-a-sha"}) is None


def test_branch_from_ci_variables_then_git():
    assert ci.branch({"GITHUB_REF": "refs/heads/main"}, "x") == "main"
    assert ci.branch({"GITHUB_HEAD_REF": "feature", "GITHUB_REF": "refs/pull/1/merge"}, None) == (
        "feature"
    )
    assert ci.branch({"CI_COMMIT_BRANCH": "main"}, "x") == "main"
    assert ci.branch({}, "local") == "local"


def test_pull_requests_are_recognised():
    assert ci.is_pull_request({"GITHUB_EVENT_NAME": "pull_request"})
    assert ci.is_pull_request({"CI_PIPELINE_SOURCE": "merge_request_event"})
    assert not ci.is_pull_request({"GITHUB_EVENT_NAME": "push"})


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("https://user:tok@github.com/o/r.git", "https://github.com/o/r"),
        ("git@gitlab.com:o/r.git", "https://gitlab.com/o/r"),
        ("ssh://git@gitlab.example.org:2222/group/r.git", "https://gitlab.example.org/group/r"),
        ("https://gitea.example.org/o/r", "https://gitea.example.org/o/r"),
        ("", ""),
        # not a web address: no source label rather than a path of the building machine
        ("/work/main", ""),
        ("../celestial", ""),
        ("file:///srv/git/r.git", ""),
        ("C:/src/r", ""),
    ],
)
def test_source_url_is_a_web_address_without_credentials(remote, expected):
    assert ci.source_url({}, remote) == expected


def test_source_url_from_ci():
    environ = {"GITHUB_REPOSITORY": "o/r", "GITHUB_SERVER_URL": "https://github.com"}
    assert ci.source_url(environ, "x") == "https://github.com/o/r"
    assert ci.source_url({"CI_PROJECT_URL": "https://gitlab.com/o/r"}, "x") == (
        "https://gitlab.com/o/r"
    )


def _repo(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (tmp_path / "a.txt").write_text("a\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    return git


def test_revision_of_a_clean_tree_is_the_commit(tmp_path):
    _repo(tmp_path)
    revision = ci.revision(Runner(), tmp_path, {})
    assert len(revision.sha) == 40 and revision.tag == revision.sha
    assert not revision.dirty and revision.timestamp > 0


def test_dirty_tree_gets_a_distinct_tag_locally_and_is_refused_in_ci(tmp_path):
    _repo(tmp_path)
    (tmp_path / "a.txt").write_text("changed\n")
    revision = ci.revision(Runner(), tmp_path, {})
    assert revision.dirty and revision.tag.startswith(revision.sha + "-dirty-")
    (tmp_path / "a.txt").write_text("changed again\n")
    assert ci.revision(Runner(), tmp_path, {}).tag != revision.tag
    with pytest.raises(SuiteError, match="uncommitted changes in CI"):
        ci.revision(Runner(), tmp_path, {"CI": "true"})


def test_not_a_repository_is_a_clear_error(tmp_path):
    with pytest.raises(SuiteError, match="not a git repository"):
        ci.revision(Runner(), tmp_path, {})


# -- places: where CI wants results (the forge's API, the files later steps read) --------------

TOKEN = "ghp_SENTINELtoken42"


def test_places_of_a_github_push(tmp_path: Path):
    environ = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": "https://ghe.example/api/v3/",
        "GITHUB_SERVER_URL": "https://ghe.example/",
        "GITHUB_REPOSITORY": "owner/proj",
        "GITHUB_RUN_ID": "99",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_TOKEN": TOKEN,
    }
    assert ci.places(environ) == ci.CiPlaces(
        forge="github",
        api_url="https://ghe.example/api/v3",
        project="owner/proj",
        request_number=None,  # a push: no pull request to comment on
        token=TOKEN,
        token_variable="GITHUB_TOKEN",
        run_url="https://ghe.example/owner/proj/actions/runs/99",
        step_summary=tmp_path / "summary.md",
        step_outputs=tmp_path / "out",
    )


def test_places_of_a_github_pull_request_from_the_event_file(tmp_path: Path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    environ = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "owner/proj",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REF": "refs/pull/12/merge",  # the event file wins
        "REPO_TOKEN": TOKEN,
        "REPORT_IMAGE_URL_TEMPLATE": "https://img.example/{name}",
    }
    places = ci.places(environ)
    assert places.forge == "github" and places.request_number == "7"
    assert places.api_url == "https://api.github.com"
    assert places.run_url == "https://github.com/owner/proj/actions/runs/"
    assert (places.token, places.token_variable) == (TOKEN, "REPO_TOKEN")
    assert places.image_url_template == "https://img.example/{name}"
    assert places.step_summary is None and places.step_outputs is None
    assert not places.dotenv_report
    del environ["GITHUB_EVENT_PATH"]
    assert ci.places(environ).request_number == "12"  # else from the ref


def test_places_of_a_gitlab_merge_request():
    environ = {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": "https://gitlab.example/api/v4/",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "3",
        "CI_JOB_URL": "https://gitlab.example/g/p/-/jobs/5",
    }
    assert ci.places(environ) == ci.CiPlaces(
        forge="gitlab",
        api_url="https://gitlab.example/api/v4",
        project="42",
        request_number="3",
        token=None,  # none set: the variable to set is GitLab's own
        token_variable="GITLAB_TOKEN",
        run_url="https://gitlab.example/g/p/-/jobs/5",
        dotenv_report=True,
    )


def test_places_outside_ci_are_nowhere():
    assert ci.places({}) == ci.CiPlaces()
    assert ci.places({"CI": "true", "REPO_TOKEN": TOKEN}).token is None


def test_the_token_is_never_in_the_repr():
    for environ in (
        {"GITHUB_ACTIONS": "true", "GITHUB_TOKEN": TOKEN},
        {"GITLAB_CI": "true", "REPO_TOKEN": TOKEN},
    ):
        places = ci.places(environ)
        assert places.token == TOKEN and TOKEN not in repr(places)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),  # a laptop
        ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/heads/main"}, True),
        ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/heads/feature"}, False),
        (
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_REF": "refs/heads/main",
                "GITHUB_EVENT_NAME": "pull_request",
            },
            False,
        ),
        ({"GITLAB_CI": "true", "CI_COMMIT_BRANCH": "main"}, True),
    ],
)
def test_builds_base_branch_takes_plain_values(tmp_path, environ, expected):
    # Not a Run: cicd.ci is below cicd.context and never imports it (Run.builds_base_branch).
    assert ci.builds_base_branch(Runner(), tmp_path, environ, "main") is expected
