"""Where are we? The commit, the branch, a pull request, and whether this is CI.

The one module that reads CI providers' variables: the decisions above, and (in
:func:`places`) where CI wants results sent, the forge's API and the files its later steps
read, for :mod:`cicd.forge` and :mod:`cicd.ci_outputs`. Decisions are plain functions of an
environment mapping and of git's answers, so tests can feed them any CI provider's
variables without a real CI.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from cicd.errors import SuiteError
from cicd.shell import Runner

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")  # a full commit id: the tag CI publishes under
# Any tag a revision gives (Revision.tag, or an abbreviation of its SHA): a commit's image.
REVISION_TAG = re.compile(r"[0-9a-f]{7,64}(-dirty-.*)?")
Forge = Literal["github", "gitlab"]


@dataclass(frozen=True)
class Revision:
    """The commit being built and the state of the working tree."""

    sha: str
    dirty_digest: str | None = None  # hash of the uncommitted change, None when clean
    timestamp: int = 0  # commit time, seconds since the epoch (reproducible "created")
    source_url: str = ""

    @property
    def dirty(self) -> bool:
        return self.dirty_digest is not None

    @property
    def tag(self) -> str:
        """The image tag and bento version of this revision.

        A dirty tree gets a distinct tag so that it never overwrites the image of its commit.
        """
        return f"{self.sha}-dirty-{self.dirty_digest}" if self.dirty else self.sha


def in_ci(environ: Mapping[str, str]) -> bool:
    """True on GitHub Actions, GitLab CI and any provider that sets ``CI`` (as most do)."""
    value = environ.get("CI", "").lower()
    return value not in ("", "0", "false", "no") or bool(
        environ.get("GITHUB_ACTIONS") or environ.get("GITLAB_CI")
    )


def provider(environ: Mapping[str, str]) -> Forge | None:
    """The CI provider whose APIs the suite speaks: "github", "gitlab" or None."""
    if environ.get("GITHUB_ACTIONS") == "true":
        return "github"
    if environ.get("GITLAB_CI") == "true":
        return "gitlab"
    return None


def ci_sha(environ: Mapping[str, str]) -> str | None:
    """The commit CI says it builds (pull requests: the head commit, not the merge commit)."""
    for name in ("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", "CI_COMMIT_SHA", "GITHUB_SHA"):
        value = environ.get(name, "").strip().lower()
        if COMMIT_SHA.fullmatch(value):
            return value
    return None


def branch(environ: Mapping[str, str], git_branch: str | None) -> str | None:
    """The branch being built: CI's variables first, then git's current branch."""
    for name in ("GITHUB_HEAD_REF", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "CI_COMMIT_BRANCH"):
        if environ.get(name):
            return environ[name]
    ref = environ.get("GITHUB_REF", "")
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return git_branch


def is_pull_request(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_EVENT_NAME") in ("pull_request", "pull_request_target") or (
        environ.get("CI_PIPELINE_SOURCE") == "merge_request_event"
    )


def source_url(environ: Mapping[str, str], git_remote: str) -> str:
    """The repository's web address for the image's ``source`` label, never with credentials.

    Only a web address: CI's own, an http(s) remote, or an ssh remote in a forge's form
    (``git@host:owner/repo.git``, ``ssh://git@host[:port]/owner/repo.git``) as https. Any
    other remote (a filesystem path, ``file://``, none) gives "": no label rather than a
    path of the machine that built it (the label is information, not evidence)."""
    if environ.get("GITHUB_REPOSITORY"):
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{environ['GITHUB_REPOSITORY']}"
    if environ.get("CI_PROJECT_URL"):
        return environ["CI_PROJECT_URL"]
    url = git_remote.strip()
    forms = (
        (r"^(https?://)(?:[^@/]+@)?([^/]+/.+)$", r"\1\2"),  # drops user:token@
        (r"^ssh://(?:[^@/]+@)?([^/:]+)(?::\d+)?/(.+)$", r"https://\1/\2"),
        (r"^[\w.-]+@([\w.-]+):(?!/)(.+)$", r"https://\1/\2"),  # scp-like git@host:owner/repo
    )
    for pattern, replacement in forms:
        if re.match(pattern, url):
            return re.sub(pattern, replacement, url).removesuffix("/").removesuffix(".git")
    return ""


@dataclass(frozen=True)
class CiPlaces:
    """Where CI wants results: its forge's API for the pull/merge request, the files its
    later steps read, and the run's web page. Read once, by :func:`places`."""

    forge: Forge | None = None  # whose API: "github", "gitlab", None outside those CIs
    api_url: str = ""  # GITHUB_API_URL / CI_API_V4_URL, no trailing slash
    project: str = ""  # GitHub "owner/repo" (GITHUB_REPOSITORY) / GitLab CI_PROJECT_ID
    request_number: str | None = None  # the PR number / MR IID; None when the run has none
    token: str | None = field(default=None, repr=False)  # never in repr: places get printed
    token_variable: str = ""  # which variable holds (or should hold) the token
    run_url: str = ""  # web page of the run: GitHub's workflow run, GitLab's job (CI_JOB_URL)
    step_summary: Path | None = None  # GITHUB_STEP_SUMMARY
    step_outputs: Path | None = None  # GITHUB_OUTPUT
    dotenv_report: bool = False  # GitLab CI: later jobs read a dotenv report
    image_url_template: str | None = None  # REPORT_IMAGE_URL_TEMPLATE (docs/report.md)


def places(environ: Mapping[str, str]) -> CiPlaces:
    """Where CI wants results, from ``environ``: :class:`CiPlaces`."""
    step_summary = environ.get("GITHUB_STEP_SUMMARY")
    step_outputs = environ.get("GITHUB_OUTPUT")
    common = CiPlaces(
        step_summary=Path(step_summary) if step_summary else None,
        step_outputs=Path(step_outputs) if step_outputs else None,
        dotenv_report=environ.get("GITLAB_CI") == "true",
        image_url_template=environ.get("REPORT_IMAGE_URL_TEMPLATE") or None,
    )
    forge = provider(environ)
    if forge == "github":
        repository = environ.get("GITHUB_REPOSITORY", "")
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        number = _github_pr_number(environ)
        token_variable, token = _token(environ, "GITHUB_TOKEN")
        return replace(
            common,
            forge=forge,
            api_url=environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
            project=repository,
            request_number=str(number) if number else None,
            token=token,
            token_variable=token_variable,
            run_url=f"{server}/{repository}/actions/runs/{environ.get('GITHUB_RUN_ID', '')}",
        )
    if forge == "gitlab":
        token_variable, token = _token(environ, "GITLAB_TOKEN")
        return replace(
            common,
            forge=forge,
            api_url=environ.get("CI_API_V4_URL", "https://gitlab.com/api/v4").rstrip("/"),
            project=environ.get("CI_PROJECT_ID", ""),
            request_number=environ.get("CI_MERGE_REQUEST_IID") or None,
            token=token,
            token_variable=token_variable,
            run_url=environ.get("CI_JOB_URL", ""),
        )
    return common


def _token(environ: Mapping[str, str], preferred: str) -> tuple[str, str | None]:
    """The forge's own token variable, else ``REPO_TOKEN``: (its name, its value or None)."""
    for name in (preferred, "REPO_TOKEN"):
        if environ.get(name):
            return name, environ[name]
    return preferred, None


def _github_pr_number(environ: Mapping[str, str]) -> int | None:
    """The PR number from the event payload, else from ``GITHUB_REF=refs/pull/N/merge``."""
    event_path = environ.get("GITHUB_EVENT_PATH")
    if event_path and Path(event_path).is_file():
        try:
            event = json.loads(Path(event_path).read_text(encoding="utf-8"))
        except ValueError:
            event = {}
        number = (event.get("pull_request") or {}).get("number")
        if isinstance(number, int):
            return number
    match = re.fullmatch(r"refs/pull/(\d+)/(?:merge|head)", environ.get("GITHUB_REF", ""))
    return int(match.group(1)) if match else None


def revision(runner: Runner, root: Path, environ: Mapping[str, str]) -> Revision:
    """Read the commit to build; a dirty tree is refused in CI and gets a distinct tag locally."""

    def git(*args: str, check: bool = True) -> str:
        return runner.run(["git", *args], cwd=root, quiet=True, always=True, check=check).strip()

    try:
        head = git("rev-parse", "HEAD")
    except SuiteError as exc:
        raise SuiteError(
            f"{root} is not a git repository with a commit: clone the project or commit first"
        ) from exc
    sha = ci_sha(environ) or head
    status = git("status", "--porcelain")
    digest = None
    if status:
        if in_ci(environ):
            raise SuiteError(
                "the working tree has uncommitted changes in CI ("
                + status.splitlines()[0].strip()
                + "): a CI job must build a commit; commit the change or add the file to .gitignore"
            )
        diff = git("diff", "HEAD") + status
        digest = hashlib.sha256(diff.encode()).hexdigest()[:8]
    timestamp = int(git("show", "-s", "--format=%ct", "HEAD") or 0)
    remote = git("config", "--get", "remote.origin.url", check=False)
    return Revision(sha, digest, timestamp, source_url(environ, remote))


def git(runner: Runner, root: Path, *args: str) -> str | None:
    """git's output in ``root``, stripped: "" when it printed nothing (``cat-file -e`` found
    the object); None when it failed (not a repository, an unknown object). Read-only: it
    runs in a dry run too."""
    found = runner.query(["git", *args], cwd=root)
    return None if found is None else found.strip()


def builds_base_branch(
    runner: Runner, root: Path, environ: Mapping[str, str], base_branch: str
) -> bool:
    """True when CI builds the base branch itself (not a pull request): outputs get pushed."""
    if not in_ci(environ) or is_pull_request(environ):
        return False
    current = runner.query(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=root)
    return branch(environ, (current or "").strip()) == base_branch
