"""The one retry policy and loop (cicd.retry), as commands, docker calls and requests use it.

Events are counted (attempts, waits asked for, retries told to the hook), never the clock:
the sleep and the clock are fakes.
"""

from __future__ import annotations

import io

import pytest

from cicd import docker, retry
from cicd.errors import CommandError
from cicd.retry import GiveUp, Retrying, RetryPolicy, Transient
from cicd.shell import Runner


class Script:
    """An attempt that fails as told (a Transient, or another error), then returns "done"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def hiccup(wait_at_least: float = 0.0) -> Transient:
    return Transient("reset", ValueError("the last error"), wait_at_least=wait_at_least)


def loop(attempt, policy=retry.REQUESTS, **options):
    told: list[Retrying] = []
    waits: list[float] = []
    options.setdefault("sleep", waits.append)
    result = retry.call(attempt, policy=policy, what="GET x", on_retry=told.append, **options)
    return result, told, waits


def test_transient_failures_are_retried_and_each_retry_told_before_its_wait():
    attempt = Script(hiccup(), hiccup())
    result, told, waits = loop(attempt)
    assert result == "done" and attempt.calls == 3
    assert [(t.retry, t.retries, t.reason) for t in told] == [(1, 3, "reset"), (2, 3, "reset")]
    assert [t.wait for t in told] == waits
    assert str(told[0]) == f"retry 1/3 of GET x in {waits[0]:.1f} s (reset)"


def test_the_attempts_run_out_with_the_last_error():
    attempt = Script(*(hiccup() for _ in range(10)))
    told: list[Retrying] = []
    with pytest.raises(ValueError, match="the last error"):
        retry.call(attempt, policy=retry.COMMANDS, what="x", on_retry=told.append, sleep=id)
    assert attempt.calls == 3 and len(told) == 2


def test_other_errors_are_not_retried():
    attempt = Script(KeyError("no"), hiccup())
    with pytest.raises(KeyError):
        loop(attempt)
    assert attempt.calls == 1


def test_one_attempt_is_one_attempt():
    attempt = Script(hiccup())
    with pytest.raises(ValueError):
        loop(attempt, policy=retry.ONCE)
    assert attempt.calls == 1


def test_the_wait_doubles_with_half_of_it_random_and_is_capped():
    policy = RetryPolicy(attempts=10, wait_initial=1.0, wait_max=5.0)
    for retry_number, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        waits = {policy.wait(retry_number) for _ in range(50)}
        assert all(full / 2 <= wait <= full for wait in waits)
        assert len(waits) > 1  # jitter: parallel jobs do not retry in step


def test_a_service_asking_for_a_longer_wait_is_honoured_up_to_the_longest():
    result, _, waits = loop(Script(hiccup(wait_at_least=7.0)))
    assert result == "done" and waits == [7.0]
    stops: list[GiveUp] = []

    def give_up(stop: GiveUp) -> Exception:
        stops.append(stop)
        return RuntimeError("rate-limited")

    attempt = Script(hiccup(wait_at_least=31.0))
    with pytest.raises(RuntimeError, match="rate-limited"):
        loop(attempt, give_up=give_up)
    assert attempt.calls == 1 and [(s.why, s.attempts) for s in stops] == [("wait", 1)]


def test_no_wait_ends_past_the_deadline():
    now = [100.0]
    stops: list[GiveUp] = []

    def give_up(stop: GiveUp) -> Exception:
        stops.append(stop)
        return TimeoutError("late")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    attempt = Script(*(hiccup(wait_at_least=4.0) for _ in range(3)))
    with pytest.raises(TimeoutError):
        loop(attempt, deadline=109.0, clock=lambda: now[0], sleep=sleep, give_up=give_up)
    # 100 -> wait 4 -> 104 -> wait 4 -> 108: a third wait would end at 112.
    assert attempt.calls == 3 and now[0] == 108.0
    assert [(s.why, s.attempts) for s in stops] == [("deadline", 3)]


def test_the_note_is_said_only_where_a_retry_applies():
    assert retry.COMMANDS.note("network errors") == "retried on network errors: up to 3 attempts"
    assert retry.REQUESTS.note("5xx", within=60) == "retried on 5xx: up to 4 attempts within 60 s"
    assert retry.ONCE.note("anything", within=60) == ""  # never "up to 1 attempts"


# -- docker calls: the same loop, the same printed line ---------------------------------------


def docker_failure(message: str):
    from python_on_whales.exceptions import DockerException

    return DockerException(["docker", "push", "x"], 1, b"", message.encode())


def test_a_docker_call_is_retried_on_a_network_hiccup_by_the_same_loop():
    out, waits = io.StringIO(), []
    runner = Runner(out=out, verbose=True, sleep=waits.append)
    action = Script(docker_failure("net/http: TLS handshake timeout"))
    command = ["docker", "push", "x"]
    assert docker.docker_call(runner, command, action, retry_transient=True) == "done"
    assert action.calls == 2 and len(waits) == 1 and 1 <= waits[0] <= 2
    lines = out.getvalue().splitlines()
    assert lines[0] == "$ docker push x"  # shown once, not once per attempt
    assert lines[1].startswith("retry 1/2 of docker push x in ")
    assert lines[1].endswith(" s (network error: TLS handshake)") and len(lines) == 2


def test_a_docker_call_without_retry_or_with_another_error_is_tried_once():
    for failure, retried in [("connection reset", False), ("denied: no such user", True)]:
        out, waits = io.StringIO(), []
        action = Script(docker_failure(failure))
        with pytest.raises(CommandError):
            docker.docker_call(
                Runner(out=out, sleep=waits.append), ["docker", "push", "x"], action,
                retry_transient=retried,
            )  # fmt: skip
        assert action.calls == 1 and waits == [] and "retry" not in out.getvalue()


def test_a_dry_docker_call_says_it_would_be_retried():
    out = io.StringIO()
    runner = Runner(dry=True, out=out)
    docker.docker_call(runner, ["docker", "push", "x"], Script(), retry_transient=True)
    docker.docker_call(runner, ["docker", "image", "rm", "x"], Script())
    assert out.getvalue().splitlines() == [
        "[dry-run] $ docker push x   # retried on network errors: up to 3 attempts",
        "[dry-run] $ docker image rm x",
    ]
