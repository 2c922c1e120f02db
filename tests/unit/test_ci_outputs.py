"""Publish results for CI: GitHub step outputs and summary, GitLab dotenv report."""

import dataclasses
import io
from pathlib import Path

import pytest

from cicd import ci_outputs
from cicd.ci_outputs import Result
from cicd.shell import Runner

DIGEST = "sha256:" + "ab" * 32
REPOSITORY = "127.0.0.1:5000/ns/img"
TAGS = ("127.0.0.1:5000/ns/img:0123abc", "127.0.0.1:5000/ns/img:latest")
BARE_TAGS = ("0123abc", "latest")
RESULT = Result(
    REPOSITORY,
    BARE_TAGS,
    DIGEST,
    "model:v1",
    skipped=False,
    size=413_560_000,
    seconds=(("build", 20.04),),
)


def test_outputs_name_the_digest_tags_and_pull_reference():
    assert ci_outputs.outputs(RESULT) == {
        "digest": DIGEST,
        "tags": " ".join(TAGS),
        "image": f"127.0.0.1:5000/ns/img@{DIGEST}",
        "skipped": "false",
    }


def test_a_value_with_a_newline_is_refused():
    # One `name=value` line per output: a newline would let a value forge another output.
    with pytest.raises(ValueError, match="spans lines"):
        ci_outputs.outputs(
            Result(REPOSITORY, BARE_TAGS, DIGEST + "\nskipped=true", "m", skipped=False)
        )


def test_github_output_summary_and_no_dotenv(tmp_path: Path):
    out, summary = tmp_path / "out", tmp_path / "summary"
    out.write_text("earlier=1\n")
    environ = {"GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)}
    ci_outputs.write(Runner(out=io.StringIO()), RESULT, environ, tmp_path)
    lines = out.read_text().splitlines()
    assert lines[0] == "earlier=1"  # appended, as GitHub expects
    assert f"digest={DIGEST}" in lines and "skipped=false" in lines
    text = summary.read_text()
    assert f"### Published: `{TAGS[0]}`" in text
    assert "| image size | 413.6 MB |" in text and "| model | `model:v1` |" in text
    assert "| build | 20.0 |" in text
    assert not (tmp_path / ci_outputs.DOTENV_FILE).exists()


def test_gitlab_dotenv_report(tmp_path: Path):
    skipped = Result(REPOSITORY, BARE_TAGS, DIGEST, "model:v1", skipped=True)
    ci_outputs.write(Runner(out=io.StringIO()), skipped, {"GITLAB_CI": "true"}, tmp_path)
    assert (tmp_path / "publish.env").read_text().splitlines() == [
        f"PUBLISH_DIGEST={DIGEST}",
        f"PUBLISH_TAGS={' '.join(TAGS)}",
        f"PUBLISH_IMAGE=127.0.0.1:5000/ns/img@{DIGEST}",
        "PUBLISH_SKIPPED=true",
    ]
    assert "| image size | not built in this run |" in ci_outputs.summary(skipped)
    assert "### Already published" in ci_outputs.summary(skipped)


def test_outside_ci_and_in_a_dry_run_nothing_is_written(tmp_path: Path):
    ci_outputs.write(Runner(out=io.StringIO()), RESULT, {}, tmp_path)
    assert list(tmp_path.iterdir()) == []
    shown = io.StringIO()
    environ = {"GITHUB_OUTPUT": str(tmp_path / "o"), "GITLAB_CI": "true"}
    ci_outputs.write(Runner(dry=True, out=shown), RESULT, environ, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert "[dry-run] $ sh -c 'cat >> $GITHUB_OUTPUT'" in shown.getvalue()


def _publish_to(environ, tmp_path):
    """write_publish of an already published image, with this repository's settings."""
    from types import SimpleNamespace

    from cicd.settings import load

    settings = load(Path(__file__).resolve().parents[2], environ)
    out = io.StringIO()
    run = SimpleNamespace(
        runner=Runner(out=out),
        settings=dataclasses.replace(settings, root=tmp_path),
        environ=environ,
    )
    goal = SimpleNamespace(
        repository=settings.repository, tags=BARE_TAGS, model=SimpleNamespace(tag="model:v1")
    )
    result = ci_outputs.write_publish(run, goal, DIGEST, [("push", 1.0)], built=False)
    return result, out.getvalue()


def test_a_ci_run_without_registry_secrets_says_the_image_is_gone_with_the_runner(tmp_path):
    summary_file = tmp_path / "summary.md"
    environ = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary_file)}
    _, printed = _publish_to(environ, tmp_path)
    warning = (
        "WARNING: published to the embedded registry of this runner (127.0.0.1:5050): it is "
        "gone when the job ends; set CONTAINER_REGISTRY_HOST, CONTAINER_REGISTRY_USERNAME, "
        "CONTAINER_REGISTRY_PASSWORD (CI secrets) to publish to a registry (docs/settings.md)"
    )
    assert warning in printed.splitlines()
    markdown = summary_file.read_text()
    assert "> [!WARNING]\n> published to the embedded registry of this runner" in markdown
    assert "| registry | embedded in this CI runner: gone when the job ends" in markdown


def test_a_local_run_on_the_embedded_registry_says_how_to_stop_it(tmp_path):
    result, printed = _publish_to({}, tmp_path)
    assert "WARNING" not in printed
    text = ci_outputs.terminal_summary(result, load_smoke())
    assert (
        "  registry    embedded, still running on 127.0.0.1:5050: stop it with "
        "`.nox/publish/bin/invoke registry --stop`"
    ) in text.splitlines()


def test_a_configured_registry_gets_neither_note(tmp_path):
    environ = {"GITHUB_ACTIONS": "true", "CONTAINER_REGISTRY_HOST": "ghcr.io/o"}
    result, printed = _publish_to(environ, tmp_path)
    assert "WARNING" not in printed
    assert "registry" not in ci_outputs.terminal_summary(result, load_smoke()).split("Next:")[0]
    assert "embedded" not in ci_outputs.summary(result)


def load_smoke():
    from cicd.settings import load

    return load(Path(__file__).resolve().parents[2], {}).smoke
