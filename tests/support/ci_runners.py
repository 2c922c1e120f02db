"""What the CI-file tests share: the runners, a recording forge, an S3 server, a machine.

``tests/integration/test_ci_github.py`` (pushes to main) and ``test_ci_github_pr.py`` (a pull
request) run the GitHub workflow with act, ``test_ci_gitlab.py`` and ``test_ci_gitlab_mr.py``
the GitLab pipeline with gitlab-ci-local; pytest-xdist runs the files at once (each keeps its
own fixture chain). Each gets a clone of the run's trained project (tests/conftest.py
``training``) whose DVC remote is an S3 bucket (moto in server mode, configured as the docs
say), a registry with htpasswd auth, and a local server recording what the GitHub / GitLab API
receives.

The pull request's own code (its noxfile) records what every nox run can see, as an attacker's
code would: digests of the environment's values and of each of their lines, never the values.
Every secret is made per run and must appear nowhere: not in the runners' output (act runs
with ``--insecure-secrets``, so that a leak is not hidden behind its ``***`` mask), not in a
file left behind.
"""

from __future__ import annotations

import base64
import contextlib
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

from tests.support.fake_http import JsonHandler
from tests.support.project import (
    ROOT,
    SENTINEL,
    SIGNING_KEY,
    SIGNING_KEY_SECRET,
    SIGNING_PUBLIC_KEY,
    USER,
    Registry,
    Trained,
    clone_working_tree,
)

VENV_BIN = Path(sys.executable).parent
IMAGE = "celestial-bodies-classifier"
# The report comment's hidden marker (src/cicd/forge.py), written here as a user's forge has it.
REPORT_MARKER = "<!-- model-cicd-report -->"
# Made per run, so that they are in no file unless the suite or a runner leaks them.
REGISTRY_PASSWORD = SENTINEL  # the test registry's (tests/conftest.py `registry`)
FORGE_TOKEN = "forge-" + secrets.token_hex(12)
AWS_KEY_ID, AWS_SECRET = "AKIA" + secrets.token_hex(8).upper(), "aws-" + secrets.token_hex(16)
# The PEM on one line, as act's --secret-file (dotenv) reads a multi-line value; GitLab gets
# the PEM in base64, the one-line form its masked variables need (docs: verify an image).
SIGNING_KEY_DOTENV = '"' + SIGNING_KEY.strip().replace("\n", "\\n") + '"'
SIGNING_KEY_BASE64 = base64.b64encode(SIGNING_KEY.encode()).decode()
SECRETS = (
    REGISTRY_PASSWORD, FORGE_TOKEN, AWS_SECRET, SIGNING_KEY_SECRET, SIGNING_KEY_BASE64,
)  # fmt: skip
# The checks job runs .ci/run, `nox -s lint docs tests`, on one small unit-test file: the outer
# test run runs lint and every test itself; the job only has to be proven to work. One run per
# CI file runs all three (the pushes to main); a run that shows what follows checks runs fewer
# (.ci/run's CI_RUN_SESSIONS: act's `-j` runs the jobs a job needs, checks included).
ONE_TEST_FILE = "tests/unit/test_ci_outputs.py"
# ... in pytest's own process: the tests session's default (noxfile.py, TEST_EVERYTHING: `-n
# auto`) starts the pytest-xdist workers PYTEST_XDIST_AUTO_NUM_WORKERS says, three Python
# processes that import the suite's fixtures for 8 quick tests.
NESTED_TESTS = {"PYTEST_ADDOPTS": ONE_TEST_FILE, "PYTEST_XDIST_AUTO_NUM_WORKERS": "0"}

PROBE = """

# Test probe (tests/support/ci_runners.py): what this pull request's code can see.
import hashlib as _h, json as _j, os as _o, sys as _s  # noqa: E401, E402, I001

if _o.environ.get("CI_FILES_PROBE"):
    with open(_o.environ["CI_FILES_PROBE"], "a") as _p:
        _values = [*_o.environ.values()]
        _values += [_l.strip() for _v in _o.environ.values() for _l in _v.splitlines()]
        _seen = sorted({_h.sha256(_v.encode()).hexdigest() for _v in _values})
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

    def seed_report(self) -> int:
        """The bot's report comment of an earlier push to the pull request (the next run must
        update it, not add a second): its id."""
        comment_id = 100 + len(self.comments)
        self.comments[comment_id] = f"{REPORT_MARKER}\n# Experiment Report (an earlier push)\n"
        return comment_id


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


@contextlib.contextmanager
def forge(kind: str) -> Iterator[Forge]:
    """A recording API server of ``kind`` ("github" or "gitlab") on a port the OS assigns."""
    server = Forge(kind)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a port the OS chose, with the bucket ``dvc``: its endpoint."""
    process = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        endpoint = None
        for line in process.stdout:
            found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
            if found:
                endpoint = found.group(1)
                break
        assert endpoint, "moto_server did not start"
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep it drained
        _s3_client(endpoint).create_bucket(Bucket="dvc")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def _s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET,
    )  # fmt: skip


def s3_objects(endpoint: str, prefix: str) -> list[str]:
    """Every key under ``prefix``: all pages (a listing stops at 1,000 keys, and the data set
    alone is more: a model whose md5 sorts late was once "not pushed")."""
    pages = (
        _s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket="dvc", Prefix=prefix)
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def wheelhouse(shared: Path) -> Path:
    """The wheels of ci/requirements.txt (CI's own tools), downloaded once per test run: the
    runners' jobs install them with ``PIP_NO_INDEX``, as a runner with a warm cache would."""
    from filelock import FileLock

    wheels = shared / "wheelhouse"
    with FileLock(str(shared / "wheelhouse.lock")):
        if not (wheels / "done").exists():
            # The machine's Python, whose pip the jobs use too (uv's venvs have no pip).
            python = Path(sys.base_prefix) / "bin" / "python3"
            subprocess.run(
                [str(python), "-m", "pip", "download", "-q", "--only-binary=:all:",
                 "-r", str(ROOT / "ci" / "requirements.txt"), "-d", str(wheels)],
                check=True, capture_output=True, timeout=300,
            )  # fmt: skip
            (wheels / "done").touch()
    return wheels


def offline_pip(wheels: Path) -> dict[str, str]:
    """The variables that make the jobs' `pip install -r ci/requirements.txt` use ``wheels``."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}


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
    times: dict[str, float] = field(default_factory=dict)
    # What the runner gives every job: its warm pip cache (the run's wheelhouse).
    job_variables: dict[str, str] = field(default_factory=dict)
    s3: str = ""  # the S3 endpoint of its DVC remote

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
        self.times[label] = time.monotonic() - started
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


def mypy_cache() -> str:
    """The runner's warm mypy cache: this working tree's, which `nox -s lint` has just filled
    when .ci/run runs the tests. The checks job's lint type-checks the same code again in a
    second instead of a minute or more; every proof stays, since mypy takes a cached module
    only when its source's hash matches (an error added in the clone is found: tried)."""
    return os.environ.get("MYPY_CACHE_DIR", str(ROOT / ".mypy_cache"))


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
    env["MYPY_CACHE_DIR"] = mypy_cache()
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    env.update(HOME=str(home), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return env


ORIGINS = {
    "github": "https://github.com/example/celestial.git",
    "gitlab": "git@gitlab.example.com:example/celestial.git",
}


@contextlib.contextmanager
def runner_project(
    name: str, base: Path, registry: Registry, training: Trained, config, seed: bool = True
) -> Iterator[Project]:
    """A runner's project (:func:`make_project`) with its own S3 server and recording forge
    of the kind its name starts with; its runs' durations written at the end."""
    kind = name.split("-")[0]
    with s3_server() as s3, forge(kind) as server:
        project = make_project(base, name, ORIGINS[kind], s3, registry, training, seed)
        project.forge, project.s3 = server, s3
        try:
            yield project
        finally:
            # gitlab-ci-local's variables file is the runner's secret store: it goes.
            shutil.rmtree(project.home / ".gitlab-ci-local", ignore_errors=True)
            write_times(project, base.parent, config)


def make_project(
    base: Path, name: str, origin: str, s3: str, registry: Registry, training: Trained,
    seed: bool = True,
) -> Project:  # fmt: skip
    """A clone of the run's trained project as a forge's repository whose main is this commit,
    its DVC remote the S3 bucket (prefix ``name``); ``seed``: with the outputs of every stage
    but ``train`` and ``evaluate``, so that main's train job pulls the data, trains (a few
    seconds) and pushes the model."""
    root, home = base / "clone", base / "home"
    home.mkdir()
    clone_working_tree(root, training.source)
    project = Project(name, root, home, machine_env(home), registry, base / "probe.jsonl")
    project.job_variables = offline_pip(wheelhouse(training.shared))
    # The working tree's branch may have any name: main checked out, origin/main on it.
    project.git("checkout", "-qB", "main")
    project.git("remote", "set-url", "origin", origin)
    dvc = str(VENV_BIN / "dvc")
    aws = {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    seed_env = {**project.env, **aws}

    def run_dvc(*args: str) -> None:
        subprocess.run([dvc, *args], cwd=root, env=seed_env, check=True, capture_output=True)

    # The docs' way to an S3 remote; in CI the credentials come from the CI's secrets.
    run_dvc("remote", "add", "-f", "-d", "s3", f"s3://dvc/{name}")
    run_dvc("remote", "modify", "s3", "endpointurl", s3)
    if seed:
        run_dvc("remote", "add", "--local", "trained", str(training.remote))
        run_dvc("pull", "-q", "--remote", "trained", "generate", "prepare")
        run_dvc("push", "-q", "--remote", "s3", "generate", "prepare")
        run_dvc("remote", "remove", "--local", "trained")
        for local in ("data/raw", "data/prepared", ".dvc/cache"):  # the runner starts clean
            shutil.rmtree(root / local)
    # The forge's signing key pair: its public half committed (what `nox -s verify` reads),
    # its private half the CI secret SIGNING_KEY (the per-run key of tests/support/project.py).
    (root / "signing" / "publish.pub").write_text(SIGNING_PUBLIC_KEY)
    project.git("commit", "-qam", "DVC remote: S3; the forge's signing key")
    project.git("update-ref", "refs/remotes/origin/main", "HEAD")
    project.git("symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    return project


def model_object(project: Project) -> str:
    """The S3 key of the train stage's ``model`` output as dvc.lock records it."""
    import yaml

    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    (model,) = (out for out in lock["stages"]["train"]["outs"] if out["path"] == "model")
    md5 = model["md5"].removesuffix(".dir")
    return f"{project.name}/files/md5/{md5[:2]}/{md5[2:]}.dir"


def open_pull_request(project: Project, change: str) -> str:
    """A commit on `feature` whose noxfile records what the jobs' environment holds."""
    project.git("checkout", "-qb", "feature")
    with (project.root / "noxfile.py").open("a") as noxfile:
        noxfile.write(PROBE)
    # Not a docs page: the checks job builds the docs strictly, and a page outside the
    # site's navigation fails it.
    (project.root / "pull-request-change.txt").write_text(change)
    project.git("add", "-A")
    project.git("commit", "-qm", change)
    return project.git("rev-parse", "HEAD")


# --------------------------------------------------------------------------- runners

ACTIONS = ROOT / "tests" / "ci" / "actions"


def stand_in_arguments(workflow: Path) -> list[str]:
    """act's `--local-repository` arguments: the local stand-ins of the actions ``workflow``
    uses, at the refs it uses them (actions/checkout needs none: act skips it)."""
    refs = action_refs(workflow)
    arguments = []
    for name in ("setup-python", "cache", "upload-artifact"):
        arguments += ["--local-repository", f"actions/{name}@{refs[name]}={ACTIONS / name}"]
    return arguments


def action_refs(workflow: Path) -> dict[str, str]:
    """`actions/NAME` -> the ref the workflow uses it at (a commit SHA): act replaces an action
    with a local stand-in only when the stand-in is given for that exact ref."""
    return dict(re.findall(r"uses: actions/([\w-]+)@(\S+)", workflow.read_text()))


def act(
    project: Project,
    label: str,
    event_name: str,
    event: dict,
    job: str | None,
    *,
    suite: bool = True,
    checks: str | None = None,
) -> str:
    """act runs ``project``'s workflow for ``event``. ``suite``: the project is this suite's
    repository (its checks job runs one test file, and writes the probe); False for a
    repository that is not the suite's, whose own tests run as they are. ``checks``: the
    sessions the checks job runs (.ci/run's CI_RUN_SESSIONS), or "none"; None: all of them."""
    event_file = project.home.parent / f"{label}.json"
    event_file.write_text(json.dumps(event))
    command = [str(VENV_BIN / "act"), event_name, "-e", str(event_file)]
    command += ["-P", "ubuntu-latest=-self-hosted", "--no-cache-server"]
    # act masks secrets as *** by default: shown, a leak fails the output scan.
    command += ["--insecure-secrets"]
    command += stand_in_arguments(project.root / ".github" / "workflows" / "mlops.yaml")
    assert project.forge is not None
    suite_variables = {**NESTED_TESTS, "CI_FILES_PROBE": str(project.probe)}
    variables = {
        **(suite_variables if suite else {}),
        **({"CI_RUN_SESSIONS": checks} if checks else {}),
        "GITHUB_API_URL": f"{project.forge.url}/api",
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


def gitlab_ci_local(project: Project, label: str, jobs: list[str], variables: dict) -> str:
    command = ["gitlab-ci-local", "--shell-isolation", "--force-shell-executor"]
    settings = {
        "GITLAB_CI": "true",  # gitlab-ci-local says "false"; the jobs must act as on GitLab
        **NESTED_TESTS,
        "CI_FILES_PROBE": str(project.probe),
        # The runner's package cache (a warm runner), instead of a per-project copy.
        "UV_CACHE_DIR": project.env["UV_CACHE_DIR"],
        "MYPY_CACHE_DIR": project.env["MYPY_CACHE_DIR"],
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


# --------------------------------------------------------------------------- checks


def assert_checks_tested_in_one_process(output: str) -> None:
    """The checks job's tests session ran its one file (NESTED_TESTS) in pytest's own process:
    pytest says "collected N items", and no pytest-xdist worker was created."""
    assert "workers [" not in output, "the checks job's pytest started pytest-xdist workers"
    assert re.search(r"collected \d+ items", output), "the checks job's pytest collected nothing"


def assert_promoted(project: Project, promotion: tuple[str, str]) -> None:
    """The promote session ran, and `production` now is the commit's published manifest."""
    sha, output = promotion
    assert "Session promote was successful" in output
    digest = project.manifest(sha).digest
    assert f"promote --to production --digest {digest}" in output, "not the published digest"
    assert f":production moved from nothing (new tag) to {sha[:12]} ({digest})" in output
    assert project.manifest("production") == project.manifest(sha)


def assert_report_updated(project: Project, seeded: int, updates: str) -> None:
    """One comment, the seeded one, now the report of the pull request's last commit, edited
    with ``updates`` (PATCH on GitHub, PUT on GitLab) and nothing else written."""
    assert project.forge is not None
    assert [m for m, _, _ in project.forge.requests if m != "GET"] == [updates]
    assert list(project.forge.comments) == [seeded]
    body = project.forge.comments[seeded]
    assert body.startswith(REPORT_MARKER)
    assert f"Experiment Report ({project.git('rev-parse', 'HEAD')})" in body, body[:300]


def assert_probes(probes: list[dict], token_sessions: set[str]) -> None:
    """The pull request's noxfile saw no registry, DVC or signing secret; the token only in
    report."""
    sessions = {" ".join(p["argv"]) for p in probes}
    assert any("train" in s for s in sessions) and any("report" in s for s in sessions), sessions
    # Digests computed first: a failing assert shows them, never the secrets themselves.
    password, aws = digest_of(REGISTRY_PASSWORD), {digest_of(AWS_SECRET), digest_of(AWS_KEY_ID)}
    signing = {digest_of(SIGNING_KEY_SECRET), digest_of(SIGNING_KEY_BASE64)}
    token = digest_of(FORGE_TOKEN)
    for probe in probes:
        seen = set(probe["seen"])
        assert password not in seen, f"the registry password reached {probe['argv']}"
        assert not aws & seen, f"the DVC remote's credentials reached {probe['argv']}"
        assert not signing & seen, f"the signing key reached {probe['argv']}"
        session = probe["argv"][probe["argv"].index("-s") + 1]
        assert (token in seen) == (session in token_sessions), f"forge token: {probe['argv']}"


def assert_no_secret_left(project: Project) -> None:
    """No secret in any of the runner's outputs, nor in any file under the project's folder."""

    # any(...) and not `secret in text`: a failing assert must not print the secret itself.
    def leaks(data: bytes) -> bool:
        return any(secret.encode() in data for secret in SECRETS)

    for number, output in enumerate(project.outputs):
        assert not leaks(output.encode()), f"a secret in output {number} of {project.name}"
    for path in project.root.parent.rglob("*"):
        if ".nox" in path.parts or not path.is_file() or path.is_symlink():
            continue
        assert not leaks(path.read_bytes()), f"a secret in {path}"


def write_times(project: Project, directory: Path, config) -> None:
    """The duration of every runner run: kept in ``directory``/ci-<name>-times.txt, and
    printed when the terminal shows it (not under pytest-xdist: read the file)."""
    lines = [f"{project.name}: {label}: {time:.0f} s" for label, time in project.times.items()]
    (directory / f"ci-{project.name}-times.txt").write_text("\n".join(lines) + "\n")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for line in lines if reporter else ():
        reporter.write_line(line)
