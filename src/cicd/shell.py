"""The one place that runs things.

Every external action of the suite, a command line or a library call (python-on-whales,
an HTTP request to a registry), goes through a :class:`Runner`. The runner echoes what it
does as a command line, honours dry-run (``invoke --dry``: print, run nothing), masks
secrets in everything it prints, and turns failures into :class:`CommandError`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

from cicd.errors import CommandError, SuiteError, display

T = TypeVar("T")
MASK = "*****"
OUTPUT_TAIL_LINES = 40


@dataclass
class Runner:
    """Runs commands and calls, or only shows them when ``dry`` is set."""

    dry: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    secrets: set[str] = field(default_factory=set)

    def add_secret(self, value: str | None) -> None:
        """Never print ``value``: it is masked in echoes, output and error messages."""
        if value:
            self.secrets.add(value)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def echo(self, line: str) -> None:
        print(self.mask(line), file=self.out, flush=True)

    def show(self, command: Sequence[str], note: str = "") -> None:
        """Print a command the way it is (or would be) run."""
        prefix = "[dry-run] $ " if self.dry else "$ "
        self.echo(prefix + display(command) + (f"   # {note}" if note else ""))

    def run(
        self,
        command: Sequence[str],
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        quiet: bool = False,
        check: bool = True,
        hint: str = "",
        always: bool = False,
    ) -> str:
        """Run ``command``; stream its output (unless ``quiet``) and return it.

        ``stdin`` is how secrets are passed: never on the command line. ``always`` marks
        read-only queries (``git rev-parse``, ``docker version``) that run in dry-run too,
        because what the dry run prints depends on them.
        """
        if not quiet or (self.dry and not always):
            self.show(command)
        if self.dry and not always:
            return ""
        full_env = {**os.environ, **env} if env is not None else None
        try:
            process = subprocess.Popen(
                [str(part) for part in command],
                cwd=cwd,
                env=full_env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except FileNotFoundError as exc:
            raise SuiteError(
                f"`{command[0]}` is not installed or not on PATH: install it "
                f"(see README, Troubleshooting) or run `scripts/bootstrap`"
            ) from exc
        if stdin is not None:
            assert process.stdin is not None
            process.stdin.write(stdin)
            process.stdin.close()
        output = self._stream(process.stdout, echo=not quiet)
        code = process.wait()
        if check and code != 0:
            tail = "".join(output.splitlines(keepends=True)[-OUTPUT_TAIL_LINES:])
            masked = [self.mask(str(part)) for part in command]
            raise CommandError(masked, code, self.mask(tail), hint)
        return output

    def query(self, command: Sequence[str], *, cwd: Path | str | None = None) -> str | None:
        """Output of a read-only command, or None if it fails; runs in dry-run too, silently."""
        try:
            return self.run(command, cwd=cwd, quiet=True, always=True, check=True)
        except (CommandError, SuiteError):
            return None

    def call(
        self, command: Sequence[str], action: Callable[[], T], *, quiet: bool = False
    ) -> T | None:
        """Run a library call that is equivalent to ``command``; in dry-run only show it."""
        if not quiet or self.dry:
            self.show(command)
        if self.dry:
            return None
        return action()

    def _stream(self, stream: Iterable[str] | None, echo: bool) -> str:
        lines: list[str] = []
        for line in stream or ():
            lines.append(line)
            if echo:
                self.out.write(self.mask(line))
                self.out.flush()
        return "".join(lines)


def tool(name: str) -> str:
    """The command for a Python tool (dvc, bentoml) of the environment running the suite.

    Running ``.venv/bin/invoke`` without activating the venv must still use that venv's
    dvc and bentoml, not whatever else is on PATH.
    """

    sibling = Path(sys.executable).parent / name
    if not sibling.exists():
        return name
    found = shutil.which(name)
    return name if found and Path(found).resolve() == sibling.resolve() else str(sibling)
