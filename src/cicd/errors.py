"""Errors the user can act on.

Every failure a user can fix is a :class:`SuiteError` whose ``str()`` is one line that says
what went wrong and what to do. The task layer prints that line and exits non-zero; only
bugs produce tracebacks.
"""

from __future__ import annotations

from collections.abc import Sequence


class SuiteError(Exception):
    """A failure the user can fix; the message says how."""

    exit_code = 1


class CommandError(SuiteError):
    """A command exited non-zero. Carries the command, its exit code and its output tail."""

    def __init__(self, command: Sequence[str], exit_code: int, output: str = "", hint: str = ""):
        self.command = list(command)
        self.exit_code = exit_code
        self.output = output
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        last_line = next((ln for ln in reversed(self.output.splitlines()) if ln.strip()), "")
        text = f"`{display(self.command)}` failed with exit code {self.exit_code}"
        if last_line:
            text += f": {last_line.strip()}"
        if self.hint:
            text += f". {self.hint}"
        return text


class NotBuiltHere(SuiteError):
    """attest was asked to sign an image this workspace did not build, smoke-test and push
    (:func:`cicd.attestations.pushed_here`)."""


class NotVerified(SuiteError):
    """promote or rollback was asked to move a tag to an image that fails verify's checks
    (:func:`cicd.releases.verified`): nothing moved."""


def display(command: Sequence[str]) -> str:
    """The command as a user would type it (quoted where needed)."""
    import shlex

    return shlex.join(str(part) for part in command)
