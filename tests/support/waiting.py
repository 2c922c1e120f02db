"""Waiting for an event, not for a time: ``eventually`` returns as soon as the condition holds.

A fixed sleep before "nothing survived" is a race (under load the kill lands later) and a
wall-clock threshold ("done in < 5 s") fails on a busy machine. Here the timeout is only a
generous bound on a wait that normally ends at the event itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

GENEROUS = 60.0


def eventually(condition: Callable[[], object], what: str, timeout: float = GENEROUS) -> None:
    """Wait until ``condition()`` is true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.05)
