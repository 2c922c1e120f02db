"""Where are we? The commit, the branch, a pull request, and whether this is CI.

Decisions are plain functions of an environment mapping and of git's answers, so tests
can feed them any CI provider's variables without a real CI.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cicd.errors import SuiteError
from cicd.shell import Runner

if TYPE_CHECKING:
    from cicd.context import Run

SHA_RE = re.compile(r"^[0-9a-f]{40}$")


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


def provider(environ: Mapping[str, str]) -> str | None:
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
        if SHA_RE.match(value):
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
    """The repository's web address for the image's ``source`` label, never with credentials."""
    if environ.get("GITHUB_REPOSITORY"):
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{environ['GITHUB_REPOSITORY']}"
    if environ.get("CI_PROJECT_URL"):
        return environ["CI_PROJECT_URL"]
    url = git_remote.strip()
    url = re.sub(r"^(\w+://)[^@/]+@", r"\1", url)  # https://user:token@host -> https://host
    url = re.sub(r"^git@([^:]+):", r"https://\1/", url)  # scp-like ssh -> https
    return url.removesuffix(".git")


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


def builds_base_branch(run: Run) -> bool:
    """True when CI builds the base branch itself (not a pull request): outputs get pushed."""
    if not in_ci(run.environ) or is_pull_request(run.environ):
        return False
    current = run.runner.query(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=run.settings.root)
    return branch(run.environ, (current or "").strip()) == run.settings.base_branch
