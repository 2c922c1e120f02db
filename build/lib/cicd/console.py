"""What the steps say on a terminal: one line per step, a spinner while one works.

Quiet by default, the way nox, uv and dvc are: per step its name, result and time
(:func:`step_line`), plus warnings and errors; the commands, requests and tools' output only
with verbose (:mod:`cicd.shell`). The step lines go with the results, where the step's runner
prints: stdout, or stderr when stdout is the task's data (``invoke releases --json`` prints
only JSON there); stderr keeps the one-line error. Colour and the spinner only on a terminal:
rich decides (none in a CI log, none with NO_COLOR).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

OK, FAILED = "✓", "✗"
NAME_WIDTH = 16  # the longest step names (check-published, check-reproduced) line up
SHORT_SHA = 12  # a commit tag shown in a step line, as git shows a short commit


def step_line(name: str, seconds: float, result: str = "", ok: bool = True) -> str:
    """``✓ containerize     127.0.0.1:5050/image:0123456789ab (11.6 s)``."""
    middle = f"{name:<{NAME_WIDTH}} {result}" if result else name
    return f"{OK if ok else FAILED} {middle} ({seconds:.1f} s)"


def short_reference(reference: str) -> str:
    """``host/image:<40-hex sha>`` -> ``host/image:<sha12>``: a step line stays one line
    (the summary gives the full references)."""
    repository, _, tag = reference.rpartition(":")
    if repository and "/" not in tag and len(tag) > SHORT_SHA:
        return f"{repository}:{tag[:SHORT_SHA]}"
    return reference


def short_digest(digest: str) -> str:
    """``sha256:<64 hex>`` -> ``sha256:<12 hex>``."""
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:SHORT_SHA]}" if value else digest


def say(line: str, out: TextIO | None = None, ok: bool = True) -> None:
    """Print a line (a step line: green, or red, on a terminal; plain elsewhere)."""
    from rich.console import Console
    from rich.text import Text

    console = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
    style = ("green" if ok else "red") if line[:1] in (OK, FAILED) else ""
    console.print(Text(line, style=style))  # Text: a tool's "[...]" is not rich markup


@contextlib.contextmanager
def working(label: str, enabled: bool = True) -> Iterator[None]:
    """A spinner on stderr while a step works, when stderr is a terminal and the caller
    enables it (never in CI: its log is read later, and a live display re-wraps the lines
    printed meanwhile). Lines printed meanwhile appear above it."""
    if not (enabled and sys.stderr.isatty()):
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(f"{label} …"):
        yield
