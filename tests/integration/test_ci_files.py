"""Both CI files run for real: the GitHub workflow by act, the GitLab pipeline by gitlab-ci-local.

Each runner gets a clone of this repository whose DVC remote is an S3 bucket (moto in server
mode, configured as README, Data remote says), a registry with htpasswd auth of its own,
and a local server recording what the GitHub / GitLab API receives. Then, in order:
  1. a push to main: checks (lint, the unit tests), train (pushes to S3), publish;
  2. the same commit pushed again: publish skips ("already published");
  3. a pull request: train without secrets, the report posted as one comment;
  4. a second push to the pull request: that comment updated, not duplicated.
The pull request's own code (its noxfile) records what every nox run can see, as an attacker's
code would: digests of the environment's values, never the values. Every secret is made per run
and must appear nowhere: not in the runners' output, not in a file left behind.
Needs Docker, Debian's docker-registry, rsync and gitlab-ci-local (scripts/bootstrap).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.fake_http import JsonHandler
from tests.support.project import (
    SENTINEL,
    SIGNING_KEY,
    SIGNING_KEY_SECRET,
    SIGNING_PUBLIC_KEY,
    USER,
    Registry,
    clone_working_tree,
    start_registry,
    stop_registry,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ROOT / "tests" / "ci" / "actions"
VENV_BIN = Path(sys.executable).parent
IMAGE = "celestial-bodies-classifier"
# Made per run, so that they are in no file unless the suite or a runner leaks them.
REGISTRY_PASSWORD = SENTINEL  # the test registry's (tests/conftest.py `registry`)
FORGE_TOKEN = "forge-" + secrets.token_hex(12)
AWS_KEY_ID, AWS_SECRET = "AKIA" + secrets.token_hex(8).upper(), "aws-" + secrets.token_hex(16)
# The PEM on one line, as act's --secret-file (dotenv) reads a multi-line value; GitLab gets
# the PEM in base64, the one-line form its masked variables need (README, Verify an image).
SIGNING_KEY_DOTENV = '"' + SIGNING_KEY.strip().replace("\n", "\\n") + '"'
SIGNING_KEY_BASE64 = base64.b64encode(SIGNING_KEY.encode()).decode()
SECRETS = (
    REGISTRY_PASSWORD, FORGE_TOKEN, AWS_SECRET, SIGNING_KEY_SECRET, SIGNING_KEY_BASE64,
)  # fmt: skip
# The checks job runs `nox -s lint tests` on the unit tests (the whole suite would run this
# module again, and the rest of it has its own runs); after the first run of each runner, on
# one file: the job is proven by then.
QUICK_TESTS = "tests/unit"
ONE_TEST_FILE = "tests/unit/test_ci_outputs.py"
TIMES: dict[str, float] = {}

PROBE = """

# Test probe (tests/integration/test_ci_files.py): what this pull request's code can see.
import hashlib as _h, json as _j, os as _o, sys as _s  # noqa: E401, E402, I001

if _o.environ.get("CI_FILES_PROBE"):
    with open(_o.environ["CI_FILES_PROBE"], "a") as _p:
        _seen = sorted(_h.sha256(v.encode()).hexdigest() for v in _o.environ.values())
        _p.write(_j.dumps({"argv": _s.argv[1:], "seen": _seen}) + "\\n")
"""


def digest_of(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --------------------------------------------------------------------------- services


class Forge(ThreadingHTTPServer):
    """Records requests and keeps comments like GitHub issue comments / GitLab MR notes.

    Who the token is, as the real APIs answer: GitHub Actions' GITHUB_TOKEN may not read
    `/user` (403) and writes as github-actions[bot]; a GitLab token reads its user's id.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(("127.0.0.1", 0), _ForgeHandler)
        self.kind = kind
        self.requests: list[tuple[str, str, str]] = []  # method, path, credential header
        self.comments: dict[int, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def comment(self, comment_id: int) -> dict:
        if self.kind == "github":
            author = {"user": {"login": "github-actions[bot]"}}
        else:
            author = {"author": {"id": 7}}
        return {"id": comment_id, "body": self.comments[comment_id], **author}


class _ForgeHandler(JsonHandler):
    server: Forge

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        credential = self.headers.get("Authorization") or self.headers.get("PRIVATE-TOKEN") or ""
        self.server.requests.append((self.command, self.path, credential))
        path = self.path.split("?")[0].rstrip("/")
        last = path.rsplit("/", 1)[-1]
        if last == "user" and self.command == "GET":
            if self.server.kind == "github":
                return self.reply(403, {"message": "Resource not accessible by integration"})
            return self.reply(200, {"id": 7, "username": "project_42_bot"})
        if last in ("comments", "notes") and self.command == "GET":
            return self.reply(200, [self.server.comment(i) for i in self.server.comments])
        if last in ("comments", "notes") and self.command == "POST":
            comment_id = 100 + len(self.server.comments)
            self.server.comments[comment_id] = json.loads(raw)["body"]
            created = {**self.server.comment(comment_id), "html_url": f"{self.server.url}/c"}
            return self.reply(201, created)
        if (
            self.command in ("PATCH", "PUT")
            and last.isdigit()
            and int(last) in self.server.comments
        ):
            self.server.comments[int(last)] = json.loads(raw)["body"]
            return self.reply(200, self.server.comment(int(last)))
        return self.reply(404, {"message": "Not Found"})

    do_GET = do_POST = do_PATCH = do_PUT = _handle


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on a port the OS chose; the DVC remote of every job."""
    process = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    endpoint = None
    for line in process.stdout:
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            endpoint = found.group(1)
            break
    assert endpoint, "moto_server did not start"
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET,
    )  # fmt: skip
    client.create_bucket(Bucket="dvc")
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


def s3_objects(endpoint: str, prefix: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET,
    )  # fmt: skip
    listed = client.list_objects_v2(Bucket="dvc", Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


@pytest.fixture(scope="module")
def forges() -> Iterator[dict[str, Forge]]:
    """One recording API server per runner: GitHub's and GitLab's."""
    servers = {"github": Forge("github"), "gitlab": Forge("gitlab")}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- projects


@dataclass
class Project:
    """A clone of this repository and the machine a runner runs its jobs on (HOME)."""

    name: str  # "github" or "gitlab": the S3 prefix of its DVC remote
    root: Path
    home: Path
    env: dict[str, str]
    registry: Registry
    probe: Path
    forge: Forge | None = None
    outputs: list[str] = field(default_factory=list)

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=self.root, env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"git {args}: {done.stderr}"
        return done.stdout.strip()

    def run(self, label: str, command: list[str], env: dict[str, str]) -> str:
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=self.root, env={**self.env, **env}, capture_output=True, text=True,
            timeout=1200,
        )  # fmt: skip
        TIMES[f"{self.name}: {label}"] = time.monotonic() - started
        output = done.stdout + done.stderr
        self.outputs.append(output)
        (self.home.parent / f"{label}.log").write_text(output)  # for a failing run's details
        assert done.returncode == 0, f"{command[0]} {label} failed:\n{output[-6000:]}"
        return output

    def probes(self) -> list[dict]:
        lines = self.probe.read_text().splitlines() if self.probe.exists() else []
        return [json.loads(line) for line in lines]

    @property
    def bentoml_home(self) -> Path:  # the jobs' default, ~/bentoml (for the leak scan)
        return self.home / "bentoml"

    def manifest(self, tag: str):
        return self.registry.client().manifest(IMAGE, tag)


def machine_env(home: Path) -> dict[str, str]:
    """The machine's environment as a runner's jobs get it: no CI variables, no secrets,
    not this test's virtualenv; package caches kept (a runner's warm caches)."""
    dropped = ("CI", "GITHUB_", "GITLAB_", "NOX_", "PYTEST_", "CONTAINER_REGISTRY", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.pop("VIRTUAL_ENV", None)
    env.pop("BENTOML_HOME", None)
    env["PATH"] = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV_BIN
    )
    env["UV_CACHE_DIR"] = os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    env.update(HOME=str(home), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return env


def make_project(base: Path, name: str, origin: str, s3: str, registry: Registry) -> Project:
    root, home = base / "clone", base / "home"
    home.mkdir()
    clone_working_tree(root)  # uncommitted changes included: what is being developed
    project = Project(name, root, home, machine_env(home), registry, base / "probe.jsonl")
    # A clone of a forge's repository whose main is this commit (the working tree's branch
    # may have any name): main checked out, origin/main and origin/HEAD on it.
    project.git("checkout", "-qB", "main")
    project.git("remote", "set-url", "origin", origin)
    # The README's way to an S3 remote; the credentials come from the CI's secrets.
    for command in (
        ["remote", "add", "-f", "-d", "s3", f"s3://dvc/{name}"],
        ["remote", "modify", "s3", "endpointurl", s3],
    ):
        subprocess.run([str(VENV_BIN / "dvc"), *command], cwd=root, env=project.env, check=True)
    # The forge's signing key pair: its public half committed (what `nox -s verify` reads),
    # its private half the CI secret SIGNING_KEY (the per-run key of tests/support/project.py).
    (root / "signing" / "publish.pub").write_text(SIGNING_PUBLIC_KEY)
    project.git("commit", "-qam", "DVC remote: S3; the forge's signing key")
    project.git("update-ref", "refs/remotes/origin/main", "HEAD")
    project.git("symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    return project


def open_pull_request(project: Project, change: str) -> str:
    """A commit on `feature` whose noxfile records what the jobs' environment holds."""
    if project.git("branch", "--show-current") != "feature":
        project.git("checkout", "-qb", "feature")
        with (project.root / "noxfile.py").open("a") as noxfile:
            noxfile.write(PROBE)
    (project.root / "docs" / "change.md").write_text(change)
    project.git("add", "-A")
    project.git("commit", "-qm", change)
    return project.git("rev-parse", "HEAD")


# --------------------------------------------------------------------------- act


def act(project: Project, label: str, event_name: str, event: dict, job: str | None) -> str:
    event_file = project.home.parent / f"{label}.json"
    event_file.write_text(json.dumps(event))
    stand_ins = [
        f"actions/{name}@{ref}={ACTIONS / name}"
        for name, ref in (("setup-python", "v6"), ("cache", "v4"), ("upload-artifact", "v4"))
    ]
    command = [str(VENV_BIN / "act"), event_name, "-e", str(event_file)]
    command += ["-P", "ubuntu-latest=-self-hosted", "--no-cache-server"]
    for stand_in in stand_ins:
        command += ["--local-repository", stand_in]
    assert project.forge is not None
    quick = QUICK_TESTS if not project.outputs else ONE_TEST_FILE
    command += ["--env", f"PYTEST_ADDOPTS={quick}"]
    command += ["--env", f"GITHUB_API_URL={project.forge.url}/api"]
    command += ["--env", f"CI_FILES_PROBE={project.probe}"]
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
def github(tmp_path_factory, s3, registry, forges, leak_scan) -> Project:
    base = tmp_path_factory.mktemp("github")
    project = make_project(base, "github", "https://github.com/example/celestial.git", s3, registry)
    project.forge = forges["github"]
    leak_scan.add_project(project)
    return project


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
def github_pull_request(github: Project, github_again: str) -> list[str]:
    runs = []
    for push in (1, 2):
        sha = open_pull_request(github, f"pull request, push {push}")
        runs.append(
            act(github, f"act-pull-request-{push}", "pull_request", pr_event(sha), "pipeline")
        )
    return runs


def test_github_push_to_main_checks_trains_and_publishes(github: Project, github_main: str, s3):
    for session in ("lint", "tests", "train", "publish", "verify"):
        assert f"Session {session} was successful" in github_main
    sha = github.git("rev-parse", "HEAD")
    by_sha, latest = github.manifest(sha), github.manifest("latest")
    assert by_sha is not None and by_sha == latest
    assert f"digest={by_sha.digest}" in github_main  # the step output
    assert s3_objects(s3, "github/"), "train on main pushed nothing to the DVC remote"


def test_github_same_commit_again_skips_publish(github: Project, github_again: str):
    assert "already published" in github_again
    assert "bentoml containerize" not in github_again
    assert "skipped=true" in github_again


@pytest.fixture(scope="module")
def github_promote(github: Project, github_again: str) -> tuple[str, str]:
    """The manual promotion (workflow_dispatch with inputs) of main's published commit."""
    sha = github.git("rev-parse", "main")
    event = {**push_event(github), "inputs": {"promote_to": "production", "revision": sha}}
    return sha, act(github, "act-promote", "workflow_dispatch", event, job="promote")


def assert_promoted(project: Project, promotion: tuple[str, str]) -> None:
    """The promote session ran, and `production` now is the commit's published manifest."""
    sha, output = promotion
    assert "Session promote was successful" in output
    assert f":production moved from nothing (new tag) to {sha[:12]}" in output
    assert project.manifest("production") == project.manifest(sha)


def test_github_promotion_moves_the_environment_tag_by_digest(github: Project, github_promote):
    assert_promoted(github, github_promote)


def test_github_pull_request_reports_once_then_updates(github: Project, github_pull_request):
    first, second = github_pull_request
    for run in (first, second):
        assert "Session train was successful" in run and "Session report was successful" in run
        assert "dvc repro --pull" not in run  # no credentials: outputs not pulled
    assert "pull request comment created" in first and "pull request comment updated" in second
    assert github.forge is not None
    requests = github.forge.requests
    assert [m for m, _, _ in requests if m != "GET"] == ["POST", "PATCH"]
    comments = "/api/repos/example/celestial/issues/"
    assert all(p.startswith(comments) or p == "/api/user" for _, p, _ in requests)
    assert all(credential == f"Bearer {FORGE_TOKEN}" for _, _, credential in requests)
    assert_one_report(github)


def assert_one_report(project: Project) -> None:
    """One comment, the report of the pull request's last commit."""
    assert project.forge is not None
    (body,) = project.forge.comments.values()
    assert f"Experiment Report ({project.git('rev-parse', 'HEAD')})" in body, body[:300]


def test_github_pull_request_code_gets_no_secret_but_the_reports_token(
    github: Project, github_pull_request
):
    assert_probes(github.probes(), token_sessions={"report"})


def assert_probes(probes: list[dict], token_sessions: set[str]) -> None:
    """The pull request's noxfile saw no registry or DVC secret; the token only in report."""
    sessions = {" ".join(p["argv"]) for p in probes}
    assert any("train" in s for s in sessions) and any("report" in s for s in sessions), sessions
    # Digests computed first: a failing assert shows them, never the secrets themselves.
    password, aws = digest_of(REGISTRY_PASSWORD), {digest_of(AWS_SECRET), digest_of(AWS_KEY_ID)}
    token = digest_of(FORGE_TOKEN)
    for probe in probes:
        seen = set(probe["seen"])
        assert password not in seen, f"the registry password reached {probe['argv']}"
        assert not aws & seen, f"the DVC remote's credentials reached {probe['argv']}"
        session = probe["argv"][probe["argv"].index("-s") + 1]
        assert (token in seen) == (session in token_sessions), f"forge token: {probe['argv']}"


# --------------------------------------------------------------------------- gitlab-ci-local


def gitlab_ci_local(project: Project, label: str, jobs: list[str], variables: dict) -> str:
    command = ["gitlab-ci-local", "--shell-isolation", "--force-shell-executor"]
    settings = {
        "GITLAB_CI": "true",  # gitlab-ci-local says "false"; the jobs must act as on GitLab
        "PYTEST_ADDOPTS": QUICK_TESTS,
        "CI_FILES_PROBE": str(project.probe),
        # The runner's package cache (a warm runner), instead of a per-project copy.
        "UV_CACHE_DIR": project.env["UV_CACHE_DIR"],
        **variables,
    }
    for name, value in settings.items():
        command += ["--variable", f"{name}={value}"]
    return project.run(label, command + jobs, {})


def gitlab_secrets(project: Project, protected: bool) -> None:
    """The project's CI/CD variables, scoped as .gitlab-ci.yml's header says."""
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
def gitlab(tmp_path_factory, s3, forges, leak_scan) -> Iterator[Project]:
    # A registry of its own (tests/conftest.py's `registry` is GitHub's), scanned the same way.
    registry = start_registry(tmp_path_factory.mktemp("gitlab-registry"))
    leak_scan.add_registry(registry)
    base = tmp_path_factory.mktemp("gitlab")
    project = make_project(
        base, "gitlab", "git@gitlab.example.com:example/celestial.git", s3, registry
    )
    project.forge = forges["gitlab"]
    leak_scan.add_project(project)
    yield project
    # The variables file is the runner's secret store: it must not outlive the test.
    shutil.rmtree(project.home / ".gitlab-ci-local", ignore_errors=True)
    leak_scan.record_pushed_images(registry)
    stop_registry(registry)


@pytest.fixture(scope="module")
def gitlab_main(gitlab: Project) -> str:
    gitlab_secrets(gitlab, protected=True)
    return gitlab_ci_local(gitlab, "gitlab-ci-local-push-main", [], {})


@pytest.fixture(scope="module")
def gitlab_again(gitlab: Project, gitlab_main: str) -> str:
    return gitlab_ci_local(gitlab, "gitlab-ci-local-push-again", ["train", "publish"], {})


@pytest.fixture(scope="module")
def gitlab_merge_request(gitlab: Project, gitlab_again: str) -> list[str]:
    gitlab_secrets(gitlab, protected=False)
    merge_request = {
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_IID": "3",
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature",
        "CI_API_V4_URL": f"{gitlab.forge.url}/api/v4",  # type: ignore[union-attr]
        "CI_PROJECT_ID": "42",
    }
    runs = []
    for push in (1, 2):
        open_pull_request(gitlab, f"merge request, push {push}")
        label = f"gitlab-ci-local-merge-request-{push}"
        runs.append(gitlab_ci_local(gitlab, label, ["train", "report"], merge_request))
    # The last run: the runner's secret store goes (the fixture's teardown makes sure too).
    shutil.rmtree(gitlab.home / ".gitlab-ci-local")
    return runs


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
    assert s3_objects(s3, "gitlab/"), "train on main pushed nothing to the DVC remote"


def test_gitlab_same_commit_again_skips_publish(gitlab: Project, gitlab_again: str):
    assert "already published" in gitlab_again
    assert "bentoml containerize" not in gitlab_again
    assert dotenv_report(gitlab)["PUBLISH_SKIPPED"] == "true"


@pytest.fixture(scope="module")
def gitlab_promote(gitlab: Project, gitlab_again: str) -> tuple[str, str]:
    """The manual promote job, run on main with PROMOTE_TO set, as "Run job" would."""
    sha = gitlab.git("rev-parse", "main")
    variables = {"PROMOTE_TO": "production", "PROMOTE_REVISION": sha}
    return sha, gitlab_ci_local(gitlab, "gitlab-ci-local-promote", ["promote"], variables)


def test_gitlab_promotion_moves_the_environment_tag_by_digest(gitlab: Project, gitlab_promote):
    assert_promoted(gitlab, gitlab_promote)


def test_gitlab_merge_request_reports_once_then_updates(gitlab: Project, gitlab_merge_request):
    first, second = gitlab_merge_request
    for run in (first, second):
        assert "Session train was successful" in run and "Session report was successful" in run
        assert "dvc repro --pull" not in run  # no credentials: outputs not pulled
    assert "merge request comment created" in first and "merge request comment updated" in second
    assert gitlab.forge is not None
    requests = gitlab.forge.requests
    assert [m for m, _, _ in requests if m != "GET"] == ["POST", "PUT"]
    notes = "/api/v4/projects/42/merge_requests/3/notes"
    assert all(p.startswith(notes) or p == "/api/v4/user" for _, p, _ in requests)
    assert all(credential == FORGE_TOKEN for _, _, credential in requests)
    assert_one_report(gitlab)


def test_gitlab_merge_request_code_gets_no_secret_but_the_reports_token(
    gitlab: Project, gitlab_merge_request
):
    assert_probes(gitlab.probes(), token_sessions={"report"})


# --------------------------------------------------------------------------- both


def test_no_secret_in_any_output_or_file_left_behind(
    github: Project, gitlab: Project, github_pull_request, gitlab_merge_request
):
    # any(...) and not `secret in text`: a failing assert must not print the secret itself.
    def leaks(data: bytes) -> bool:
        return any(secret.encode() in data for secret in SECRETS)

    for project in (github, gitlab):
        for number, output in enumerate(project.outputs):
            assert not leaks(output.encode()), f"a secret in output {number} of {project.name}"
        for path in project.root.parent.rglob("*"):
            if ".nox" in path.parts or not path.is_file() or path.is_symlink():
                continue
            assert not leaks(path.read_bytes()), f"a secret in {path}"


@pytest.fixture(scope="module", autouse=True)
def _times(request, tmp_path_factory) -> Iterator[None]:
    """The duration of every runner run, for the README: printed at the end of the module
    (when the terminal shows it) and kept in <basetemp>/ci-runner-times.txt."""
    started = time.monotonic()
    yield
    TIMES["the whole module"] = time.monotonic() - started
    lines = [f"{label}: {seconds:.0f} s" for label, seconds in TIMES.items()]
    (tmp_path_factory.getbasetemp() / "ci-runner-times.txt").write_text("\n".join(lines) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines if reporter else ():
        reporter.write_line(line)
