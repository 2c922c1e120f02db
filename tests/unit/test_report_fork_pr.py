"""A fork's pull request: GitHub gives it a read-only GITHUB_TOKEN, so the comment is refused
(403). The report goes to the job summary, the refusal is a warning, the gates still decide."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cicd import report as report_module
from cicd.errors import SuiteError
from cicd.forge import publish_report
from cicd.gates import GateFailed, Result
from cicd.shell import Runner
from tests.unit.test_http_faults import Scripted, _serve
from tests.unit.test_http_forge import COMMENTS, _json, methods

forge = pytest.fixture(_serve)
FORBIDDEN = {"message": "Resource not accessible by integration"}


def pull_request(server: Scripted, tmp_path: Path, head: str) -> dict[str, str]:
    """A GitHub Actions pull_request run of owner/proj whose head is in ``head``."""
    event = tmp_path / "event.json"
    repo = {"head": {"repo": {"full_name": head}}, "base": {"repo": {"full_name": "owner/proj"}}}
    event.write_text(json.dumps({"pull_request": {"number": 7, **repo}}))
    (tmp_path / "summary.md").touch()
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": f"{server.url}/api",
        "GITHUB_REPOSITORY": "owner/proj",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_TOKEN": "ghs_readonly42",
    }


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "report.md"
    path.write_text("# Experiment Report (abc)\n")
    return path


def test_a_fork_pull_request_s_refused_comment_is_a_warning_and_the_summary_has_the_report(
    forge: Scripted, tmp_path: Path, report: Path
):
    forge.script[COMMENTS] = [_json([]), _json(FORBIDDEN, 403)]  # GET, then the POST
    out = io.StringIO()
    done = publish_report(Runner(out=out), report, pull_request(forge, tmp_path, "fork/proj"))
    assert methods(forge) == [("GET", COMMENTS), ("POST", COMMENTS)]
    assert "Experiment Report (abc)" in (tmp_path / "summary.md").read_text()
    assert "WARNING: the pull request comment was refused (HTTP 403)" in out.getvalue()
    assert "GitHub job summary" in done and "ghs_readonly42" not in out.getvalue()


def test_the_same_403_on_a_pull_request_of_the_repository_itself_still_fails(
    forge: Scripted, tmp_path: Path, report: Path
):
    forge.script[COMMENTS] = [_json([]), _json(FORBIDDEN, 403)]
    with pytest.raises(SuiteError, match="HTTP 403"):
        publish_report(
            Runner(out=io.StringIO()), report, pull_request(forge, tmp_path, "owner/proj")
        )


def test_a_fork_pull_request_s_failed_gate_still_fails_the_report(
    forge: Scripted, tmp_path: Path, report: Path, monkeypatch
):
    forge.script[COMMENTS] = [_json([]), _json(FORBIDDEN, 403)]
    failed = Result("val_acc", "min", 0.5, 0.9, "fail")
    monkeypatch.setattr(report_module, "build_report", lambda *a, **k: (report, [failed]))
    runner = Runner(out=io.StringIO())
    settings = SimpleNamespace(base_branch="main", root=tmp_path, network_timeout=10.0)
    environ = pull_request(forge, tmp_path, "fork/proj")
    run = SimpleNamespace(runner=runner, settings=settings, environ=environ, in_ci=True)
    with pytest.raises(GateFailed, match="val_acc"):
        report_module.report(run, post=True)  # type: ignore[arg-type]
    assert "Experiment Report (abc)" in (tmp_path / "summary.md").read_text()
