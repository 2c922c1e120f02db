"""Quiet by default, everything with verbose: the runner's levels, the step line, the summary."""

import contextlib
import io
import re
import sys
from pathlib import Path

import pytest

from cicd import ci_outputs, console
from cicd.errors import CommandError
from cicd.http import Http
from cicd.registry import Credentials, RegistryClient
from cicd.retry import RetryPolicy
from cicd.settings import Smoke, SmokeRequest
from cicd.shell import Runner

SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
REPOSITORY = "127.0.0.1:5050/celestial-bodies-classifier"
ROOT = Path(__file__).resolve().parents[2]


def test_a_quiet_runner_shows_results_not_commands_nor_their_output():
    out = io.StringIO()
    runner = Runner(out=out)
    assert runner.run([sys.executable, "-c", "print('tool talk')"]) == "tool talk\n"
    runner.detail("how it went about it")
    runner.echo("the result")
    assert out.getvalue() == "the result\n"


def test_a_quiet_runner_keeps_the_output_for_the_failure():
    runner = Runner(out=io.StringIO())
    with pytest.raises(CommandError) as error:
        runner.run([sys.executable, "-c", "print('why it failed'); raise SystemExit(3)"])
    assert "why it failed" in error.value.output and runner.out.getvalue() == ""


def test_verbose_shows_the_command_and_its_output_but_not_the_dropped_advice():
    out = io.StringIO()
    runner = Runner(out=out, verbose=True)
    script = "print('work'); print('Use `dvc push` to send your updates to remote storage.')"
    output = runner.run([sys.executable, "-c", script], drop=re.compile("Use `dvc push`"))
    command, *shown = out.getvalue().splitlines()
    assert command.startswith("$ ") and shown == ["work"]
    assert "dvc push" in output  # kept for a failure's message, not shown


def test_a_dry_run_shows_the_commands_even_when_quiet():
    out = io.StringIO()
    Runner(dry=True, out=out).run(["dvc", "pull"])
    assert out.getvalue().startswith("[dry-run] $ dvc pull")


def test_a_registry_request_is_shown_as_a_curl_line_without_its_password():
    out = io.StringIO()
    runner = Runner(dry=True, out=out)
    client = RegistryClient("127.0.0.1:5050", Credentials("ci-bot", "s3cret-pass"), runner=runner)
    client.manifest("org/app", "latest")
    line = out.getvalue().strip()
    assert line.startswith("[dry-run] $ curl --fail --user ci-bot --request GET http://127.0.0.1")
    assert "s3cret" not in line and "up to 4 attempts" in line


def test_the_retry_note_says_only_what_is_true():
    http = Http(Runner(), "registry x", timeout=60)
    note = "up to 4 attempts within 60 s"
    assert http.note("GET") == f"retried on 429, 5xx, resets and timeouts: {note}"
    # A POST that may have taken effect is not retried: only on answers that say it was not.
    assert http.note("POST") == f"retried on 429 and 503: {note}"
    assert Http(Runner(), "x", policy=RetryPolicy(attempts=1)).note("GET") == ""


def test_the_step_line_has_the_name_the_result_and_the_seconds():
    reference = console.short_reference(f"{REPOSITORY}:{SHA}")
    assert reference == f"{REPOSITORY}:{SHA[:12]}"
    line = console.step_line("containerize", 11.64, reference)
    assert line == f"✓ containerize     {REPOSITORY}:{SHA[:12]} (11.6 s)"
    assert console.step_line("smoke", 3.0, ok=False) == "✗ smoke (3.0 s)"
    assert console.short_digest(DIGEST) == "sha256:" + "ab" * 6


def test_the_terminal_summary_says_what_the_job_summary_says_and_what_to_run_next():
    result = ci_outputs.Result(
        repository=REPOSITORY,
        tags=(SHA, "latest"),
        digest=DIGEST,
        model_tag="celestial:abc",
        skipped=False,
        size=429_100_000,
        seconds=(("containerize", 11.6), ("push", 2.0)),
        attested="SBOM and provenance, UNSIGNED",
    )
    sample = SmokeRequest("file", field="image", path=Path("data/raw/Earth/Earth_1.jpg"))
    text = ci_outputs.terminal_summary(result, Smoke(sample))
    lines = text.splitlines()
    assert lines[0] == f"Published {REPOSITORY}:{SHA}"
    assert f"  digest      {DIGEST}" in lines
    assert f"  tags        {REPOSITORY}:{SHA}, {REPOSITORY}:latest" in lines
    assert "  image size  429.1 MB" in lines
    assert "  attested    SBOM and provenance, UNSIGNED" in lines
    assert "  steps       containerize 11.6 s, push 2.0 s" in lines
    assert lines[-2] == f"  docker run --rm -p 127.0.0.1:3000:3000 {REPOSITORY}:{SHA}"
    assert lines[-1] == "  curl -F image=@data/raw/Earth/Earth_1.jpg http://127.0.0.1:3000/predict"
    # One source: the job summary has the same rows.
    markdown = ci_outputs.summary(result)
    assert f"| digest | `{DIGEST}` |" in markdown and "| attested | SBOM and provenance" in markdown


def test_the_next_request_of_a_json_service_is_its_json_body():
    smoke = Smoke(SmokeRequest("json", body={"features": [5.1, 3.5]}), path="/classify")
    assert ci_outputs.curl_line(smoke, "http://127.0.0.1:3000") == (
        "curl -H 'Content-Type: application/json' -d '{\"features\":[5.1,3.5]}' "
        "http://127.0.0.1:3000/classify"
    )


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["nox", "-s", "publish", "-v"], True),
        (["nox", "--verbose", "-s", "train", "publish"], True),
        (["nox", "-s", "publish"], False),
        (["nox", "-s", "promote", "--", "--to", "production", "-v"], False),  # the step's
    ],
)
def test_nox_verbose_makes_the_steps_verbose(argv, verbose):
    import noxfile

    assert noxfile.verbose(argv) is verbose


def test_a_failed_step_shows_the_commands_last_lines_when_quiet(tmp_path):
    from invoke import Config, Context

    from cicd import steps
    from cicd.context import Run
    from cicd.settings import load

    out = io.StringIO()
    run = Run(Runner(out=out), load(ROOT, {}), {})
    context = Context(Config(overrides={"suite": {}}))

    def body():
        steps.RUNS.append(run)
        run.runner.run([sys.executable, "-c", "print('the tool says why'); raise SystemExit(2)"])

    done: list[tuple[str, float]] = []
    with pytest.raises(CommandError):
        steps.run_step(context, "repro", body, done)
    shown = out.getvalue().splitlines()
    assert shown[0].startswith("$ ") and shown[1] == "the tool says why", shown
    assert shown[-1].startswith("✗ repro (") and done == []


@pytest.mark.parametrize("ci", [True, False], ids=["in CI", "on a laptop"])
def test_the_spinner_runs_on_a_terminal_but_never_in_ci(monkeypatch, ci):
    """act's host runner gives steps a pseudo-terminal: a live spinner there re-wrapped every
    line printed meanwhile at 80 columns. CI's variable turns it off; a laptop keeps it."""
    from invoke import Config, Context

    from cicd import steps

    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI"):
        monkeypatch.delenv(name, raising=False)
    if ci:
        monkeypatch.setenv("CI", "true")
    asked: list[bool] = []

    @contextlib.contextmanager
    def working(label, enabled=True):
        asked.append(enabled)
        yield

    monkeypatch.setattr(steps.console, "working", working)
    context = Context(Config(overrides={"suite": {}}))
    steps.run_step(context, "check-gates", lambda: "all pass", [])
    assert asked == [not ci]
