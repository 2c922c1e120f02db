import io
import sys

import pytest

from cicd.errors import CommandError, SuiteError
from cicd.shell import Runner
from tests.support.waiting import eventually


def runner(dry=False):
    return Runner(dry=dry, out=io.StringIO(), verbose=True)  # shows what it runs


def test_run_echoes_streams_and_returns_output():
    r = runner()
    out = r.run([sys.executable, "-c", "print('hello')"])
    assert out == "hello\n"
    assert "$ " in r.out.getvalue() and "hello" in r.out.getvalue()


def test_dry_run_shows_and_runs_nothing(tmp_path):
    r = runner(dry=True)
    marker = tmp_path / "made"
    r.run(["touch", str(marker)])
    r.call(["docker", "push", "x"], lambda: marker.write_text("no"))
    assert not marker.exists()
    assert f"[dry-run] $ touch {marker}" in r.out.getvalue()
    assert "[dry-run] $ docker push x" in r.out.getvalue()


def test_read_only_queries_run_in_dry_run():
    assert runner(dry=True).query([sys.executable, "-c", "print(42)"]) == "42\n"
    assert runner().query([sys.executable, "-c", "raise SystemExit(3)"]) is None


def test_failure_raises_command_error_with_command_code_and_output():
    with pytest.raises(CommandError) as caught:
        runner().run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], hint="do X")
    error = caught.value
    assert error.exit_code == 3 and "boom" in error.output
    assert "failed with exit code 3: boom. do X" in str(error)
    assert "\n" not in str(error)


def test_secrets_are_masked_in_echo_output_and_errors():
    r = runner()
    r.add_secret("sentinel-pw")
    with pytest.raises(CommandError) as caught:
        r.run([sys.executable, "-c", "print('pw is sentinel-pw'); raise SystemExit(1)"])
    assert "sentinel-pw" not in r.out.getvalue()
    assert "sentinel-pw" not in str(caught.value)


def test_secrets_go_through_stdin():
    out = runner().run(
        [sys.executable, "-c", "import sys; print(len(sys.stdin.read()))"], stdin="abc"
    )
    assert out.strip() == "3"


def test_missing_program_is_a_clear_error():
    with pytest.raises(SuiteError, match="not installed or not on PATH"):
        runner().run(["no-such-program-xyz"])


def test_spawn_starts_a_server_in_its_own_session_and_logs_its_output(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTAINER_REGISTRY_PASSWORD", "sentinel-pw")
    log, r = tmp_path / "server.log", runner()
    program = "import os, sys; print(os.getsid(0) == os.getpid(), os.environ.get(sys.argv[1]))"
    pid = r.spawn([sys.executable, "-c", program, "CONTAINER_REGISTRY_PASSWORD"], log=log)
    # Wait for what it wrote, not for the process: the subprocess module may reap it first
    # (another Popen's clean-up), and waitpid then raises ChildProcessError.
    eventually(lambda: log.read_text().endswith("\n"), f"process {pid} wrote its line")
    assert log.read_text() == "True None\n"  # own session, no secret in its environment
    assert r.out.getvalue().startswith(f"$ {sys.executable} -c ")


def test_spawn_in_dry_run_shows_and_starts_nothing(tmp_path):
    log, marker, r = tmp_path / "server.log", tmp_path / "made", runner(dry=True)
    assert r.spawn(["touch", str(marker)], log=log) == 0
    assert not marker.exists() and not log.exists()
    assert f"[dry-run] $ touch {marker}" in r.out.getvalue()


def test_spawn_of_a_missing_program_is_a_clear_error(tmp_path):
    with pytest.raises(SuiteError, match="not installed or not on PATH"):
        runner().spawn(["no-such-program-xyz"], log=tmp_path / "server.log")
