"""The rendered repository's own GitHub workflow, run by act, with no line of the suite edited.

A new repository rendered from template/ (the iris model), the suite from a wheel built from
this working tree (its requirements.txt names the wheel, as a user's names a git URL or a
version), its signing key pair made as its README says (the public half committed, the
private half the secret SIGNING_KEY). Then, as on GitHub:
  0. on the laptop: `nox -s train`, dvc.lock committed (the README's steps): the run's shared
     render and train (``rendered_template``, tests/support/template.py), whose trained
     commit the runner checks out alone, the signing key committed on top;
  1. a push to main: `checks` (its .ci/run: its own lint and tests, never the suite's), then
     `pipeline`: train, publish (to a registry with a password), verify (signed);
  2. a pull request: `checks`, provisioning only (its .ci/run's CI_RUN_SESSIONS=none: the push
     to main ran both sessions), then `review`: train without secrets and the report comment.
The runners' machinery is tests/support/ci_runners.py's (the recording forge, the wheelhouse
of ci/requirements.txt, act's stand-in actions); the durations go to
ci-template-github-times.txt and the terminal. Minutes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from cicd import signing
from tests.support import ci_runners
from tests.support.ci_runners import Project
from tests.support.project import SIGNING_PUBLIC_KEY
from tests.support.template import RenderedTemplate

pytestmark = [pytest.mark.slow, pytest.mark.docker]

IMAGE = "iris-demo"
ORIGIN = "https://github.com/example/iris-demo.git"


@pytest.fixture(scope="module")
def rendered(
    tmp_path_factory, registry, leak_scan, pytestconfig, rendered_template: RenderedTemplate
) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("template-github")
    root, home = base / "clone", base / "home"
    home.mkdir()
    project = Project("template-github", root, home, ci_runners.machine_env(home), registry,
                      base / "probe.jsonl")  # fmt: skip
    project.job_variables = ci_runners.offline_pip(ci_runners.wheelhouse(base))
    # The laptop's trained commit alone (no .nox, model, data/prepared or DVC cache: the
    # runner starts from the commit), whatever the laptop's working copy has done since.
    subprocess.run(
        ["git", "clone", "-q", "--no-checkout", str(rendered_template.root), str(root)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    project.git("checkout", "-q", "-B", "main", rendered_template.trained)
    project.git("remote", "set-url", "origin", ORIGIN)
    # The README's first run: `invoke keygen` writes signing/publish.pub (committed); its
    # private half is the secret SIGNING_KEY (here the run's key, as the other CI tests).
    (root / "signing").mkdir(exist_ok=True)
    (root / "signing" / "publish.pub").write_text(SIGNING_PUBLIC_KEY)
    project.git("add", "signing/publish.pub")
    project.git("commit", "-qm", "The image signing key")
    project.git("update-ref", "refs/remotes/origin/main", "HEAD")
    with ci_runners.forge("github") as server:
        project.forge = server
        leak_scan.add_project(project)
        try:
            yield project
        finally:
            ci_runners.write_times(project, base.parent, pytestconfig)


@pytest.fixture(scope="module")
def main_push(rendered: Project) -> str:
    event = {
        "ref": "refs/heads/main",
        "after": rendered.git("rev-parse", "HEAD"),
        "repository": {"full_name": "example/iris-demo", "default_branch": "main"},
    }
    return ci_runners.act(rendered, "act-push-main", "push", event, job=None, suite=False)


@pytest.fixture(scope="module")
def pull_request(rendered: Project, main_push: str) -> str:
    rendered.git("checkout", "-qb", "feature")
    params = rendered.root / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0", "C: 0.5"))
    rendered.git("commit", "-qam", "A weaker regularisation")
    sha = rendered.git("rev-parse", "HEAD")
    event = ci_runners.pr_event(sha)
    event["repository"]["full_name"] = "example/iris-demo"
    return ci_runners.act(
        rendered, "act-pull-request", "pull_request", event, "review", suite=False, checks="none"
    )


def test_the_rendered_workflow_on_a_push_to_main_publishes_a_signed_image(
    rendered: Project, main_push: str
):
    for session in ("lint", "tests", "train", "publish", "verify"):
        assert f"Session {session} was successful" in main_push
    assert "tests/test_classifier.py" in main_push  # its own tests ran, not the suite's
    assert "tests/unit/" not in main_push
    keyid = signing.public_key(rendered.root / "signing" / "publish.pub").keyid
    assert f"ok    signature  signed by key {keyid[:16]}… (publish.pub)" in main_push
    sha = rendered.git("rev-parse", "main")
    manifest = rendered.registry.client().manifest(IMAGE, sha)
    assert manifest is not None and f"digest={manifest.digest}" in main_push


def test_the_rendered_workflow_on_a_pull_request_trains_and_reports(
    rendered: Project, pull_request: str
):
    assert "CI_RUN_SESSIONS=none: provisioned, no session run" in pull_request
    for session in ("train", "report"):
        assert f"Session {session} was successful" in pull_request
    for session in ("lint", "tests", "publish"):
        assert f"Session {session}" not in pull_request
    assert "pull request comment created" in pull_request
    assert rendered.forge is not None
    (body,) = rendered.forge.comments.values()
    assert f"Experiment Report ({rendered.git('rev-parse', 'HEAD')})" in body, body[:300]


def test_no_secret_in_any_output_or_file_left_behind(rendered: Project, pull_request: str):
    ci_runners.assert_no_secret_left(rendered)
