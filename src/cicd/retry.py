"""One retry policy and one retry loop, for commands, docker calls and HTTP requests.

In the manner of stamina (hynek/stamina): a :class:`RetryPolicy` says how many attempts and
how long to wait between them (exponential backoff, capped, with jitter); an attempt raises
:class:`Transient` when its failure is worth another attempt, and only then; :func:`call`
runs the attempts and tells one hook of each retry before its wait. The runner's hook
(:meth:`cicd.shell.Runner.retry`) is the only place a retry is printed. What is transient
stays the caller's decision: a command's output, an HTTP status, a broken connection.

Unlike stamina's hooks, which are global, the hook and the sleep are the run's (its runner
masks secrets, a test counts the waits), and a caller can turn a stop into its own one-line
error (:class:`GiveUp`): the attempts ran out, the service asks for a longer wait than the
policy allows, or the wait would end past the call's deadline.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long between them."""

    attempts: int = 4  # the first try included
    wait_initial: float = 1.0  # the first wait (seconds), doubled after each retry
    wait_max: float = 30.0  # the longest single wait, a service's Retry-After included

    def wait(self, retry: int) -> float:
        """Seconds before retry ``retry`` (1: the first): exponential and capped, half of it
        random (equal jitter), so that parallel jobs do not retry in step."""
        wait = min(self.wait_max, self.wait_initial * 2 ** (retry - 1))
        return wait / 2 + random.uniform(0, wait / 2)

    def note(self, on: str, within: float | None = None) -> str:
        """What the echo of a call adds so that it (and a dry run) says a retry would apply,
        ``on`` what; nothing where none does (a policy of one attempt)."""
        if self.attempts < 2:
            return ""
        return f"retried on {on}: up to {self.attempts} attempts" + (
            f" within {within:g} s" if within else ""
        )


ONCE = RetryPolicy(attempts=1)
# dvc pull/push, docker push and pull: waits of 1-2 s, then 2-4 s.
COMMANDS = RetryPolicy(attempts=3, wait_initial=2.0)
# Registry and forge requests: waits of 0.5-1 s, 1-2 s, 2-4 s (or what Retry-After asks).
REQUESTS = RetryPolicy(attempts=4, wait_initial=1.0, wait_max=30.0)


class Transient(Exception):
    """Raised by an attempt whose failure another attempt may not meet.

    ``error``: what is raised when no retry follows (unless the caller's ``give_up`` says
    otherwise); ``wait_at_least``: the service's own ``Retry-After``, in seconds.
    """

    def __init__(
        self, reason: str, error: BaseException | None = None, *, wait_at_least: float = 0.0
    ):
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.wait_at_least = wait_at_least


@dataclass(frozen=True)
class Retrying:
    """What the hook is told of a retry, before its wait (stamina's ``RetryDetails``)."""

    what: str  # the call: "GET https://…", "dvc push"
    retry: int  # 1 for the first retry
    retries: int  # at most, for this policy
    wait: float  # seconds, about to be waited
    reason: str  # the failure that asks for it

    def __str__(self) -> str:
        return (
            f"retry {self.retry}/{self.retries} of {self.what} in {self.wait:.1f} s ({self.reason})"
        )


@dataclass(frozen=True)
class GiveUp:
    """Why no retry follows a transient failure."""

    why: Literal["attempts", "wait", "deadline"]  # ran out; too long a wait asked; too late
    attempts: int  # made so far
    failure: Transient


def call(
    attempt: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    on_retry: Callable[[Retrying], None],
    give_up: Callable[[GiveUp], BaseException] | None = None,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``attempt()``, again after each :class:`Transient` failure while the policy allows.

    ``deadline`` (a ``clock()`` time): no wait that would end past it. When no retry follows,
    raises ``give_up(...)``, by default the failure's ``error``."""
    for number in itertools.count(1):
        try:
            return attempt()
        except Transient as failure:
            wait = max(failure.wait_at_least, policy.wait(number))
            why: Literal["attempts", "wait", "deadline"] | None = None
            if number >= policy.attempts:
                why = "attempts"
            elif failure.wait_at_least > policy.wait_max:
                why = "wait"
            elif deadline is not None and clock() + wait > deadline:
                why = "deadline"
            if why is not None:
                stop = GiveUp(why, number, failure)
                error = give_up(stop) if give_up else failure.error
                if error is None:
                    raise AssertionError(f"{what}: a Transient without an error") from failure
                raise error from None
            on_retry(Retrying(what, number, policy.attempts - 1, wait, failure.reason))
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
