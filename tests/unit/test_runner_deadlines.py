"""The runner's deadline, retries of network hiccups, and clean interruption (real processes)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cicd import retry, shell
from cicd.errors import CommandError, SuiteError
from cicd.shell import Runner
from tests.support.waiting import eventually


def alive(pid: int) -> bool:
    """Running (a killed process whose parent is gone may linger as a zombie: not alive)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_command_past_its_deadline_is_stopped_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    # A parent that starts a child, both sleeping: the whole group must go.
    # Not timed: the sleeps outlast pytest's own timeout, so a run that waited for them
    # instead of stopping them fails; their exit is waited for, not slept before.
    script = f"sleep 3600 >/dev/null 2>&1 & echo $! > {pids}; echo $$ >> {pids}; wait"
    runner = Runner(out=io.StringIO(), command_timeout=1)
    with pytest.raises(SuiteError, match=r"did not finish within 1 s and was stopped"):
        runner.run(["sh", "-c", script])
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 2
    eventually(lambda: not any(alive(pid) for pid in started), "the group stopped")


def test_a_network_hiccup_is_retried_and_then_succeeds(tmp_path):
    count = tmp_path / "count"
    script = textwrap.dedent(f"""
        n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}
        if [ "$n" -lt 2 ]; then echo 'ERROR: connection reset by peer' >&2; exit 1; fi
        echo pushed
    """)
    out, waits = io.StringIO(), []
    runner = Runner(out=out, sleep=waits.append)
    assert "pushed" in runner.run(["sh", "-c", script], retry_transient=True)
    assert count.read_text().strip() == "3"
    shown = out.getvalue().splitlines()
    assert [line.split(" of ")[0] for line in shown] == ["retry 1/2", "retry 2/2"]
    assert all(line.endswith("(network error: connection reset)") for line in shown)
    # The policy's waits (2 s, then 4 s, half of each random), asked for, not waited.
    assert len(waits) == 2 and 1 <= waits[0] <= 2 and 2 <= waits[1] <= 4


def test_retries_end_with_the_last_error(tmp_path):
    out, waits = io.StringIO(), []
    with pytest.raises(CommandError, match="503 Service Unavailable"):
        Runner(out=out, sleep=waits.append).run(
            ["sh", "-c", "echo 'HTTP 503 Service Unavailable' >&2; exit 1"], retry_transient=True
        )
    retries = retry.COMMANDS.attempts - 1
    assert out.getvalue().count("retry ") == retries == len(waits) == 2


def test_other_failures_are_not_retried(tmp_path):
    count = tmp_path / "count"
    out, waits = io.StringIO(), []
    with pytest.raises(CommandError):
        Runner(out=out, sleep=waits.append).run(
            ["sh", "-c", f"echo x >> {count}; echo 'no such file' >&2; exit 1"],
            retry_transient=True,
        )
    assert count.read_text().count("x") == 1 and "retry" not in out.getvalue() and waits == []


def test_without_retry_transient_a_network_error_is_not_retried(tmp_path):
    count = tmp_path / "count"
    out, waits = io.StringIO(), []
    with pytest.raises(CommandError, match="connection reset"):
        Runner(out=out, sleep=waits.append).run(
            ["sh", "-c", f"echo x >> {count}; echo 'connection reset' >&2; exit 1"]
        )
    assert count.read_text().count("x") == 1 and "retry" not in out.getvalue() and waits == []


def test_a_dry_run_says_a_command_would_be_retried():
    out = io.StringIO()
    Runner(dry=True, out=out).run(["dvc", "push"], retry_transient=True)
    note = "retried on network errors: up to 3 attempts"
    assert out.getvalue() == f"[dry-run] $ dvc push   # {note}\n"
    out = io.StringIO()
    Runner(dry=True, out=out).run(["dvc", "pull"])
    assert out.getvalue() == "[dry-run] $ dvc pull\n"  # no retry, no note


def test_sigterm_stops_the_running_command_and_its_children(tmp_path):
    # What tasks.step does with a cancelled CI job: SIGTERM becomes an interruption, the
    # runner stops the command's process group on the way out.
    pids = tmp_path / "pids"
    program = textwrap.dedent(f"""
        import signal, sys
        sys.path.insert(0, {str(shell.Path(shell.__file__).parents[1])!r})
        from cicd.shell import Runner
        def interrupt(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, interrupt)
        try:
            command = ["sh", "-c", "sleep 3600 & echo $! > {pids}; echo started; wait"]
            Runner(verbose=True).run(command)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """)
    process = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    assert "sleep 3600" in process.stdout.readline()  # the echoed command
    assert process.stdout.readline().strip() == "started"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 130
    assert "interrupted" in process.stdout.read()
    child = int(pids.read_text())
    eventually(lambda: not alive(child), "the command's child stopped")


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal, for the test's length. A process
    started in the background by a shell without job control (`pytest ... &`, some CI
    runners) inherits SIGINT ignored, and Python keeps it so: the signal would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interruption_while_the_command_starts_still_stops_it(monkeypatch, ctrl_c):
    # The window the integration test once hit: the signal lands after the child exists but
    # before Popen has returned it. Here Popen interrupts itself right after starting.
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen_then_interrupted(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        signal.raise_signal(signal.SIGINT)  # Ctrl-C, as if typed now
        return started[0]

    monkeypatch.setattr(shell.subprocess, "Popen", popen_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        Runner(out=io.StringIO()).run(["sleep", "60"])
    assert started[0].poll() is not None  # stopped, not left running


def test_interruptions_are_held_then_delivered(ctrl_c):
    with pytest.raises(KeyboardInterrupt), shell.interruptions_deferred():
        signal.raise_signal(signal.SIGINT)
        held_until_here = True
    assert held_until_here


# A run that waited for the descendant would hang: pytest-timeout fails it (an event bound, not
# a threshold on how fast it went).
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stdio", ["> /dev/null 2>&1", ""], ids=["daemonized", "holding-stdout"])
def test_a_deadline_stops_a_descendant_that_left_the_process_group(tmp_path, stdio):
    """setsid: a new session and group, out of reach of killpg; still the command's. Whether
    it lets go of the output pipe (a daemon) or holds it, it is stopped at the deadline."""
    pid_file = tmp_path / "pid"
    escape = (
        "import os, time, pathlib; os.setsid(); "
        f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(3600)"
    )
    script = f"{sys.executable} -c {escape!r} {stdio} & wait"
    runner = Runner(out=io.StringIO(), command_timeout=1)
    try:
        # That run() returns at all is the proof it did not wait for the hour-long sleep
        # (pytest-timeout ends a hung test); no wall-clock threshold.
        with pytest.raises(SuiteError, match=r"did not finish within 1 s"):
            runner.run(["sh", "-c", script])
        pid = int(pid_file.read_text())
        eventually(
            lambda: not alive(pid), "a descendant in its own session stopped at the deadline"
        )
    finally:
        if pid_file.exists() and alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
