"""The experiment report against real toy DVC repositories, and publishing against a fake API.

The DVC tests build one small project (a one-stage pipeline writing params-dependent
metrics and three PNG plots, a local DVC remote, a bare "origin"): `main` ran and pushed,
`feature` changed a parameter and re-ran. Publishing runs against a local HTTP server that
mimics the GitHub / GitLab comment endpoints and records every request.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from cicd import ci
from cicd.errors import SuiteError
from cicd.forge import MARKER, ci_context, comment_body, publish_report
from cicd.report import write_report
from cicd.shell import Runner, tool
from tests.support.fake_forge import (
    BOT,
    REPORT_TEXT,
    PagingForge,
    github_env,
    gitlab_env,
    serving,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("training_history", "pred_preview", "confusion_matrix")

MAKE_PY = """\
import json, pathlib, yaml
from PIL import Image
lr = yaml.safe_load(open("params.yaml"))["train"]["lr"]
out = pathlib.Path("evaluation")
(out / "plots").mkdir(parents=True, exist_ok=True)
metrics = {"val_loss": 1 - lr, "val_acc": 2 * lr, "precision": 0.5, "recall": lr, "f1_score": 0.5}
(out / "metrics.json").write_text(json.dumps(metrics))
for i, name in enumerate(["training_history", "pred_preview", "confusion_matrix"]):
    size = (int(lr * 100) + i, 20)  # base and feature images differ, visibly
    Image.new("RGB", size, (int(lr * 255), 60 * i, 0)).save(out / "plots" / f"{name}.png")
"""

DVC_YAML = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [train]
    outs:
      - evaluation/plots
    metrics:
      - evaluation/metrics.json:
          cache: false
plots:
  - evaluation/plots/training_history.png
  - evaluation/plots/pred_preview.png
  - evaluation/plots/confusion_matrix.png
"""


# --------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)  # the stage's `python` needs PIL and yaml
    return {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "DVC_NO_ANALYTICS": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }


def sh(cwd: Path, *cmd: str) -> str:
    if cmd[0] == "dvc":
        cmd = (tool("dvc"), *cmd[1:])
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    return done.stdout


def set_lr(repo: Path, lr: float) -> None:
    (repo / "params.yaml").write_text(f"train:\n  lr: {lr}\n  epochs: 3\n")


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()


def image_links(report: Path) -> list[Path]:
    """Every image the report shows, resolved relative to the report."""
    import re

    text = report.read_text()
    return [report.parent / m for m in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text)]


@dataclass
class Project:
    work: Path  # non-bare repo, `feature` checked out, local `main` exists
    origin: Path  # bare clone of work, what CI clones from
    remote: Path  # DVC remote (local directory)
    main_images: dict[str, bytes]
    main_plots_dir_hash: str


@pytest.fixture(autouse=True)
def _quiet_dvc(monkeypatch: pytest.MonkeyPatch) -> None:
    # write_report runs dvc/git with the process environment.
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("dvcproject")
    work, remote, origin = root / "work", root / "dvc-remote", root / "origin.git"
    work.mkdir()
    remote.mkdir()
    sh(work, "git", "init", "-q", "-b", "main")
    sh(work, "dvc", "init", "-q")
    sh(work, "dvc", "remote", "add", "-d", "local", str(remote))
    (work / "make.py").write_text(MAKE_PY)
    (work / "dvc.yaml").write_text(DVC_YAML)
    (work / ".gitignore").write_text("/report.md\n/report/\n")
    set_lr(work, 0.1)
    sh(work, "dvc", "repro", "-q")
    sh(work, "git", "add", "-A")
    sh(work, "git", "commit", "-qm", "main: baseline")
    sh(work, "dvc", "push", "-q")
    main_images = {n: (work / f"evaluation/plots/{n}.png").read_bytes() for n in PLOTS}
    lock = (work / "dvc.lock").read_text()
    dir_hash = lock.split("path: evaluation/plots")[1].split("md5: ")[1].split(".dir")[0]

    sh(work, "git", "checkout", "-qb", "feature")
    set_lr(work, 0.3)
    sh(work, "dvc", "repro", "-q")
    sh(work, "git", "commit", "-qam", "feature: higher lr")
    sh(work, "dvc", "push", "-q")
    sh(root, "git", "clone", "-q", "--bare", str(work), str(origin))
    return Project(work, origin, remote, main_images, dir_hash)


def shallow_feature_clone(project: Project, dest: Path) -> Path:
    """What CI checks out: only the feature tip, no `main`, an empty DVC cache."""
    sh(
        dest.parent,
        "git",
        "clone",
        "-q",
        "--depth",
        "1",
        "-b",
        "feature",
        f"file://{project.origin}",
        str(dest),
    )
    return dest


# --------------------------------------------------------------------------- report


@pytest.mark.slow
def test_feature_vs_main_has_params_metric_deltas_and_valid_images(project: Project):
    out = io.StringIO()
    report = write_report(Runner(out=out, verbose=True), project.work, sha="abc1234")

    assert report == project.work / "report.md"
    text = report.read_text()
    assert text.startswith("# Experiment Report (abc1234)")
    assert "| train.lr | 0.1 | 0.3 |" in text
    # which way is better: from the names here (no gates.yaml)
    assert "| val_acc | 0.2 | 0.6 | +0.4 better | ↑ higher |" in text
    assert "| val_loss | 0.9 | 0.7 | -0.2 better | ↓ lower |" in text
    assert "| recall | 0.1 | 0.3 | +0.2 better | ↑ higher |" in text
    assert "precision" not in text  # unchanged metrics are not listed, as in `dvc metrics diff`
    links = image_links(report)
    assert len(links) == 6
    for link in links:
        assert link.parent == project.work / "report"
        assert_png(link)
    for name in PLOTS:
        assert f"### {name}" in text
        assert (project.work / f"report/main_evaluation_plots_{name}.png").read_bytes() == (
            project.main_images[name]
        )
    assert "dvc params diff main --json" in out.getvalue()
    assert "git fetch" not in out.getvalue()  # main is local: nothing to fetch


@pytest.mark.slow
def test_nothing_changed_says_no_changes(project: Project, tmp_path: Path):
    report = write_report(
        Runner(out=io.StringIO()), project.work, base="feature", out=tmp_path / "r.md", sha="s"
    )
    text = report.read_text()
    assert "No changes: parameters are the same as on `feature`." in text
    assert "No changes: metrics are the same as on `feature`." in text
    assert "| val_acc |" not in text
    for link in image_links(report):
        assert link.parent == tmp_path / "r"  # images next to a custom report path
        assert_png(link)


HISTORY_PY = """\
import json, pathlib, yaml
lr = yaml.safe_load(open("params.yaml"))["train"]["lr"]
rows = [{"epoch": e, "train_loss": lr / e, "val_loss": 2 * lr / e} for e in (1, 2, 3)]
pathlib.Path("history.json").write_text(json.dumps(rows))
"""

VEGA_DVC_YAML = """\
stages:
  history:
    cmd: python history.py
    deps: [history.py]
    params: [train]
    outs:
      - history.json:
          cache: false
plots:
  - Loss:
      template: linear
      x: epoch
      y:
        history.json: [train_loss, val_loss]
"""


@pytest.mark.slow
def test_the_vega_plots_of_dvc_yaml_are_drawn_as_svg_with_both_revisions(tmp_path: Path):
    import xml.etree.ElementTree as ET

    repo = tmp_path / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "init", "-q")
    (repo / "history.py").write_text(HISTORY_PY)
    (repo / "dvc.yaml").write_text(VEGA_DVC_YAML)
    set_lr(repo, 0.1)
    sh(repo, "dvc", "repro", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "main")
    sh(repo, "git", "checkout", "-qb", "feature")
    set_lr(repo, 0.3)
    sh(repo, "dvc", "repro", "-q")

    text = write_report(Runner(out=io.StringIO()), repo, sha="s").read_text()

    assert '### Loss\n\n![Loss](report/vega_loss.svg "Loss")' in text
    assert "Dashed: `main`; solid: workspace." in text
    drawing = ET.parse(repo / "report/vega_loss.svg").getroot()
    lines = drawing.findall("{http://www.w3.org/2000/svg}polyline")
    assert [line.get("stroke-dasharray") for line in lines] == ["6 4", "6 4", None, None]
    legend = [t.text for t in drawing.findall("{http://www.w3.org/2000/svg}text")][-4:]
    assert legend == ["main: train_loss", "main: val_loss", "workspace: train_loss",
                      "workspace: val_loss"]  # fmt: skip


@pytest.mark.slow
def test_base_without_metrics_is_no_baseline(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "init", "-q")
    (repo / "make.py").write_text(MAKE_PY)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    set_lr(repo, 0.1)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "pipeline, never run")
    sh(repo, "git", "checkout", "-qb", "feature")
    sh(repo, "dvc", "repro", "-q")

    text = write_report(Runner(out=io.StringIO()), repo, sha="s").read_text()

    assert "No baseline: `main` has no metrics yet" in text
    assert "| val_acc | — | 0.2 | — | ↑ higher |" in text
    assert text.count("(not available)") == 3  # main has no plots; workspace ones are shown
    links = image_links(repo / "report.md")
    assert len(links) == 3
    for link in links:
        assert link.name.startswith("workspace_")
        assert_png(link)


@pytest.mark.slow
def test_shallow_clone_fetches_base_and_its_plots_from_the_dvc_remote(
    project: Project, tmp_path: Path
):
    clone = shallow_feature_clone(project, tmp_path / "ci")
    sh(clone, "dvc", "pull", "-q")  # the workspace's outputs, as a CI job would get them
    cached = {p.name for p in (clone / ".dvc/cache").rglob("*") if p.is_file()}
    assert not any(project.main_plots_dir_hash[2:] in name for name in cached)

    out = io.StringIO()
    report = write_report(Runner(out=out, verbose=True), clone, sha="s")

    assert "$ git fetch --depth=1 origin main:main" in out.getvalue()
    text = report.read_text()
    assert "| train.lr | 0.1 | 0.3 |" in text
    for name in PLOTS:
        main_png = clone / f"report/main_evaluation_plots_{name}.png"
        assert_png(main_png)
        assert main_png.read_bytes() == project.main_images[name]  # from the DVC remote
    assert "(not available)" not in text


@pytest.mark.slow
def test_base_plots_missing_from_the_remote_are_reported_not_fatal(
    project: Project, tmp_path: Path
):
    clone = shallow_feature_clone(project, tmp_path / "ci")
    sh(clone, "dvc", "pull", "-q")
    away = project.remote.with_name("dvc-remote-away")
    # DVC reads the remote of `main` from main's own .dvc/config: move the remote itself.
    project.remote.rename(away)
    try:
        text = write_report(Runner(out=io.StringIO()), clone, sha="s").read_text()
    finally:
        away.rename(project.remote)
    assert text.count("(not available)") == 3
    assert "Some plots could not be loaded" in text
    assert "main:" in text
    assert "| val_acc | 0.2 | 0.6 | +0.4 better | ↑ higher |" in text  # in git: still compared


def test_missing_base_is_a_clear_error(tmp_path: Path):
    sh(tmp_path, "git", "init", "-q", "-b", "trunk")
    sh(tmp_path, "git", "commit", "-q", "--allow-empty", "-m", "x")
    with pytest.raises(SuiteError) as error:
        write_report(Runner(out=io.StringIO()), tmp_path, base="main")
    message = str(error.value)
    assert "base branch `main` is neither local nor on `origin`" in message
    assert "git fetch origin main:main" in message
    assert "\n" not in message
    assert not (tmp_path / "report.md").exists()


@pytest.mark.slow
def test_dry_run_shows_fetch_and_dvc_commands_and_writes_nothing(project: Project, tmp_path: Path):
    clone = shallow_feature_clone(project, tmp_path / "ci")
    out = io.StringIO()
    report = write_report(Runner(dry=True, out=out), clone, sha="s")
    shown = out.getvalue()
    assert "[dry-run] $ git fetch --depth=1 origin main:main" in shown
    for command in ("params diff main --json", "metrics diff main --json", "plots diff main"):
        assert command in shown
    assert not report.exists()
    assert not (clone / "report").exists()
    # Nothing was fetched.
    assert sh(clone, "git", "branch", "--list", "main").strip() == ""


# --------------------------------------------------------------------------- publishing


@pytest.fixture
def forge() -> Iterator[PagingForge]:
    """A forge that pages by number without paging headers, one human comment on it."""
    with serving(PagingForge("plain", [{"id": 1, "body": "LGTM, a human"}], next_id=100)) as f:
        yield f


TOKEN = "ghs_s3cretTOKENvalue123"


def test_github_creates_one_comment_then_updates_it(
    forge: PagingForge, tmp_path: Path, report_md: Path, capsys: pytest.CaptureFixture[str]
):
    environ = github_env(forge, tmp_path, TOKEN)

    first = publish_report(Runner(verbose=True), report_md, environ)
    second = publish_report(Runner(verbose=True), report_md, environ)

    methods = [(r["method"], urlsplit(r["path"]).path) for r in forge.requests]
    assert methods == [
        ("GET", "/api/repos/owner/proj/issues/7/comments"),
        ("POST", "/api/repos/owner/proj/issues/7/comments"),
        ("GET", "/api/repos/owner/proj/issues/7/comments"),
        ("GET", "/api/user"),
        ("PATCH", "/api/repos/owner/proj/issues/comments/100"),
    ]
    assert "comment created" in first and "comment updated" in second
    assert "job summary" in first
    for request in forge.requests:
        assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in request["path"]
    assert len(forge.marked()) == 1 and len(forge.comments) == 2
    assert forge.comments[0]["body"] == "LGTM, a human"  # not ours: untouched
    body = forge.marked()[0]["body"]
    assert body.startswith(MARKER)
    assert "| train.lr | 0.1 | 0.3 |" in body
    # Images are not uploaded: they link to the run's artifacts.
    assert "report/main_t.png" not in body
    assert "[t (main)](https://github.example/owner/proj/actions/runs/99)" in body
    assert "not uploaded to any image host" in body
    assert (tmp_path / "summary.md").read_text().count("| train.lr | 0.1 | 0.3 |") == 2
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    assert "curl --request PATCH --header 'Authorization: Bearer $GITHUB_TOKEN'" in captured.out


def test_github_pr_number_from_ref_and_repo_token(
    forge: PagingForge, tmp_path: Path, report_md: Path
):
    environ = github_env(forge, tmp_path, TOKEN, GITHUB_REF="refs/pull/12/merge")
    del environ["GITHUB_EVENT_PATH"], environ["GITHUB_TOKEN"]
    environ["REPO_TOKEN"] = "other-token"
    publish_report(Runner(out=io.StringIO()), report_md, environ)
    assert urlsplit(forge.requests[-1]["path"]).path == "/api/repos/owner/proj/issues/12/comments"
    assert forge.requests[-1]["headers"]["authorization"] == "Bearer other-token"


def test_marked_comment_on_a_later_page_is_found(
    forge: PagingForge, tmp_path: Path, report_md: Path
):
    forge.comments = [{"id": i, "body": f"chatter {i}"} for i in range(1, 151)]
    forge.comments[120].update(body=f"{MARKER}\nold report", user={"login": BOT["login"]})
    publish_report(Runner(out=io.StringIO()), report_md, github_env(forge, tmp_path, TOKEN))
    assert [r["method"] for r in forge.requests] == ["GET", "GET", "GET", "PATCH"]
    assert forge.requests[-1]["path"].endswith("/issues/comments/121")
    assert len(forge.marked()) == 1 and "train.lr" in forge.marked()[0]["body"]


def test_gitlab_creates_then_updates_the_merge_request_note(
    forge: PagingForge, report_md: Path, capsys: pytest.CaptureFixture[str]
):
    environ = gitlab_env(forge, TOKEN)
    publish_report(Runner(), report_md, environ)
    result = publish_report(Runner(), report_md, environ)

    methods = [(r["method"], urlsplit(r["path"]).path) for r in forge.requests]
    notes = "/api/v4/projects/42/merge_requests/3/notes"
    user = ("GET", "/api/v4/user")
    assert methods == [
        ("GET", notes),
        ("POST", notes),
        ("GET", notes),
        user,
        ("PUT", f"{notes}/100"),
    ]
    assert "merge request comment updated" in result
    for request in forge.requests:
        assert request["headers"]["private-token"] == TOKEN
        assert "authorization" not in request["headers"]
        assert TOKEN not in request["path"]
    body = forge.marked()[0]["body"]
    assert "(https://gitlab.example/g/p/-/jobs/5/artifacts/browse)" in body
    assert TOKEN not in "".join(capsys.readouterr())


def test_no_token_is_a_clear_error_and_sends_nothing(
    forge: PagingForge, tmp_path: Path, report_md: Path
):
    environ = github_env(forge, tmp_path, TOKEN)
    del environ["GITHUB_TOKEN"]
    with pytest.raises(SuiteError, match=r"set GITHUB_TOKEN \(or REPO_TOKEN\)"):
        publish_report(Runner(out=io.StringIO()), report_md, environ)
    gitlab = gitlab_env(forge, TOKEN)
    del gitlab["GITLAB_TOKEN"]
    with pytest.raises(SuiteError, match="set GITLAB_TOKEN"):
        publish_report(Runner(out=io.StringIO()), report_md, gitlab)
    assert forge.requests == []


def test_forbidden_token_error_is_readable_and_masked(
    forge: PagingForge, tmp_path: Path, report_md: Path, capsys: pytest.CaptureFixture[str]
):
    secret = "forbidden-" + TOKEN
    environ = github_env(forge, tmp_path, TOKEN, GITHUB_TOKEN=secret)
    with pytest.raises(SuiteError) as error:
        publish_report(Runner(), report_md, environ)
    assert "HTTP 403" in str(error.value)
    assert "pull-requests: write" in str(error.value)
    assert secret not in str(error.value) + "".join(capsys.readouterr())


def test_not_in_ci_or_no_pull_request_posts_no_comment(
    forge: PagingForge, tmp_path: Path, report_md: Path
):
    assert publish_report(Runner(), report_md, {}) == "not in CI: nothing posted"
    push = github_env(forge, tmp_path, TOKEN)
    del push["GITHUB_EVENT_PATH"], push["GITHUB_TOKEN"]  # a push to main: no PR, no token
    result = publish_report(Runner(out=io.StringIO()), report_md, push)
    assert "no comment" in result
    assert "train.lr" in (tmp_path / "summary.md").read_text()
    assert forge.requests == []


def test_dry_run_shows_requests_and_sends_none(
    forge: PagingForge, tmp_path: Path, report_md: Path, capsys: pytest.CaptureFixture[str]
):
    result = publish_report(Runner(dry=True), report_md, github_env(forge, tmp_path, TOKEN))
    shown = capsys.readouterr().out
    assert result.endswith("dry-run: nothing posted")
    assert "[dry-run] $ curl --request GET" in shown
    assert "[dry-run] $ curl --request POST" in shown
    assert TOKEN not in shown
    assert forge.requests == []
    assert not (tmp_path / "summary.md").exists()


def test_image_host_opt_in_links_images_there(tmp_path: Path):
    environ = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "o/p",
        "GITHUB_RUN_ID": "1",
        "REPORT_IMAGE_URL_TEMPLATE": "https://img.example/run1/{name}",
    }
    context = ci_context(ci.places(environ))
    assert context is not None and TOKEN not in repr(context)
    body = comment_body(REPORT_TEXT, context)
    assert "![t (main)](https://img.example/run1/main_t.png)" in body
    assert "![t](https://img.example/run1/workspace_t.png)" in body
    assert "not uploaded" not in body
